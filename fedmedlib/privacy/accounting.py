"""Differential-privacy accounting (σ ↔ ε), the paper's DP settings, a per-hospital ledger, and an ε explorer.

References:
    Abadi et al., "Deep Learning with Differential Privacy", CCS 2016 (DP-SGD, moments accountant).
    Mironov, "Rényi Differential Privacy", CSF 2017 (the "rdp" accountant).
    Gopi, Lee & Wutschitz, "Numerical Composition of Differential Privacy", NeurIPS 2021 (the "prv" accountant).
    Balle & Wang, "Improving the Gaussian Mechanism for DP: Analytical Calibration", ICML 2018, and
    Dong, Roth & Su, "Gaussian Differential Privacy", JRSS-B 2022 (exact ε of composed, unsampled Gaussians).
    Dwork & Roth, "The Algorithmic Foundations of DP", 2014, Thm A.1 (the classic σ formula, valid for ε < 1).
    McMahan et al., "Learning Differentially Private Recurrent Language Models", ICLR 2018 (client-level DP).
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

from scipy import optimize, special

# The paper's claim: "local DP, clip 7, ε = 6, δ = 1.9e-4" (Fares & Saad 2024, and LocalDpMod in their code).
PAPER_EPSILON, PAPER_DELTA, PAPER_CLIP, PAPER_SENSITIVITY, PAPER_ROUNDS = 6.0, 1.9e-4, 7.0, 1.0, 50
ACCOUNTANTS = ("prv", "rdp")
# A noise multiplier above this drowns any gradient (noise 1000× the clip norm per step): treat as unreachable.
MAX_NOISE_MULTIPLIER = 1e3


def _check_epsilon(epsilon: float) -> None:
    if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon!r}")


def _check_delta(delta: float) -> None:
    if not (isinstance(delta, (int, float)) and 0 < delta < 1):
        raise ValueError(f"delta must lie in (0, 1) — typically below 1/n for n records — got {delta!r}")


def _check_sampling(sample_rate: float, steps: int) -> None:
    if not (isinstance(sample_rate, (int, float)) and 0 < sample_rate <= 1):
        raise ValueError(f"sample_rate must lie in (0, 1] (batch size / records, or clients per round / "
                         f"clients), got {sample_rate!r}")
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")


def _check_accountant(accountant: str) -> None:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant {accountant!r}: choose one of {ACCOUNTANTS}")


def gaussian_sigma(epsilon: float, delta: float, sensitivity: float = 1.0) -> float:
    """The classic Gaussian mechanism's σ = sensitivity·√(2 ln(1.25/δ))/ε — what Flower's LocalDpMod uses.

    Proven (ε, δ)-DP only for ε < 1; at ε = 6 it is a formula, not a guarantee. No composition.

    >>> round(gaussian_sigma(6.0, 1.9e-4), 4)
    0.6989
    """
    _check_epsilon(epsilon)
    _check_delta(delta)
    if not sensitivity > 0:
        raise ValueError(f"sensitivity must be > 0, got {sensitivity!r}")
    return sensitivity * math.sqrt(2 * math.log(1.25 / delta)) / epsilon


def _gdp_delta(epsilon: float, mu: float) -> float:
    # Dong et al. 2022, Cor. 2.13: δ(ε) of μ-GDP; the second term in log space so ε in the thousands works.
    return special.ndtr(-epsilon / mu + mu / 2) - math.exp(epsilon + special.log_ndtr(-epsilon / mu - mu / 2))


def _gdp_epsilon(mu: float, delta: float) -> float:
    if _gdp_delta(0.0, mu) <= delta:
        return 0.0
    high = mu * mu / 2 + 10 * mu + 10  # δ(high) < 1e-20 for every μ: a bracket that always holds
    return float(optimize.brentq(lambda e: _gdp_delta(e, mu) - delta, 0.0, high, xtol=1e-10, rtol=1e-12))


def gaussian_epsilon(noise_multiplier: float, delta: float, compositions: int = 1) -> float:
    """Exact ε of `compositions` Gaussian mechanisms without subsampling (noise std = multiplier × sensitivity).

    k such releases compose to one Gaussian with multiplier z/√k (μ-GDP with μ = √k/z), whose exact
    (ε, δ) curve is the analytic Gaussian mechanism's. This is the tight answer the accountants approximate.

    >>> round(gaussian_epsilon(1.0, 1e-5), 3)
    4.377
    """
    _check_delta(delta)
    _check_sampling(1.0, compositions)
    if noise_multiplier == 0:
        return math.inf
    if not noise_multiplier > 0:
        raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier!r}")
    return _gdp_epsilon(math.sqrt(compositions) / noise_multiplier, delta)


def history_epsilon(history: list[tuple[float, float, int]], delta: float, accountant: str) -> float:
    """ε of a sequence of (noise multiplier, sample rate, steps) subsampled-Gaussian mechanisms."""
    if any(z == 0 for z, _, _ in history):
        return math.inf  # a release without noise has no finite ε
    if all(q == 1 for _, q, _ in history):
        # Unsampled Gaussians compose exactly (μ² adds up); PRV's grid returns inf for z ≪ 1 here.
        return _gdp_epsilon(math.sqrt(sum(steps / z ** 2 for z, _, steps in history)), delta)
    return opacus_epsilon(history, delta, accountant)


def _memoize_opacus_rdp() -> None:
    """Cache Opacus' RDP of one subsampled-Gaussian step, a pure function of (q, z, α): both accountants
    recompute it in pure Python on every ε query, ≈ 70 % of a PRV ε (0.2–0.8 s), every round, per hospital."""
    from opacus.accountants.analysis import rdp

    if not hasattr(rdp._compute_rdp, "cache_info"):
        rdp._compute_rdp = functools.lru_cache(maxsize=2 ** 16)(rdp._compute_rdp)


def opacus_epsilon(history: list[tuple[float, float, int]], delta: float, accountant: str = "prv") -> float:
    """ε of a (noise multiplier, sample rate, steps) history straight from Opacus' accountant, no shortcut."""
    from opacus.accountants import PRVAccountant, RDPAccountant

    _memoize_opacus_rdp()

    acc = PRVAccountant() if accountant == "prv" else RDPAccountant()
    acc.history = list(history)
    with warnings.catch_warnings():  # RDP warns when its best order is the largest one tried; ε is still valid
        warnings.simplefilter("ignore")
        return float(acc.get_epsilon(delta))


def epsilon(noise_multiplier: float, delta: float, sample_rate: float, steps: int, accountant: str = "prv") -> float:
    """ε spent by `steps` Poisson-subsampled Gaussian steps (sample rate q, noise std z × clip).

    With sample_rate 1 the answer is exact (`gaussian_epsilon`) for either accountant.

    >>> round(epsilon(1.0, 1e-5, sample_rate=0.1, steps=100), 2)
    7.06
    >>> round(epsilon(1.0, 1e-5, sample_rate=0.1, steps=100, accountant="rdp"), 2)
    7.9
    """
    _check_delta(delta)
    _check_sampling(sample_rate, steps)
    _check_accountant(accountant)
    if not noise_multiplier >= 0:
        raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier!r}")
    return history_epsilon([(float(noise_multiplier), float(sample_rate), steps)], delta, accountant)


@functools.lru_cache(maxsize=256)  # pure, and ≈ 10 s of PRV bisection on 2 cores: each process pays it once
# Cached: hospitals of similar size share (q, steps), and each PRV bisection costs seconds.
@functools.lru_cache(maxsize=256)
def noise_multiplier(target_epsilon: float, delta: float, sample_rate: float, steps: int,
                     accountant: str = "prv", tolerance: float = 0.01) -> float:
    """The smallest noise multiplier z (noise std / clip) whose `steps` steps spend at most `target_epsilon`.

    The result spends between target − tolerance and target (Opacus' bisection; exact inversion at q = 1).

    >>> round(noise_multiplier(6.0, 1.9e-4, sample_rate=64 / 2391, steps=5 * 38), 2)
    0.63
    """
    _check_epsilon(target_epsilon)
    _check_delta(delta)
    _check_sampling(sample_rate, steps)
    _check_accountant(accountant)
    unreachable = ValueError(
        f"(ε={target_epsilon}, δ={delta}) over {steps} steps at sample rate {sample_rate} needs a noise multiplier "
        f"above {MAX_NOISE_MULTIPLIER:g}, which drowns all signal: raise ε or δ, or train fewer steps / "
        "sample a smaller fraction per step")
    if sample_rate == 1:
        if _gdp_delta(target_epsilon, 1e-8) > delta:  # not even a near-infinite noise meets δ
            raise unreachable
        mu = optimize.brentq(lambda m: _gdp_delta(target_epsilon, m) - delta, 1e-8, 1e4, xtol=1e-12)
        z = math.sqrt(steps) / mu
        if z > MAX_NOISE_MULTIPLIER:
            raise unreachable
        return z
    if epsilon(MAX_NOISE_MULTIPLIER, delta, sample_rate, steps, accountant) > target_epsilon:
        raise unreachable
    from opacus.accountants.utils import get_noise_multiplier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                          sample_rate=sample_rate, steps=steps, accountant=accountant,
                                          epsilon_tolerance=tolerance))


@dataclass(frozen=True)
class LedgerEntry:
    """One mechanism applied to one hospital's data: `steps` Gaussian steps at noise z, sample rate q."""

    mechanism: str
    noise_multiplier: float
    sample_rate: float
    steps: int


class PrivacyLedger:
    """What each hospital's data has been exposed to, and the ε it has spent so far (at a fixed δ).

    >>> ledger = PrivacyLedger(delta=1e-5)
    >>> ledger.record("h0", "dpsgd", noise_multiplier=1.0, sample_rate=0.1, steps=100)
    >>> round(ledger.epsilon("h0"), 2)
    7.06
    >>> ledger.epsilon("h1")
    0.0
    """

    def __init__(self, delta: float, accountant: str = "prv"):
        _check_delta(delta)
        _check_accountant(accountant)
        self.delta, self.accountant = delta, accountant
        self._entries: dict[str, list[LedgerEntry]] = {}

    def record(self, hospital, mechanism: str, *, noise_multiplier: float, sample_rate: float,
               steps: int) -> None:
        _check_sampling(sample_rate, steps)
        if not noise_multiplier >= 0:
            raise ValueError(f"noise_multiplier must be >= 0 (0 = no noise, ε = inf), got {noise_multiplier!r}")
        entry = LedgerEntry(mechanism, float(noise_multiplier), float(sample_rate), steps)
        self._entries.setdefault(str(hospital), []).append(entry)

    def entries(self, hospital) -> list[LedgerEntry]:
        return list(self._entries.get(str(hospital), []))

    @property
    def hospitals(self) -> list[str]:
        return sorted(self._entries)

    def epsilon(self, hospital) -> float:
        """ε spent by `hospital` over everything recorded (composed by the accountant; 0 if nothing)."""
        history: list[tuple[float, float, int]] = []
        for e in self.entries(hospital):
            if history and history[-1][:2] == (e.noise_multiplier, e.sample_rate):
                history[-1] = (e.noise_multiplier, e.sample_rate, history[-1][2] + e.steps)  # merge repeats
            else:
                history.append((e.noise_multiplier, e.sample_rate, e.steps))
        return history_epsilon(history, self.delta, self.accountant) if history else 0.0

    def summary(self) -> list[dict]:
        return [dict(hospital=h, mechanisms=sorted({e.mechanism for e in self.entries(h)}),
                     steps=sum(e.steps for e in self.entries(h)), epsilon=self.epsilon(h), delta=self.delta)
                for h in self.hospitals]


MODES = ("none", "dpsgd", "update_ldp", "client_level")
# Where the noise is added, per mode: the first is the default.
PLACEMENTS = {"none": ("none",), "dpsgd": ("local",), "update_ldp": ("local",),
              "client_level": ("central", "distributed")}


@dataclass(frozen=True)
class DPConfig:
    """Which DP interpretation a run uses, with the paper's numbers as defaults.

    mode: 'none' | 'dpsgd' (record-level, as claimed) | 'update_ldp' (as coded) | 'client_level'
    (DP-FedAvg). `drop_noise=True` (update_ldp only) REPRODUCES A BUG of Flower < 1.14: noise computed,
    never applied. `min_survivors` (distributed only): clients add enough noise for this many survivors.
    """

    mode: str = "none"
    epsilon: float = PAPER_EPSILON
    delta: float = PAPER_DELTA
    clip: float = PAPER_CLIP
    noise_placement: str | None = None
    drop_noise: bool = False
    sensitivity: float = PAPER_SENSITIVITY
    min_survivors: int | None = None
    accountant: str = "prv"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown DP mode {self.mode!r}: choose one of {MODES}")
        if self.noise_placement is None:
            object.__setattr__(self, "noise_placement", PLACEMENTS[self.mode][0])
        if self.noise_placement not in PLACEMENTS[self.mode]:
            raise ValueError(f"noise_placement {self.noise_placement!r} does not fit mode {self.mode!r}: "
                             f"use one of {PLACEMENTS[self.mode]}")
        if self.mode != "none":
            _check_epsilon(self.epsilon)
            _check_delta(self.delta)
            if not self.clip > 0:
                raise ValueError(f"clip must be > 0, got {self.clip!r}")
        if self.drop_noise and self.mode != "update_ldp":
            raise ValueError("drop_noise reproduces Flower < 1.14's LocalDpMod bug: only mode='update_ldp' has it")
        if self.min_survivors is not None and (self.noise_placement != "distributed" or self.min_survivors < 1):
            raise ValueError("min_survivors (>= 1) applies only to noise_placement='distributed'")
        _check_accountant(self.accountant)


def explore(epsilons, *, deltas=(PAPER_DELTA,), rounds=(PAPER_ROUNDS,), clients=(10,), clip: float = PAPER_CLIP,
            n_parameters: int = 4_802_120, sensitivity: float = PAPER_SENSITIVITY) -> list[dict]:
    """For each (ε, δ, rounds, clients): the as-coded σ, its noise-to-signal, the ε it really spends, and
    the client-level DP-FedAvg alternative (all clients every round) — rows for a table or a slider.

    noise_to_signal = ‖noise‖ / clip ≈ σ√d / C for one update; client-level noise is on the mean of n.
    """
    rows = []
    for eps in epsilons:
        for delta in deltas:
            sigma = gaussian_sigma(eps, delta, sensitivity)
            for r in rounds:
                z_coded = sigma / clip  # true noise multiplier: the update's sensitivity is the clip norm
                z_client = noise_multiplier(eps, delta, sample_rate=1.0, steps=r)
                for n in clients:
                    rows.append(dict(
                        epsilon=eps, delta=delta, rounds=r, clients=n, sigma=sigma,
                        noise_to_signal=sigma * math.sqrt(n_parameters) / clip,
                        real_epsilon_per_round=gaussian_epsilon(z_coded, delta),
                        real_epsilon_composed=gaussian_epsilon(z_coded, delta, r),
                        client_level_noise_multiplier=z_client,
                        client_level_noise_to_signal=z_client * math.sqrt(n_parameters) / n))
    return rows


def explain_epsilon(epsilon: float = PAPER_EPSILON, delta: float = PAPER_DELTA, rounds: int = PAPER_ROUNDS) -> str:
    """One line for the ε slider: the as-coded σ, its noise-to-signal and the ε it really spends; printed too."""
    row = explore([epsilon], deltas=(delta,), rounds=(rounds,), clients=(10,))[0]
    line = (f"σ = {row['sigma']:.3f}   noise/signal = {row['noise_to_signal']:.0f}   real ε per round = "
            f"{row['real_epsilon_per_round']:.1f}   over {rounds} rounds = {row['real_epsilon_composed']:.0f}")
    print(line)
    return line
