"""FedAvg over simulated hospitals, in one process: sampling, dropouts, DP hooks, pluggable aggregation.

References:
    McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data", AISTATS 2017.
    Fares & Saad, arXiv 2412.00687 (2024), code: fresh Adam per round, 80/20 local split, test every round.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import parallel as _parallel
from . import partition as _partition
from .flat import get_flat, set_flat, weighted_mean  # noqa: F401 - also public here, as fl.get_flat etc.
from .models import build_model, count_parameters
from .provenance import provenance
from .train import (LOCAL_OPTIMIZERS, PRECISIONS, _progress_enabled, evaluate, load_split_tensors, make_optimizer,
                    resolve_device, train_epoch)

DP_MODES = ("none", "dpsgd", "update_ldp", "client_level", "distributed_dpsgd")
SCHEDULES = ("constant", "cosine")
AGGREGATORS = ("plain", "secagg")
# field -> default: omitted from to_dict() (and the hash) at that default
LATER_FIELDS = {"precision": "fp32", "multiplicity": 1, "local_optimizer": "adam", "schedule": "constant", "ema": 0.0,
                "eval_every": 1, "colluding": 0, "scale_bits": 16}
# dp='distributed_dpsgd' only (fedmedlib.distributed_round): one DP-SGD step per round, the server's optimizer.
DISTRIBUTED_ONLY = ("schedule", "ema", "colluding", "scale_bits")


@dataclass(frozen=True)
class Experiment:
    """Everything that defines a federated run; `to_dict()` is its cache key."""

    n_clients: int = 10
    scheme: str = "paper"  # iid | paper | dirichlet | pathological
    alpha: float = 0.5
    classes_per_client: int = 2
    rounds: int = 3
    local_epochs: int = 1
    fraction_fit: float = 1.0
    model: str = "dpresnet"
    width: int = 16
    batch_size: int = 32
    lr: float = 1e-3
    train_subset: int | None = None
    eval_subset: int | None = None
    dropout_prob: float = 0.0
    dropout_schedule: tuple[tuple[int, tuple[int, ...]], ...] = ()  # ((round, (client ids ...)), ...)
    dp: str = "none"
    epsilon: float = 6.0
    delta: float = 1.9e-4
    clip: float = 7.0
    noise_multiplier: float | None = None  # client_level: z; None = calibrated from epsilon
    drop_noise: bool = False  # update_ldp only: reproduces Flower < 1.14 (noise computed, not applied)
    noise_placement: str = "distributed"  # client_level: central | distributed
    aggregator: str = "plain"
    secagg_threshold: int = 4
    secagg_neighbours: int | None = None
    seed: int = 0
    extra: tuple[tuple[str, object], ...] = field(default=())  # room for later options, still hashed
    precision: str = "fp32"  # 'bf16': autocast in training and evaluation (changes results, so it is hashed)
    multiplicity: int = 1  # dpsgd only: augmented copies per record, averaged before clipping (fedmedlib.augment)
    local_optimizer: str = "adam"  # each hospital's fresh optimiser per round: adam | sgd (momentum 0.9)
    # dp='distributed_dpsgd': batch_size is the expected union batch, lr the server's SGD-momentum step size,
    # rounds the number of DP-SGD steps; these four are its other knobs (see fedmedlib.distributed_round).
    schedule: str = "constant"  # server learning-rate schedule: constant | cosine
    ema: float = 0.0  # decay of the evaluated average of global weights (0 = evaluate the raw weights)
    eval_every: int = 1  # evaluate the global model every this many rounds (and after the last)
    colluding: int = 0  # hospitals assumed to pool their noise shares with the server
    scale_bits: int = 16  # C / γ = 2^scale_bits integer levels per clip norm (quantization before SecAgg+)

    def __post_init__(self):
        errors = []
        if self.scheme not in _partition.SCHEMES:
            errors.append(f"scheme {self.scheme!r} is not one of {_partition.SCHEMES}")
        if self.dp not in DP_MODES:
            errors.append(f"dp mode {self.dp!r} is not one of {DP_MODES}")
        if self.aggregator not in AGGREGATORS:
            errors.append(f"aggregator {self.aggregator!r} is not one of {AGGREGATORS}")
        if not 0 < self.fraction_fit <= 1:
            errors.append(f"fraction_fit must be in (0, 1], got {self.fraction_fit}")
        if not 0 <= self.dropout_prob < 1:
            errors.append(f"dropout_prob must be in [0, 1), got {self.dropout_prob}")
        if self.precision not in PRECISIONS:
            errors.append(f"precision {self.precision!r} is not one of {PRECISIONS}")
        if int(self.multiplicity) != self.multiplicity or self.multiplicity < 1:
            errors.append(f"multiplicity must be an integer >= 1, got {self.multiplicity!r}")
        elif self.multiplicity > 1 and self.dp != "dpsgd":
            errors.append(f"multiplicity={self.multiplicity} averages augmented copies inside DP-SGD's per-sample "
                          f"gradients: it needs dp='dpsgd' (got dp={self.dp!r}); leave it at 1 otherwise")
        if self.local_optimizer not in LOCAL_OPTIMIZERS:
            errors.append(f"local_optimizer {self.local_optimizer!r} is not one of {LOCAL_OPTIMIZERS}")
        if int(self.eval_every) != self.eval_every or self.eval_every < 1:
            errors.append(f"eval_every must be an integer >= 1, got {self.eval_every!r}")
        errors += self._distributed_errors()
        if self.n_clients < 1 or self.rounds < 1 or self.local_epochs < 1:
            errors.append("n_clients, rounds and local_epochs must each be at least 1")
        for rnd, ids in self.dropout_schedule:
            bad = [i for i in ids if not 0 <= i < self.n_clients]
            if bad or not 1 <= rnd <= self.rounds:
                errors.append(f"dropout_schedule entry (round {rnd}, clients {ids}) is outside rounds "
                              f"1..{self.rounds} / clients 0..{self.n_clients - 1}")
        if errors:
            raise ValueError("invalid Experiment: " + "; ".join(errors))

    def _distributed_errors(self) -> list[str]:
        if self.dp != "distributed_dpsgd":
            return [f"{k}={getattr(self, k)!r} applies only to dp='distributed_dpsgd' (got dp={self.dp!r}): "
                    "leave it at its default" for k in DISTRIBUTED_ONLY if getattr(self, k) != LATER_FIELDS[k]]
        errors = []
        if self.aggregator != "secagg":
            errors.append("dp='distributed_dpsgd' splits the noise across hospitals, so only a secure sum is "
                          "private: it needs aggregator='secagg' (in the clear each update carries a share only)")
        if self.local_epochs != 1 or self.fraction_fit != 1.0 or self.multiplicity != 1 or self.model != "dpresnet":
            errors.append("dp='distributed_dpsgd' takes one DP-SGD step per round over every hospital: it needs "
                          "local_epochs=1, fraction_fit=1.0, multiplicity=1 and model='dpresnet'")
        if self.schedule not in SCHEDULES or not 0 <= self.ema < 1:
            errors.append(f"schedule must be one of {SCHEDULES} and ema in [0, 1), got {self.schedule!r}, {self.ema}")
        return errors

    def to_dict(self) -> dict:
        d = json.loads(json.dumps(dataclasses.asdict(self)))
        # Fields added after results were committed are left out at their default, so that every existing
        # experiment keeps its hash (and its result file name); set to anything else, they are hashed.
        return {k: v for k, v in d.items() if k not in LATER_FIELDS or v != LATER_FIELDS[k]}

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:10]

    @classmethod
    def from_profile(cls, profile, **overrides) -> "Experiment":
        base = dict(rounds=profile.rounds, local_epochs=profile.local_epochs, width=profile.width,
                    batch_size=profile.batch_size, lr=profile.lr, train_subset=profile.train_subset,
                    eval_subset=profile.eval_subset)
        return cls(**{**base, **overrides})


def round_rng(seed: int, rnd: int, client: int = -1) -> np.random.Generator:
    """Independent randomness per (seed, round, client): a resumed run draws exactly what it would have."""
    return np.random.default_rng([seed, rnd, client + 1])


@dataclass
class Hospital:
    cid: int
    train_idx: torch.Tensor
    val_idx: torch.Tensor


def hospital_indices(exp: Experiment, labels: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each hospital's (local training, local validation) indices into the experiment's training images,
    whose labels are `labels`: the partition, then each hospital's own split. Needs labels only, so image
    counts can be planned without loading images."""
    if exp.n_clients > len(labels):
        raise ValueError(f"{exp.n_clients} hospitals but only {len(labels)} training images: use fewer")
    parts = _partition.partition(labels, exp.n_clients, exp.scheme, seed=exp.seed, alpha=exp.alpha,
                                 classes_per_client=exp.classes_per_client)
    out = []
    for cid, part in enumerate(parts):
        if len(part) < 2:
            raise ValueError(f"hospital {cid} got {len(part)} images: too few for a train/val split; "
                             "use fewer hospitals, more data, or a larger min_size")
        out.append(_partition.local_split(part, seed=exp.seed * 1000 + cid))
    return out


def images_per_round(exp: Experiment, labels: dict) -> dict:
    """Images a round trains (summed over hospitals and local epochs) and evaluates (the hospitals' validation
    splits and the test set), from the official splits' `labels` ({'train': ..., 'test': ...}) alone."""
    from .data import subset_indices

    train_labels = labels["train"][subset_indices(len(labels["train"]), exp.train_subset, exp.seed)]
    splits = hospital_indices(exp, train_labels)
    n_test = len(subset_indices(len(labels["test"]), exp.eval_subset, 0))
    return dict(trained=exp.local_epochs * sum(len(tr) for tr, _ in splits),
                evaluated=sum(len(va) for _, va in splits) + n_test)


class Federation:
    """The data, the hospitals and one reusable model on one device; `play_round` plays a round."""

    def __init__(self, exp: Experiment, *, device="auto", root=None, private: Callable | None = None,
                 aggregator=None, engine: str = "sequential", channels_last: bool | None = None):
        self.exp, self.device = exp, resolve_device(device)
        torch.manual_seed(exp.seed)
        self.x, self.y = load_split_tensors("train", exp.train_subset, exp.seed, self.device, root)
        self.x_test, self.y_test = load_split_tensors("test", exp.eval_subset, 0, self.device, root)
        splits = hospital_indices(exp, self.y.cpu().numpy())
        self.hospitals = [Hospital(cid, *(torch.as_tensor(i, device=self.device) for i in (tr, va)))
                          for cid, (tr, va) in enumerate(splits)]
        self.val_idx = torch.cat([h.val_idx for h in self.hospitals])
        self.model = build_model(exp.model, width=exp.width).to(self.device)
        # channels-last convolutions are faster on GPUs (tensor cores) and not on this CPU (909 vs 930 images/s
        # fp32, 364 vs 1,789 bf16, measured): on by default on CUDA only. Same numbers up to float rounding.
        if self.device.type == "cuda" if channels_last is None else channels_last:
            self.model.to(memory_format=torch.channels_last)
            self.x, self.x_test = (t.contiguous(memory_format=torch.channels_last) for t in (self.x, self.x_test))
        self.private = private  # a DP plug from fedmedlib.privacy (None = no DP)
        self.aggregator = aggregator
        self.engine = _parallel.resolve_engine(engine, self.model, self.device, multiplicity=exp.multiplicity,
                                               optimizer=exp.local_optimizer)

    def local_generator(self, cid: int, rnd: int) -> torch.Generator:
        """The batch order of hospital `cid` in round `rnd` (both engines draw it from here)."""
        return torch.Generator().manual_seed(int(round_rng(self.exp.seed, rnd, cid).integers(2**62)))

    def local_updates(self, cids: list[int], global_flat: torch.Tensor, rnd: int) -> list[tuple]:
        """(update, loss) of each hospital in `cids`: one after another, or all at once (engine='parallel')."""
        if self.engine == "parallel" and cids:
            return _parallel.local_updates(self, cids, global_flat, rnd)
        return [self.local_update(self.hospitals[c], global_flat, rnd) for c in cids]

    def local_update(self, hospital: Hospital, global_flat: torch.Tensor, rnd: int) -> tuple[torch.Tensor, float]:
        """Train from the global weights on one hospital's data; return (new - global, mean loss)."""
        set_flat(self.model, global_flat)
        x, y = self.x[hospital.train_idx], self.y[hospital.train_idx]
        generator = self.local_generator(hospital.cid, rnd)
        torch.manual_seed(generator.initial_seed())
        if self.private is not None and hasattr(self.private, "local_train"):
            loss = self.private.local_train(self.model, x, y, hospital.cid, rnd, generator)
        else:
            # A fresh Adam each round, as in the authors' client code.
            optimizer = make_optimizer(self.exp.local_optimizer, self.model.parameters(), self.exp.lr)
            losses = [train_epoch(self.model, optimizer, x, y, batch_size=self.exp.batch_size, generator=generator,
                                  precision=self.exp.precision) for _ in range(self.exp.local_epochs)]
            loss = float(np.mean(losses))
        return get_flat(self.model) - global_flat, loss

    def sample(self, rnd: int) -> tuple[list[int], list[int]]:
        """Clients asked to train this round, and those of them that drop out before sending."""
        rng = round_rng(self.exp.seed, rnd)
        k = max(1, int(round(self.exp.fraction_fit * self.exp.n_clients)))
        chosen = sorted(rng.choice(self.exp.n_clients, size=k, replace=False).tolist())
        scheduled = set(dict(self.exp.dropout_schedule).get(rnd, ()))
        dropped = [c for c in chosen if c in scheduled or rng.random() < self.exp.dropout_prob]
        return chosen, dropped

    def summary(self, history: list[dict], best: dict, started: float, **extra) -> dict:
        """The JSON result of a run: every round, the test accuracy at the best-validation round, provenance."""
        exp = self.exp
        return dict(
            kind="federated", **extra, config=exp.to_dict(), experiment_hash=exp.hash(), seed=exp.seed,
            n_parameters=count_parameters(self.model),
            hospital_sizes=[len(h.train_idx) + len(h.val_idx) for h in self.hospitals],
            rounds=history, best_round=best["round"], val_accuracy_best=best["val_accuracy"],
            test_accuracy_at_best_val=best["test_accuracy"], test_accuracy_last=history[-1]["test_accuracy"],
            seconds_per_round=float(np.mean([h["seconds"] for h in history])),
            wall_time_s=time.perf_counter() - started, provenance=provenance(self.device),
        )

    def evaluate_global(self, flat: torch.Tensor) -> dict:
        set_flat(self.model, flat)
        val = evaluate(self.model, self.x[self.val_idx], self.y[self.val_idx], precision=self.exp.precision)
        test = evaluate(self.model, self.x_test, self.y_test, precision=self.exp.precision)
        return dict(val_loss=val["loss"], val_accuracy=val["accuracy"], test_loss=test["loss"],
                    test_accuracy=test["accuracy"])


def _plain_aggregate(updates, weights, *, clients=None, dropped=None):
    return weighted_mean(updates, weights), {"aggregator": "plain"}


def play_round(fed: Federation, global_flat: torch.Tensor, rnd: int, *, private=None,
               aggregate=None) -> tuple[torch.Tensor, dict]:
    """One FedAvg round: sample, train (`fed.engine`), privatize, aggregate, evaluate -> (new global, record)."""
    if private is not None and hasattr(private, "play_round"):  # a round of its own (distributed_dpsgd)
        return private.play_round(fed, global_flat, rnd)
    aggregate, t0 = aggregate or _plain_aggregate, time.perf_counter()
    chosen, dropped = fed.sample(rnd)
    survivors = [c for c in chosen if c not in dropped]
    updates, weights, losses = [], [], []
    for cid, (update, loss) in zip(survivors, fed.local_updates(survivors, global_flat, rnd)):
        if private is not None and hasattr(private, "privatize_update"):
            update = private.privatize_update(update, cid, rnd)
        updates.append(update)
        n_examples = float(len(fed.hospitals[cid].train_idx))
        weights.append(private.weight(cid, n_examples) if hasattr(private, "weight") else n_examples)
        losses.append(loss)
    info = {}
    if updates:
        mean, info = aggregate(updates, weights, clients=survivors, dropped=dropped)
        if mean is not None:  # None: the aggregation protocol aborted this round
            if private is not None and hasattr(private, "server_noise"):
                mean = private.server_noise(mean, rnd, len(updates))
            global_flat = global_flat + mean.to(global_flat.device, global_flat.dtype)
    metrics = fed.evaluate_global(global_flat)
    record = dict(round=rnd, clients=chosen, dropped=dropped,
                  aggregated=0 if info.get("aborted") else len(updates),
                  train_loss=float(np.mean(reported)) if (reported := [x for x in losses if x is not None])
                  else None, **metrics, seconds=time.perf_counter() - t0)
    if private is not None and hasattr(private, "spent"):
        record["epsilon"] = private.spent()
    record.update({k: v for k, v in info.items() if isinstance(v, (int, float, str, bool))})
    return global_flat, record


def run_federated(exp: Experiment, *, device="auto", root=None, checkpoint: str | Path | None = None,
                  progress: bool | None = None, private=None, aggregator=None, engine: str = "auto") -> dict:
    """Play `exp.rounds` FedAvg rounds; return a JSON-serialisable history with provenance.

    The global model is evaluated every round on the official test set and on the union of the hospitals'
    local validation splits; the reported accuracy is the test accuracy at the round with the best
    validation accuracy (and, separately, at the last round). With `checkpoint`, the state after every round
    is saved there and a later call with the same experiment resumes from it. `engine` (fedmedlib.parallel):
    'sequential' trains the hospitals one after another, 'parallel' all at once (vmap; equal up to float
    rounding, so not hashed, but recorded in the result), 'auto' = parallel on a GPU, sequential on a CPU.
    """
    started = time.perf_counter()
    fed = Federation(exp, device=device, root=root, private=private, aggregator=aggregator, engine=engine)
    aggregate = aggregator.aggregate if aggregator is not None else _plain_aggregate
    if exp.aggregator == "secagg" and aggregator is None:
        raise ValueError("aggregator='secagg' needs a SecAgg aggregator object (fedmedlib.secagg)")
    global_flat = get_flat(fed.model).clone()
    state = dict(round=0, history=[], best=None, best_flat=None)
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt and ckpt.is_file():
        state = torch.load(ckpt, map_location=fed.device, weights_only=False)
        if state["experiment_hash"] != exp.hash():
            raise ValueError(f"checkpoint {ckpt} belongs to another experiment (hash {state['experiment_hash']}, "
                             f"this one {exp.hash()}): delete it or pass another checkpoint path")
        global_flat = state["global_flat"].to(fed.device)
        if private is not None and hasattr(private, "load_state_dict"):
            private.load_state_dict(state["private"])
    from tqdm.auto import tqdm

    rounds = range(state["round"] + 1, exp.rounds + 1)
    for rnd in tqdm(rounds, desc=f"FedAvg {exp.n_clients} hospitals", disable=not _progress_enabled(progress)):
        global_flat, record = play_round(fed, global_flat, rnd, private=private, aggregate=aggregate)
        state["history"].append(record)
        evaluated = "val_accuracy" in record  # every round, or every exp.eval_every rounds
        if evaluated and (state["best"] is None or record["val_accuracy"] > state["best"]["val_accuracy"]):
            state["best"], state["best_flat"] = record, global_flat.detach().clone()
        state["round"] = rnd
        if ckpt:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            payload = dict(state, experiment_hash=exp.hash(), global_flat=global_flat.detach().cpu())
            if private is not None and hasattr(private, "state_dict"):
                payload["private"] = private.state_dict()
            torch.save(payload, ckpt.with_suffix(".tmp"))
            ckpt.with_suffix(".tmp").replace(ckpt)

    audit = private.audit() if private is not None and hasattr(private, "audit") else {}
    return fed.summary(state["history"], state["best"], started, engine=fed.engine, **(dict(privacy=audit)
                                                                                         if audit else {}))


def federated(exp: Experiment, *, profile: str, allow_run: bool = True, device="auto", root=None,
              progress: bool | None = None, checkpoint_dir: str | Path | None = None, engine: str = "auto") -> dict:
    """Cached federated run: results/federated-<hash>.json, or run it (and save it) when allowed.

    QUICK-profile runs are live demonstrations: always run, never written to results/.
    """
    from . import results
    from .plugs import make_plugs

    def run() -> dict:
        private, aggregator = make_plugs(exp)
        ckpt = Path(checkpoint_dir) / f"{exp.hash()}.pt" if checkpoint_dir else None
        out = run_federated(exp, device=device, root=root, checkpoint=ckpt, progress=progress,
                            private=private, aggregator=aggregator, engine=engine)
        return dict(out, profile=profile)

    if profile == "quick":
        return run()
    key = dict(exp.to_dict(), profile=profile)
    return results.load_or_run("federated", key, run, allow_run=allow_run)
