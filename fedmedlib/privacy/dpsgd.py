"""Record-level DP-SGD (the paper's claim): per-sample clipping, Poisson sampling, one budget for all training.

References:
    Abadi et al., "Deep Learning with Differential Privacy", CCS 2016 (DP-SGD).
    Yousefpour et al., "Opacus: User-Friendly Differential Privacy Library in PyTorch", 2021.
    Gopi, Lee & Wutschitz, NeurIPS 2021 (PRV accountant, the default here).
    Bu et al., "Scalable and Efficient Training of Large CNNs with DP", NeurIPS 2022 (mixed ghost clipping:
    the 'fast' backend in fedmedlib.privacy.fastdp).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings

import torch
from torch import nn

from . import accounting
from ..models import build_model, count_parameters
from ..train import LOCAL_OPTIMIZERS, load_split_tensors, make_optimizer, resolve_device, select_epochs

OPACUS_MODES = ("hooks", "ew", "functorch", "ghost")
BACKENDS = ("fast", "opacus")


def check_dp_model(model: nn.Module) -> None:
    """Raise a clear error if Opacus rejects `model` (BatchNorm mixes samples, so per-sample DP fails)."""
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ValueError(f"{type(model).__name__} cannot be trained with per-sample DP: {errors[0]} "
                         f"({len(errors)} problem(s)). Use build_model('dpresnet') (GroupNorm, the paper's DP "
                         "model) or opacus.validators.ModuleValidator.fix(model) to swap BatchNorm for GroupNorm")


@contextlib.contextmanager
def _opacus_quiet():
    """Silence Opacus' expected warnings (TOOLCHAIN.md): insecure RNG by choice, hooks mode, RDP's alpha range."""
    with warnings.catch_warnings():
        for pattern in (".*[Ss]ecure RNG turned off.*", ".*full backward hook.*", ".*Optimal order.*",
                        ".*new dataset object.*"):  # each round re-wraps the same hospital data
            warnings.filterwarnings("ignore", message=pattern)
        yield


class _OpacusSession:
    """One Opacus-wrapped (model, optimizer, Poisson loader); every step lands in the shared accountant."""

    def __init__(self, engine, net, optimizer, x, y, *, batch_size, z, clip, mode, generator):
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size)
        with _opacus_quiet():
            made = engine.make_private(module=net, optimizer=optimizer, data_loader=loader, noise_multiplier=z,
                                       max_grad_norm=clip, poisson_sampling=True, grad_sample_mode=mode,
                                       noise_generator=generator, criterion=nn.CrossEntropyLoss())
        self.module, self.optimizer = made[0], made[1]
        self.criterion = made[2] if mode == "ghost" else nn.CrossEntropyLoss()
        self.loader = made[-1]

    def epoch(self) -> float:
        self.module.train()
        total, seen = 0.0, 0
        with _opacus_quiet():
            for xb, yb in self.loader:
                self.optimizer.zero_grad(set_to_none=True)
                loss = self.criterion(self.module(xb), yb)
                loss.backward()
                self.optimizer.step()
                total, seen = total + loss.item() * len(yb), seen + len(yb)
        return total / max(seen, 1)

    def close(self) -> None:
        self.module.cleanup() if hasattr(self.module, "cleanup") else None


class RecordLevelDP:
    """One hospital's DP-SGD over all its FL rounds: noise calibrated once so that rounds × local epochs
    of Poisson-sampled steps spend (ε, δ) in total; each round starts from the new global weights with a
    fresh Adam, but the accountant's history (and the ledger's) carries over.

    >>> dp = RecordLevelDP(2391, rounds=5, local_epochs=1, batch_size=64)  # doctest: +SKIP
    >>> new_state = dp.train_round(global_state, x, y)                     # doctest: +SKIP
    """

    def __init__(self, n_records: int, *, rounds: int, local_epochs: int = 1, epsilon: float = accounting.PAPER_EPSILON,
                 delta: float = accounting.PAPER_DELTA, clip: float = accounting.PAPER_CLIP, batch_size: int = 32,
                 model: str = "dpresnet", width: int = 16, lr: float = 1e-3, accountant: str = "prv",
                 backend: str = "fast", grad_sample_mode: str = "hooks", seed: int = 0, hospital="0",
                 ledger: accounting.PrivacyLedger | None = None, device="cpu", precision: str = "fp32",
                 multiplicity: int = 1, optimizer: str = "adam"):
        if not (isinstance(n_records, int) and n_records >= 1 and rounds >= 1 and local_epochs >= 1):
            raise ValueError("n_records, rounds and local_epochs must be integers >= 1")
        if not 1 <= batch_size <= n_records:
            raise ValueError(f"batch_size must lie in [1, n_records={n_records}], got {batch_size}")
        if backend not in BACKENDS or grad_sample_mode not in OPACUS_MODES:
            raise ValueError(f"backend must be one of {BACKENDS} and grad_sample_mode one of {OPACUS_MODES}")
        if not clip > 0:
            raise ValueError(f"clip must be > 0, got {clip!r}")
        # Opacus' Poisson loader: q = 1 / (batches per epoch), so accounting here matches its own exactly.
        self.steps_per_epoch = math.ceil(n_records / batch_size)
        self.sample_rate = 1.0 / self.steps_per_epoch
        self.total_steps = rounds * local_epochs * self.steps_per_epoch
        self.noise_multiplier = accounting.noise_multiplier(epsilon, delta, self.sample_rate, self.total_steps,
                                                         accountant)
        self.n_records, self.rounds, self.local_epochs = n_records, rounds, local_epochs
        self.epsilon_target, self.delta, self.clip, self.batch_size = epsilon, delta, clip, batch_size
        self.model, self.width, self.lr, self.backend, self.mode = model, width, lr, backend, grad_sample_mode
        self.hospital, self.ledger, self.device = str(hospital), ledger, resolve_device(device)
        self.accountant_name, self.steps_done, self.precision = accountant, 0, precision
        if precision != "fp32" and backend != "fast":
            raise ValueError(f"precision={precision!r} needs backend='fast' (Opacus' hooks run in fp32 here)")
        if multiplicity != 1 and backend != "fast":
            raise ValueError(f"multiplicity={multiplicity} needs backend='fast': Opacus' hooks clip each augmented "
                             "copy as its own sample instead of averaging a record's copies first")
        self.multiplicity = int(multiplicity)
        if optimizer not in LOCAL_OPTIMIZERS:
            raise ValueError(f"unknown local optimizer {optimizer!r}: choose one of {LOCAL_OPTIMIZERS}")
        self.optimizer = optimizer
        # The noise stream lives on the CPU (the same draws on every CPU) except on a GPU, where drawing a
        # width-64 model's 4.8 M normals per step on the CPU would cost ≈ 35 ms a step: there it is the GPU's.
        self.generator = torch.Generator(device=self.device if self.device.type == "cuda" else "cpu")
        self.generator.manual_seed(seed)
        if backend == "opacus":
            from opacus import PrivacyEngine

            with _opacus_quiet():
                self._engine = PrivacyEngine(accountant=accountant)
            self.accountant = self._engine.accountant
        else:
            from opacus.accountants import create_accountant

            self.accountant = create_accountant(accountant)

    def build(self) -> nn.Module:
        net = build_model(self.model, width=self.width).to(self.device)
        check_dp_model(net)
        return net

    def session(self, net: nn.Module, optimizer, x: torch.Tensor, y: torch.Tensor):
        """A trainer whose `epoch()` runs one DP epoch of Poisson-sampled steps on (x, y)."""
        if len(x) != self.n_records:
            raise ValueError(f"this hospital was planned with {self.n_records} records, got {len(x)}: "
                             "the sample rate (and so the privacy guarantee) depends on it")
        if self.backend == "opacus":
            return _OpacusSession(self._engine, net, optimizer, x, y, batch_size=self.batch_size,
                                  z=self.noise_multiplier, clip=self.clip, mode=self.mode, generator=self.generator)
        from .fastdp import FastSession

        return FastSession(net, optimizer, x, y, sample_rate=self.sample_rate, z=self.noise_multiplier,
                           clip=self.clip, accountant=self.accountant, generator=self.generator,
                           precision=self.precision, multiplicity=self.multiplicity)

    def _spend(self, epochs: int) -> None:
        steps = epochs * self.steps_per_epoch
        if self.steps_done + steps > self.total_steps:
            raise RuntimeError(f"hospital {self.hospital}: the privacy budget was planned for {self.total_steps} "
                               f"steps and {self.steps_done} are spent; {steps} more would exceed "
                               f"(ε={self.epsilon_target}, "
                               f"δ={self.delta}). Plan more rounds up front (noise is calibrated once)")
        self.steps_done += steps
        if self.ledger is not None:
            self.ledger.record(self.hospital, "dpsgd", noise_multiplier=self.noise_multiplier,
                               sample_rate=self.sample_rate, steps=steps)

    def train_round(self, global_state: dict, x: torch.Tensor, y: torch.Tensor, epochs: int | None = None) -> dict:
        """Local DP-SGD from `global_state` for `epochs` (default local_epochs); returns the new state dict."""
        epochs = self.local_epochs if epochs is None else epochs
        self._spend(epochs)
        net = self.build()
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            net.to(memory_format=torch.channels_last)  # the engine's data is channels-last (its GPU default)
        net.load_state_dict(global_state)
        # A fresh optimiser per round, as the paper's client
        optimizer = make_optimizer(self.optimizer, net.parameters(), self.lr)
        session = self.session(net, optimizer, x.to(self.device), y.to(self.device))
        try:
            for _ in range(epochs):
                session.epoch()
        finally:
            session.close()
        return {k: v.detach().clone() for k, v in net.state_dict().items()}

    @property
    def epsilon_spent(self) -> float:
        """ε spent so far by this hospital, from the accountant that saw every step (0 before training)."""
        if not self.accountant.history:
            return 0.0
        # The same function that calibrated the noise: at q = 1 (a hospital smaller than one batch) it is the
        # exact Gaussian composition, where PRV's grid would over-report a few thousandths above the target.
        return accounting.history_epsilon(self.accountant.history, self.delta, self.accountant_name)

    def describe(self) -> dict:
        return dict(epsilon_target=self.epsilon_target, delta=self.delta, clip=self.clip,
                    noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate,
                    batch_size=self.batch_size, steps=self.steps_done, planned_steps=self.total_steps,
                    accountant=self.accountant_name, backend=self.backend,
                    grad_sample_mode=self.mode if self.backend == "opacus" else None)


def train_dp_centralized(*, model: str = "dpresnet", width: int = 16, epochs: int = 2, batch_size: int = 32,
                         lr: float = 1e-3, seed: int = 0, train_subset: int | None = None,
                         eval_subset: int | None = None, epsilon: float = accounting.PAPER_EPSILON,
                         delta: float = accounting.PAPER_DELTA, clip: float = accounting.PAPER_CLIP,
                         accountant: str = "prv", backend: str = "fast", grad_sample_mode: str = "hooks",
                         device: str = "auto", root=None, progress: bool | None = None) -> dict:
    """DP-SGD on the pooled training set, like `train.train_centralized` plus the privacy actually spent.

    Noise is calibrated so that all `epochs` spend (ε, δ); the result records σ (noise multiplier), C, q,
    steps and ε after every epoch. The best epoch is chosen on validation accuracy (validation data is not
    the private training data); test accuracy is reported at that epoch.
    """
    if epochs < 1 or lr <= 0:
        raise ValueError(f"epochs must be >= 1 and lr > 0, got {epochs}, {lr}")
    dev = resolve_device(device)
    started = time.perf_counter()
    torch.manual_seed(seed)
    x_train, y_train = load_split_tensors("train", train_subset, seed, dev, root)
    x_val, y_val = load_split_tensors("val", eval_subset, 0, dev, root)
    x_test, y_test = load_split_tensors("test", eval_subset, 0, dev, root)
    dp = RecordLevelDP(len(y_train), rounds=epochs, epsilon=epsilon, delta=delta, clip=clip, batch_size=batch_size,
                       model=model, width=width, lr=lr, accountant=accountant, backend=backend,
                       grad_sample_mode=grad_sample_mode, seed=seed, device=dev)
    net = dp.build()
    session = dp.session(net, torch.optim.Adam(net.parameters(), lr=lr), x_train, y_train)

    def dp_epoch() -> float:
        dp._spend(1)
        return session.epoch()

    history, summary = select_epochs(net, dp_epoch, x_val, y_val, x_test, y_test, epochs=epochs,
                                     desc=f"DP {model} w{width}", progress=progress,
                                     extra=lambda: dict(epsilon=dp.epsilon_spent))
    session.close()
    config = dict(model=model, width=width, epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adam",
                  train_subset=train_subset, eval_subset=eval_subset, epsilon=epsilon, delta=delta, clip=clip,
                  accountant=accountant, backend=backend,
                  grad_sample_mode=grad_sample_mode if backend == "opacus" else None)
    return dict(kind="dp_centralized", config=config, seed=seed, n_train=len(y_train), n_val=len(y_val),
                n_test=len(y_test), n_parameters=count_parameters(net), history=history,
                noise_multiplier=dp.noise_multiplier, clip=clip, sample_rate=dp.sample_rate, steps=dp.steps_done,
                epsilon_spent=dp.epsilon_spent, delta=delta, **summary, wall_time_s=time.perf_counter() - started,
                device=str(dev))
