"""Distributed DP under secure aggregation: each hospital adds a share of integer Skellam noise to its quantized
clipped-gradient sum, so that the secure sum carries the noise of one centralized DP-SGD step — and no more.

The guarantee covers what SecAgg+ really sums: integers mod 2^m. A hospital scales its clipped sum by 1/γ
(γ = C / 2^scale_bits), rounds it stochastically to integers and adds Skellam noise Sk(μ_share) = Poisson(μ/2) −
Poisson(μ/2); independent Skellams add up to a Skellam, so the survivors' shares sum to exactly Sk(Σ μ_share).

Sensitivity in the integer domain. One record moves its hospital's scaled sum by ≤ 2^scale_bits in L2. Coupling
the two roundings with the same uniforms moves each coordinate by less than 1 more, so the integer sums differ by
Δ2 ≤ 2^scale_bits + √d (Kairouz et al. 2021, Thm 1's unconditional bound), and Δ1 ≤ min(√d·Δ2, Δ2²)
(integers).
Rényi DP of the Skellam mechanism (Agarwal et al. 2021, Thm 3.5 / Cor. 3.6), μ = variance, integer α > 1:
    ε(α) ≤ α Δ2² / (2μ) + min(((2α − 1) Δ2² + 6 Δ1) / (4μ²), 3 Δ1 / (2μ)).
Poisson subsampling of records at rate q, for any mechanism's RDP curve at integer orders, by one of two bounds
(`BOUNDS`): Zhu & Wang's general upper bound (2019, Thm 5; the book's first runs) or Steinke's (2022) bound for
add/remove neighbours, the same binomial expansion without Zhu & Wang's factor 3 (exactly the sampled-Gaussian
RDP for a Gaussian: the tests check it against dp-accounting). Composition adds RDP; (ε, δ) by Balle et al.'s
conversion (2020), as in Opacus.

Dropouts and collusion: shares are sized for the worst case the run accepts — `min_survivors` hospitals left, of
which `colluding` share their noise with the server — so μ_share = μ / (min_survivors − colluding). Fewer
survivors than that, and the round must abort (SecAgg+ aborts below its threshold, which is set to min_survivors).

The wrap-around mod 2^m loses no privacy (it is a function of the integer sum), only accuracy; `wrap_bound`
bounds its probability from the worst-case signal (every record sampled) and a Bernstein tail of the noise.

References:
    Agarwal, Kairouz & Liu, "The Skellam Mechanism for Differentially Private Federated Learning", NeurIPS 2021,
    arXiv 2110.04995.
    Kairouz, Liu & Steinke, "The Distributed Discrete Gaussian Mechanism for Federated Learning with Secure
    Aggregation", ICML 2021, arXiv 2102.06387 (stochastic rounding's sensitivity bound, distributed noise).
    Heikkilä et al., "Differentially Private Cross-Silo Federated Learning", arXiv 2007.05553 (2020).
    Zhu & Wang, "Poisson Subsampled Rényi Differential Privacy", ICML 2019 (Thm 5, general upper bound).
    Steinke, "Composition of Differential Privacy & Privacy Amplification by Subsampling", arXiv 2210.00597 (2022)
    (RDP amplification by Poisson subsampling under addition and removal).
    Mironov, Talwar & Zhang, "Rényi Differential Privacy of the Sampled Gaussian Mechanism", arXiv 1908.10530.
    Balle et al., "Hypothesis Testing Interpretations and Rényi DP", AISTATS 2020 (RDP → (ε, δ)).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

ORDERS = tuple(range(2, 65)) + tuple(range(72, 257, 8)) + (320, 384, 512)


def skellam_rdp(orders, mu: float, l2: float, l1: float) -> np.ndarray:
    """RDP ε(α) of the Skellam mechanism with variance `mu` for integer vectors of sensitivities l2 (L2), l1 (L1)."""
    a = np.asarray(orders, dtype=np.float64)
    return a * l2 ** 2 / (2 * mu) + np.minimum(((2 * a - 1) * l2 ** 2 + 6 * l1) / (4 * mu ** 2), 3 * l1 / (2 * mu))


def gaussian_rdp(orders, noise_multiplier: float) -> np.ndarray:
    """RDP of the Gaussian mechanism at sensitivity 1: α / (2 z²)."""
    return np.asarray(orders, dtype=np.float64) / (2 * noise_multiplier ** 2)


BOUNDS = {
    "general": "Zhu & Wang (2019), Thm 5: the general Poisson-subsampling upper bound (a factor 3 on the terms of "
               "order >= 3, for both neighbouring directions)",
    "tight": "Steinke (2022), the Poisson-subsampling RDP bound for add/remove neighbours: the binomial expansion "
             "of Zhu & Wang's tight bound without the factor 3 (for the Gaussian it is Mironov et al.'s exact "
             "sampled-Gaussian RDP)",
}


def subsampled_rdp(orders, q: float, base: np.ndarray, bound: str = "general") -> np.ndarray:
    """RDP of a mechanism with RDP `base` (at the integer `orders`, which must hold 2..max(orders)) run on a
    Poisson sample at rate q; never worse than `base` itself. `bound`: one of BOUNDS.

    general: Zhu & Wang (2019) Thm 5, whose factor 3 on the terms of order ≥ 3 leaves a floor that no amount of
    noise removes (at small ε it asks for ten times the noise). tight: (1/(α−1)) log[(1−q)^(α−1)(1 + (α−1)q) +
    Σ_{k=2..α} C(α,k) q^k (1−q)^(α−k) e^((k−1)ε(k))] (Steinke 2022, Poisson subsampling for RDP under addition
    and removal), which for the Gaussian is exactly the sampled-Gaussian RDP of Mironov et al. (2019).
    """
    if bound not in BOUNDS:
        raise ValueError(f"unknown subsampling bound {bound!r}: choose one of {sorted(BOUNDS)}")
    orders = [int(a) for a in orders]
    if any(a < 2 for a in orders) or not 0 < q <= 1:
        raise ValueError(f"need integer orders >= 2 and 0 < q <= 1, got orders from {min(orders)} and q={q}")
    eps = dict(zip(orders, np.asarray(base, dtype=np.float64)))
    if q == 1:
        return np.asarray(base, dtype=np.float64)
    missing = sorted(set(range(2, max(orders) + 1)) - set(eps))
    if missing:  # RDP is non-decreasing in α: fill the gaps from the next order given (an upper bound)
        given = sorted(eps)
        for a in missing:
            eps[a] = eps[next(g for g in given if g > a)]
    log_q, log_1q = math.log(q), math.log1p(-q)
    out = []
    for a in orders:
        ls = np.arange(3, a + 1)
        terms = [(a - 1) * log_1q + math.log(a * q - q + 1),
                 special.gammaln(a + 1) - special.gammaln(3) - special.gammaln(a - 1) + 2 * log_q
                 + (a - 2) * log_1q + eps[2]]
        if len(ls):
            log_comb = special.gammaln(a + 1) - special.gammaln(ls + 1) - special.gammaln(a - ls + 1)
            e = np.array([eps[int(v)] for v in ls])
            factor = math.log(3) if bound == "general" else 0.0
            terms += list(factor + log_comb + (a - ls) * log_1q + ls * log_q + (ls - 1) * e)
        out.append(min(special.logsumexp(terms) / (a - 1), eps[a]))
    return np.asarray(out)


def rdp_to_epsilon(orders, rdp, delta: float) -> float:
    """(ε, δ) from RDP at several orders: Balle et al. (2020) Thm 21, the conversion Opacus' RDP accountant uses."""
    a, r = np.asarray(orders, dtype=np.float64), np.asarray(rdp, dtype=np.float64)
    eps = r + np.log1p(-1 / a) - (math.log(delta) + np.log(a)) / (a - 1)
    return float(max(0.0, np.nanmin(eps)))


@dataclass(frozen=True)
class SkellamPlan:
    """Every number of one run of distributed Skellam DP-SGD, fixed before the first round.

    n_hospitals: hospitals asked each round; min_survivors: the fewest whose noise must be in the sum (the
    SecAgg+ threshold); colluding: hospitals assumed to reveal their own shares to the server; clip: C;
    scale_bits: C/γ = 2^scale_bits integer levels per clip norm; dim: parameters; sample_rate: q (the same in every
    hospital); steps: rounds (one DP-SGD step each); n_records: records in all hospitals (the wrap bound's worst
    case); modulus_bits: SecAgg+'s modulus 2^m.
    """

    n_hospitals: int
    min_survivors: int
    clip: float
    dim: int
    sample_rate: float
    steps: int
    epsilon: float
    delta: float
    n_records: int
    colluding: int = 0
    scale_bits: int = 16
    modulus_bits: int = 32
    bound: str = "general"

    def __post_init__(self):
        errors = []
        if not 1 <= self.min_survivors <= self.n_hospitals:
            errors.append(f"min_survivors must lie in [1, n_hospitals={self.n_hospitals}], got {self.min_survivors}")
        if not 0 <= self.colluding < self.min_survivors:
            errors.append(f"colluding must lie in [0, min_survivors={self.min_survivors}), got {self.colluding}: "
                          "at least one honest survivor's noise must remain")
        if not (self.clip > 0 and self.dim >= 1 and 0 < self.sample_rate <= 1 and self.steps >= 1):
            errors.append(f"need clip > 0, dim >= 1, 0 < sample_rate <= 1, steps >= 1; got clip={self.clip}, "
                          f"dim={self.dim}, sample_rate={self.sample_rate}, steps={self.steps}")
        if not (self.epsilon > 0 and math.isfinite(self.epsilon) and 0 < self.delta < 1):
            errors.append(f"need a finite epsilon > 0 and delta in (0, 1), got {self.epsilon}, {self.delta}")
        if not 1 <= self.scale_bits <= 40 or self.modulus_bits not in (32, 64):
            errors.append(f"scale_bits must lie in [1, 40] and modulus_bits be 32 or 64, got {self.scale_bits}, "
                          f"{self.modulus_bits}")
        if self.bound not in BOUNDS:
            errors.append(f"bound must be one of {sorted(BOUNDS)}, got {self.bound!r}")
        if errors:
            raise ValueError("invalid SkellamPlan: " + "; ".join(errors))
        margin = 2 ** (self.modulus_bits - 1) - self.signal_bound
        if margin <= 0:
            raise ValueError(f"{self.n_records} records × 2^{self.scale_bits} levels can reach "
                             f"{self.signal_bound:.3g} > 2^{self.modulus_bits - 1}: the integer sum could wrap "
                             f"mod 2^{self.modulus_bits}; lower scale_bits or use modulus_bits=64")

    @property
    def gamma(self) -> float:
        """Width of one integer level in gradient units: γ = C / 2^scale_bits."""
        return self.clip / 2 ** self.scale_bits

    @property
    def l2_sensitivity(self) -> float:
        """Δ2 in integer levels: one record's clipped gradient (2^scale_bits) plus stochastic rounding (√d)."""
        return 2.0 ** self.scale_bits + math.sqrt(self.dim)

    @property
    def l1_sensitivity(self) -> float:
        return min(math.sqrt(self.dim) * self.l2_sensitivity, self.l2_sensitivity ** 2)

    @property
    def signal_bound(self) -> float:
        """Largest |coordinate| of the sum of rounded scaled sums: every record sampled, each adding ≤ 2^bits,
        plus < 1 rounding level per hospital."""
        return self.n_records * 2.0 ** self.scale_bits + self.n_hospitals

    def epsilon_for(self, mu: float, steps: int | None = None) -> float:
        """ε after `steps` rounds (default: all) when the honest survivors' noise has variance `mu` (levels²)."""
        return _skellam_epsilon(self.sample_rate, float(mu), self.l2_sensitivity, self.l1_sensitivity,
                                self.steps if steps is None else int(steps), self.delta, self.bound)

    @functools.cached_property
    def mu(self) -> float:
        """The smallest total variance (integer levels²) whose Skellam sum spends ≤ ε over all steps."""
        return _calibrate(self)

    @property
    def share_variance(self) -> float:
        """Each hospital's Skellam variance: the minimum honest survivors together reach μ."""
        return self.mu / (self.min_survivors - self.colluding)

    @property
    def noise_multiplier(self) -> float:
        """z = noise std on the sum / C, in gradient units (what a centralized DP-SGD step with this noise uses)."""
        return math.sqrt(self.mu) * self.gamma / self.clip

    @property
    def gaussian_equivalent(self) -> float:
        """The Gaussian noise multiplier with the same variance per unit of integer sensitivity: √μ / Δ2."""
        return math.sqrt(self.mu) / self.l2_sensitivity

    def noise_std(self, survivors: int) -> float:
        """Std (gradient units) of the noise on the sum when `survivors` hospitals send their shares."""
        return math.sqrt(survivors * self.share_variance) * self.gamma

    @property
    def dropout_overhead(self) -> float:
        """Noise std with everyone surviving over the std the guarantee needs (≥ 1; 1 = no dropout slack)."""
        return math.sqrt(self.n_hospitals / (self.min_survivors - self.colluding))

    def wrap_bound(self) -> float:
        """An upper bound on the probability that any coordinate of any round wraps mod 2^m (all survive)."""
        t = 2.0 ** (self.modulus_bits - 1) - self.signal_bound
        v = self.n_hospitals * self.share_variance
        # Bernstein (a Skellam is a limit of sums of independent ±1 steps): P(|Z| ≥ t) ≤ 2 exp(−t²/(2(v + t/3)))
        log_p = math.log(2 * self.dim * self.steps) - t * t / (2 * (v + t / 3))
        return math.exp(log_p) if log_p < 0 else 1.0

    def describe(self) -> dict:
        """What an auditor needs to recompute ε, and what the run paid for it."""
        from . import accounting

        z = self.gaussian_equivalent
        return dict(mechanism="distributed_skellam", accountant="skellam_rdp", subsampling_bound=self.bound,
                    subsampling_bound_source=BOUNDS[self.bound], epsilon_target=self.epsilon,
                    delta=self.delta, sample_rate=self.sample_rate, steps=self.steps, clip=self.clip,
                    dim=self.dim, scale_bits=self.scale_bits, modulus_bits=self.modulus_bits,
                    gamma=self.gamma, l2_sensitivity=self.l2_sensitivity, l1_sensitivity=self.l1_sensitivity,
                    mu=self.mu, noise_multiplier=self.noise_multiplier, gaussian_equivalent_noise_multiplier=z,
                    n_hospitals=self.n_hospitals, min_survivors=self.min_survivors, colluding=self.colluding,
                    share_variance=self.share_variance, dropout_overhead=self.dropout_overhead,
                    epsilon_skellam=self.epsilon_for(self.mu),
                    # the same Gaussian through the same subsampling bound: isolates what discreteness costs
                    epsilon_gaussian_generic_bound=rdp_to_epsilon(
                        ORDERS, subsampled_rdp(ORDERS, self.sample_rate, gaussian_rdp(ORDERS, z), self.bound)
                        * self.steps, self.delta),
                    epsilon_gaussian_rdp=accounting.epsilon(z, self.delta, self.sample_rate, self.steps, "rdp"),
                    epsilon_gaussian_prv=accounting.epsilon(z, self.delta, self.sample_rate, self.steps, "prv"),
                    wrap_probability_bound=self.wrap_bound(), n_records=self.n_records)


@functools.lru_cache(maxsize=512)
def _skellam_epsilon(q: float, mu: float, l2: float, l1: float, steps: int, delta: float,
                     bound: str = "general") -> float:
    rdp = subsampled_rdp(ORDERS, q, skellam_rdp(ORDERS, mu, l2, l1), bound) * steps
    return rdp_to_epsilon(ORDERS, rdp, delta)


@functools.lru_cache(maxsize=256)
def _calibrate(plan: SkellamPlan) -> float:
    # Search z = √μ / Δ2 (the Gaussian-like multiplier) on a log scale: ε falls monotonically as μ grows.
    def excess(log_z):
        return plan.epsilon_for((math.exp(log_z) * plan.l2_sensitivity) ** 2) - plan.epsilon

    low, high = math.log(0.05), math.log(1e3)
    if excess(high) > 0:
        raise ValueError(f"(ε={plan.epsilon}, δ={plan.delta}) over {plan.steps} steps at q={plan.sample_rate} "
                         "needs a noise multiplier above 1000: raise ε or train fewer steps")
    if excess(low) <= 0:
        return (math.exp(low) * plan.l2_sensitivity) ** 2
    log_z = optimize.brentq(excess, low, high, xtol=1e-6)
    z = math.exp(log_z) * (1 + 1e-6)  # the side of the root that spends at most ε
    return (z * plan.l2_sensitivity) ** 2


def skellam_noise(size: int, variance: float, rng: np.random.Generator) -> np.ndarray:
    """Integer Skellam noise Poisson(v/2) − Poisson(v/2): mean 0, variance v, int64."""
    if not variance > 0:
        raise ValueError(f"Skellam variance must be > 0, got {variance!r}: a hospital that adds no noise share "
                         "leaves the sum under-noised")
    return rng.poisson(variance / 2, size) - rng.poisson(variance / 2, size)


@dataclass(frozen=True)
class ShareReceipt:
    """What a hospital declares with its masked input: the noise variance it added (levels²)."""

    hospital: int
    share_variance: float


def encode(clipped_sum: np.ndarray, plan: SkellamPlan, rng: np.random.Generator,
           hospital: int = 0, share_variance: float | None = None) -> tuple[np.ndarray, ShareReceipt]:
    """A hospital's SecAgg+ input: round(clipped_sum / γ) stochastically, plus its Skellam share, mod 2^m.

    `share_variance` defaults to the plan's; anything else (e.g. 0, a hospital skipping its noise) is recorded
    in the receipt, and `check_round` refuses the round."""
    v = np.asarray(clipped_sum, dtype=np.float64) / plan.gamma
    if v.shape != (plan.dim,) or not np.all(np.isfinite(v)):
        raise ValueError(f"clipped_sum must be {plan.dim} finite floats, got shape {v.shape}")
    levels = np.floor(v + rng.random(v.shape)).astype(np.int64)  # unbiased: rounds up with prob frac(v)
    variance = plan.share_variance if share_variance is None else float(share_variance)
    if variance > 0:
        levels += skellam_noise(plan.dim, variance, rng)
    dtype = np.uint32 if plan.modulus_bits == 32 else np.uint64
    return levels.astype(dtype), ShareReceipt(int(hospital), variance)  # two's complement = mod 2^m


def decode(total: np.ndarray, plan: SkellamPlan) -> np.ndarray:
    """The noisy sum in gradient units from SecAgg+'s sum mod 2^m (lifted to (−2^{m−1}, 2^{m−1}])."""
    signed = np.asarray(total).astype(np.int32 if plan.modulus_bits == 32 else np.int64)
    return signed.astype(np.float64) * plan.gamma


def check_round(receipts: list[ShareReceipt], plan: SkellamPlan) -> None:
    """Refuse a round whose released sum would carry less noise than the guarantee was calibrated for."""
    short = [r.hospital for r in receipts if r.share_variance < plan.share_variance * (1 - 1e-12)]
    if short:
        raise ValueError(f"hospital(s) {short} added less than the calibrated noise share "
                         f"({plan.share_variance:.4g} levels²): the sum would be under-noised, so the round is "
                         "refused")
    if len(receipts) < plan.min_survivors:
        raise ValueError(f"only {len(receipts)} hospitals survived but the noise was calibrated for at least "
                         f"{plan.min_survivors}: releasing this sum would break the guarantee, so the round aborts")
