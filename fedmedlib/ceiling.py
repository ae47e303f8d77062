"""The non-private ceiling: centralized training with augmentation, a schedule and regularisation, as a recipe.

`CeilingRecipe` holds every knob that decides how high a model gets on pooled BloodMNIST without privacy;
`train_ceiling` runs one, scores validation and test after every epoch and reports test at the best-validation
epoch (test never chooses). With `checkpoint`, an interrupted run resumes after its last finished epoch.

References:
    Page, "How to train your ResNet" (2018) — ResNet-9, SGD with Nesterov momentum, one-cycle, label smoothing.
    Smith & Topin, "Super-Convergence", arXiv 1708.07120 (2019) — the one-cycle learning-rate schedule.
    Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 — AdamW.
    Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016 — label smoothing.
    Yang et al., "MedMNIST v2", Scientific Data 2023 — BloodMNIST, selection on the official validation split.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from .augment import augment
from .models import MODELS, build_model, count_parameters
from .train import PRECISIONS, _progress_enabled, autocast, batches, evaluate, load_split_tensors, resolve_device

OPTIMIZERS = ("sgd", "adam")  # sgd: Nesterov momentum, coupled L2; adam: AdamW, decoupled decay
SCHEDULES = ("constant", "cosine", "onecycle")
MAX_SHIFT = 7  # a shift beyond a quarter of the 28-px frame would push the cell out of it


@dataclass(frozen=True)
class CeilingRecipe:
    """Everything that decides a non-private centralized run; `name` only labels it in tables."""

    name: str = "start"
    model: str = "resnet9"
    width: int = 16
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1  # the peak rate for 'onecycle', the initial one for 'cosine'
    momentum: float = 0.9  # sgd only
    schedule: str = "onecycle"
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    augment: bool = True  # flips, quarter turns, shifts of ≤ `shift` px (fedmedlib.augment)
    shift: int = 2
    precision: str = "fp32"  # 'bf16' changes results, so it is part of the recipe (and of its cache key)

    def __post_init__(self):
        errors = []
        if self.model not in MODELS:
            errors.append(f"model {self.model!r} is not one of {MODELS}")
        if not isinstance(self.width, int) or self.width < 8 or self.width % 8:
            errors.append(f"width must be a positive multiple of 8 (64 = the paper's), got {self.width!r}")
        if self.optimizer not in OPTIMIZERS or self.schedule not in SCHEDULES:
            errors.append(f"optimizer must be one of {OPTIMIZERS} and schedule one of {SCHEDULES}, "
                          f"got {self.optimizer!r}, {self.schedule!r}")
        if self.precision not in PRECISIONS:
            errors.append(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not isinstance(self.augment, bool):
            errors.append(f"augment must be True or False, got {self.augment!r}")
        if self.epochs < 1 or self.batch_size < 2:
            errors.append(f"need epochs >= 1 and batch_size >= 2 (BatchNorm needs two images), got "
                          f"epochs={self.epochs}, batch_size={self.batch_size}")
        if not (self.lr > 0 and 0 <= self.momentum < 1 and self.weight_decay >= 0 and 0 <= self.label_smoothing < 1):
            errors.append(f"need lr > 0, momentum in [0, 1), weight_decay >= 0, label_smoothing in [0, 1); got "
                          f"lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay}, "
                          f"label_smoothing={self.label_smoothing}")
        if not (isinstance(self.shift, int) and 0 <= self.shift <= MAX_SHIFT):
            errors.append(f"shift must be an integer in [0, {MAX_SHIFT}] pixels, got {self.shift!r}")
        if errors:
            raise ValueError(f"invalid CeilingRecipe {self.name!r}: " + "; ".join(errors))

    def replace(self, **changes) -> "CeilingRecipe":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def make_optimizer(recipe: CeilingRecipe, params) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum and L2 `weight_decay`, or AdamW with decoupled `weight_decay`. Decay applies to
    every parameter, norms and biases included: fewer special cases, and the search tunes its size anyway."""
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.momentum > 0,
                               weight_decay=recipe.weight_decay)
    return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def make_scheduler(recipe: CeilingRecipe, optimizer, total_steps: int):
    """The per-step learning-rate schedule over `total_steps` (None = constant)."""
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if recipe.schedule == "onecycle":
        # Momentum is not cycled: `momentum` stays the one value the recipe states.
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=total_steps,
                                                   pct_start=0.25, cycle_momentum=False)
    return None


def train_one_epoch(net, optimizer, scheduler, x, y, recipe: CeilingRecipe, generator) -> float:
    """One shuffled pass, a fresh augmented copy of every batch; returns the mean (smoothed) training loss."""
    net.train()
    total, seen = 0.0, 0
    for idx in batches(len(x), recipe.batch_size, generator):
        if len(idx) < 2:  # a last batch of one image: BatchNorm cannot normalise it, and it is one image
            continue
        idx = idx.to(x.device)
        xb = augment(x[idx], 1, generator=generator, shift=recipe.shift) if recipe.augment else x[idx]
        optimizer.zero_grad(set_to_none=True)
        with autocast(x.device, recipe.precision):
            loss = F.cross_entropy(net(xb), y[idx], label_smoothing=recipe.label_smoothing)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total, seen = total + loss.item() * len(idx), seen + len(idx)
    return total / max(seen, 1)


def train_ceiling(recipe: CeilingRecipe, *, seed: int = 0, train_subset: int | None = None,
                  eval_subset: int | None = None, device: str = "auto", root=None, progress: bool | None = None,
                  checkpoint: str | Path | None = None) -> dict:
    """Train `recipe` on the pooled training set; the epoch is chosen on validation accuracy.

    Returns a JSON-serialisable dict: config, per-epoch history (with training seconds and torch threads), test
    accuracy at the best-validation epoch and at the last, parameter count, wall time and `device`.
    """
    from tqdm.auto import tqdm

    dev = resolve_device(device)
    torch.manual_seed(seed)
    x, y = load_split_tensors("train", train_subset, seed, dev, root)
    # Evaluation subsets use a fixed seed so that every run is scored on the same images.
    x_val, y_val = load_split_tensors("val", eval_subset, 0, dev, root)
    x_test, y_test = load_split_tensors("test", eval_subset, 0, dev, root)
    net = build_model(recipe.model, width=recipe.width).to(dev)
    optimizer = make_optimizer(recipe, net.parameters())
    scheduler = make_scheduler(recipe, optimizer, recipe.epochs * math.ceil(len(y) / recipe.batch_size))
    generator = torch.Generator().manual_seed(seed)
    history, resumed = [], 0
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt and ckpt.is_file():
        state = torch.load(ckpt, map_location=dev, weights_only=False)
        if state["recipe"] != recipe.to_dict() or state["seed"] != seed:
            raise ValueError(f"checkpoint {ckpt} belongs to another run: delete it or pass another path")
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        history, resumed = state["history"], len(state["history"])

    for epoch in tqdm(range(resumed + 1, recipe.epochs + 1), desc=f"ceiling {recipe.name} {recipe.model} "
                      f"w{recipe.width}", disable=not _progress_enabled(progress), initial=resumed, total=recipe.epochs):
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss = train_one_epoch(net, optimizer, scheduler, x, y, recipe, generator)
        train_s = time.perf_counter() - t0
        val = evaluate(net, x_val, y_val, precision=recipe.precision)
        test = evaluate(net, x_test, y_test, precision=recipe.precision)
        history.append(dict(epoch=epoch, lr=lr, train_loss=train_loss, val_loss=val["loss"],
                            val_accuracy=val["accuracy"], test_loss=test["loss"], test_accuracy=test["accuracy"],
                            train_seconds=train_s, seconds=time.perf_counter() - t0,
                            # Per epoch: a resumed run's chunks may run on different thread counts, and the
                            # provenance's device names only the last chunk's.
                            threads=torch.get_num_threads()))
        if ckpt:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            torch.save(dict(recipe=recipe.to_dict(), seed=seed, net=net.state_dict(), optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict() if scheduler else None,
                            generator=generator.get_state(), history=history), ckpt.with_suffix(".tmp"))
            ckpt.with_suffix(".tmp").replace(ckpt)

    best = max(history, key=lambda h: h["val_accuracy"])  # max keeps the first of equal epochs
    if ckpt:
        ckpt.unlink(missing_ok=True)  # the result now holds everything the checkpoint did
    train_seconds = sum(h["train_seconds"] for h in history)
    return dict(kind="ceiling", config=dict(recipe=recipe.to_dict(), train_subset=train_subset,
                                            eval_subset=eval_subset),
                seed=seed, n_train=len(y), n_val=len(y_val), n_test=len(y_test), n_parameters=count_parameters(net),
                history=history, best_epoch=best["epoch"], val_accuracy_best=best["val_accuracy"],
                test_accuracy_at_best_val=best["test_accuracy"], test_accuracy_last=history[-1]["test_accuracy"],
                train_images_per_second=len(y) * len(history) / train_seconds if train_seconds else None,
                resumed_from_epoch=resumed, wall_time_s=sum(h["seconds"] for h in history), device=str(dev))
