"""What defines a federated run: the `Experiment` dataclass, its validation, and its stable hash (the cache key).

Its fields stay flat, in the order results were first hashed: grouping them (federation, DP, SecAgg) would
change `to_dict()` and so the name of every committed result. The groups, as the book explains them:
    federation — n_clients, scheme, alpha, classes_per_client, rounds, local_epochs, fraction_fit, dropout_*;
    model and training — model, width, batch_size, lr, local_optimizer, precision, train_subset, eval_subset;
    DP — dp, epsilon, delta, clip, noise_multiplier, drop_noise, noise_placement, multiplicity, and for
         dp='distributed_dpsgd' schedule, ema, eval_every, colluding, scale_bits, subsampling_bound;
    SecAgg+ — aggregator, secagg_threshold, secagg_neighbours; and seed.

References:
    Fares & Saad, arXiv 2412.00687 (2024), code: 50 rounds, 3 local epochs, batch 32, Adam 1e-3.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from .. import partition as _partition
from ..privacy import skellam as _skellam
from ..train import LOCAL_OPTIMIZERS, PRECISIONS

DP_MODES = ("none", "dpsgd", "update_ldp", "client_level", "distributed_dpsgd")
SCHEDULES = ("constant", "cosine")
SUBSAMPLING_BOUNDS = tuple(_skellam.BOUNDS)
AGGREGATORS = ("plain", "secagg")
# field -> default: omitted from to_dict() (and the hash) at that default
LATER_FIELDS = {"precision": "fp32", "multiplicity": 1, "local_optimizer": "adam", "schedule": "constant", "ema": 0.0,
                "eval_every": 1, "colluding": 0, "scale_bits": 16, "subsampling_bound": "general"}
# dp='distributed_dpsgd' only (fedmedlib.fl.distributed): one DP-SGD step per round, the server's optimizer.
DISTRIBUTED_ONLY = ("schedule", "ema", "colluding", "scale_bits", "subsampling_bound")


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
    # rounds the number of DP-SGD steps; these four are its other knobs (see fedmedlib.fl.distributed).
    schedule: str = "constant"  # server learning-rate schedule: constant | cosine
    ema: float = 0.0  # decay of the evaluated average of global weights (0 = evaluate the raw weights)
    eval_every: int = 1  # evaluate the global model every this many rounds (and after the last)
    colluding: int = 0  # hospitals assumed to pool their noise shares with the server
    scale_bits: int = 16  # C / γ = 2^scale_bits integer levels per clip norm (quantization before SecAgg+)
    # which Poisson-subsampling RDP bound accounts the Skellam noise (fedmedlib.privacy.skellam.BOUNDS)
    subsampling_bound: str = "general"

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
        if self.subsampling_bound not in SUBSAMPLING_BOUNDS:
            errors.append(f"subsampling_bound must be one of {SUBSAMPLING_BOUNDS} (fedmedlib.privacy.skellam.BOUNDS),"
                          f" got {self.subsampling_bound!r}")
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
