"""A DP-SGD training recipe as data: batch, epochs, optimiser, schedule, clip, augmentation multiplicity, EMA.

`train_recipe` runs record-level DP-SGD on the pooled BloodMNIST training set with any recipe, on the fast
single-backward path (fedmedlib.privacy.fastdp), and reports what it spent. Every knob that the DP literature shows
matters at a fixed ε is one field, so a search and its ablation are lists of `DPRecipe`s.

References:
    De et al., "Unlocking High-Accuracy Differentially Private Image Classification through Scale", arXiv
    2204.13650 (2022) — large batches, augmentation multiplicity, parameter averaging (EMA), long training.
    Sander et al., "TAN Without a Burn: Scaling Laws of DP-SGD", ICML 2023 — equal-ε batch/steps trade-offs.
    Kurakin et al., "Toward Training at ImageNet Scale with Differential Privacy", arXiv 2201.12328 (2022).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass

import torch

from . import accounting
from .fastdp import FastSession
from ..models import build_model, count_parameters
from ..train import LOCAL_OPTIMIZERS, load_split_tensors, make_optimizer, resolve_device, select_epochs

OPTIMIZERS = LOCAL_OPTIMIZERS
# Knobs added after results were cached -> default: hashed only when set, so those results keep their hashes.
LATER_FIELDS = {"weight_standardization": False}
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class DPRecipe:
    """Everything but (ε, δ) that decides what DP-SGD reaches; `name` labels it in tables."""

    name: str = "naive"
    batch_size: int = 128  # expected logical batch (Poisson sampling)
    epochs: int = 15
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9  # sgd only
    schedule: str = "constant"
    clip: float = 7.0
    multiplicity: int = 1  # augmented copies per sample, averaged before clipping (1 = no augmentation)
    ema: float = 0.0  # decay of the evaluated weight average (0 = evaluate the raw weights)
    width: int = 16
    physical_batch: int = 256  # samples per forward pass: memory only, the maths is unchanged
    weight_standardization: bool = False  # standardised conv filters (models.WSConv2d), paired with GroupNorm

    def __post_init__(self):
        errors = []
        if self.optimizer not in OPTIMIZERS or self.schedule not in SCHEDULES:
            errors.append(f"optimizer must be one of {OPTIMIZERS} and schedule one of {SCHEDULES}")
        if not isinstance(self.weight_standardization, bool):
            errors.append(f"weight_standardization must be True or False, got {self.weight_standardization!r}")
        if self.batch_size < 1 or self.epochs < 1 or self.multiplicity < 1 or self.physical_batch < 1:
            errors.append("batch_size, epochs, multiplicity and physical_batch must each be >= 1")
        if not (self.lr > 0 and self.clip > 0 and 0 <= self.ema < 1 and 0 <= self.momentum < 1):
            errors.append(f"need lr > 0, clip > 0, ema in [0, 1), momentum in [0, 1); got lr={self.lr}, "
                          f"clip={self.clip}, ema={self.ema}, momentum={self.momentum}")
        if errors:
            raise ValueError(f"invalid DPRecipe {self.name!r}: " + "; ".join(errors))

    def replace(self, **changes) -> "DPRecipe":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def tuned() -> DPRecipe:
    """The tuned recipe of `fedmedlib.config.DP_TUNED` (each value's reason: config.DP_TUNED_REASONS)."""
    from ..config import DP_TUNED

    return DPRecipe("tuned", **DP_TUNED)


def plan(recipe: DPRecipe, n_records: int, epsilon: float, delta: float) -> dict:
    """(q, steps, z) of `recipe` on `n_records`: Poisson rate q = 1 / ⌈N/B⌉ (Opacus' convention), epochs·⌈N/B⌉
    steps, and the smallest noise multiplier z that keeps all of them within (ε, δ)."""
    if not 1 <= recipe.batch_size <= n_records:
        raise ValueError(f"batch_size {recipe.batch_size} must lie in [1, {n_records}] (the number of records)")
    steps_per_epoch = math.ceil(n_records / recipe.batch_size)
    q, steps = 1.0 / steps_per_epoch, recipe.epochs * steps_per_epoch
    return dict(sample_rate=q, steps=steps, steps_per_epoch=steps_per_epoch,
                noise_multiplier=accounting.noise_multiplier(epsilon, delta, q, steps))


def _optimizer(recipe: DPRecipe, params):
    return make_optimizer(recipe.optimizer, params, recipe.lr, recipe.momentum)


def _ema_update(ema_net, net, decay: float, step: int) -> None:
    # Warm-up min(decay, (1+t)/(10+t)): a plain 0.999 average would stay ~70 % at the random initial weights
    # after the few hundred steps a DP run on 12k images takes.
    decay = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for e, p in zip(ema_net.parameters(), net.parameters()):
            e.lerp_(p, 1.0 - decay)


def train_recipe(recipe: DPRecipe, *, epsilon: float = accounting.PAPER_EPSILON, delta: float = accounting.PAPER_DELTA,
                 seed: int = 0, train_subset: int | None = None, eval_subset: int | None = None,
                 device: str = "auto", root=None, progress: bool | None = None) -> dict:
    """Centralized record-level DP-SGD with `recipe`; the epoch is chosen on validation accuracy.

    The EMA of the weights is post-processing of the privatised iterates: it is evaluated, never trained,
    and costs no privacy (the accountant sees exactly epochs · ⌈N/B⌉ noisy steps either way).
    """
    from opacus.accountants import create_accountant

    dev, started = resolve_device(device), time.perf_counter()
    torch.manual_seed(seed)
    x, y = load_split_tensors("train", train_subset, seed, dev, root)
    x_val, y_val = load_split_tensors("val", eval_subset, 0, dev, root)
    x_test, y_test = load_split_tensors("test", eval_subset, 0, dev, root)
    p = plan(recipe, len(y), epsilon, delta)
    net = build_model("dpresnet", width=recipe.width, weight_standardization=recipe.weight_standardization).to(dev)
    shown = copy.deepcopy(net) if recipe.ema else net  # the weights that are evaluated
    optimizer = _optimizer(recipe, net.parameters())
    total = p["steps"]
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
                 if recipe.schedule == "cosine" else None)
    accountant = create_accountant("prv")
    counter = {"steps": 0}

    def after_step() -> None:
        if scheduler:
            scheduler.step()
        if recipe.ema:
            _ema_update(shown, net, recipe.ema, counter["steps"])
        counter["steps"] += 1

    session = FastSession(net, optimizer, x, y, sample_rate=p["sample_rate"], z=p["noise_multiplier"],
                          clip=recipe.clip, accountant=accountant, generator=torch.Generator().manual_seed(seed),
                          multiplicity=recipe.multiplicity, physical_batch=recipe.physical_batch,
                          after_step=after_step)

    spent = lambda: accounting.history_epsilon(accountant.history, delta, "prv")  # noqa: E731
    history, summary = select_epochs(shown, session.epoch, x_val, y_val, x_test, y_test, epochs=recipe.epochs,
                                     desc=f"DP recipe {recipe.name}", progress=progress,
                                     extra=lambda: dict(epsilon=spent()))
    session.close()
    config = dict(recipe=recipe.to_dict(), epsilon=epsilon, delta=delta, train_subset=train_subset,
                  eval_subset=eval_subset)
    return dict(kind="dp_recipe", config=config, seed=seed, n_train=len(y), n_parameters=count_parameters(net),
                history=history, **p, epsilon_spent=spent(), delta=delta, **summary,
                wall_time_s=time.perf_counter() - started, device=str(dev))
