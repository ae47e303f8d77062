"""How well an attack did: ROC, AUC, TPR at a fixed FPR, an audited ε lower bound, and PSNR / SSIM of images.

References:
    Carlini et al., "Membership Inference Attacks From First Principles", IEEE S&P 2022 (report TPR at low FPR,
    on log-log ROC curves, not only AUC).
    Jagielski, Ullman & Oprea, "Auditing Differentially Private Machine Learning", NeurIPS 2020, and
    Nasr et al., "Adversary Instantiation: Lower Bounds for Differentially Private ML", IEEE S&P 2021
    (ε ≥ ln((TPR − δ) / FPR) with Clopper–Pearson intervals).
    Wang, Bovik, Sheikh & Simoncelli, "Image Quality Assessment: From Error Visibility to Structural
    Similarity", IEEE TIP 2004 (SSIM: 11×11 Gaussian window, σ = 1.5, K1 = 0.01, K2 = 0.03).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats
from torch.nn import functional as F


def _scores_and_labels(scores, members) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    members = np.asarray(members).reshape(-1)
    if len(scores) != len(members):
        raise ValueError(f"scores has {len(scores)} entries but members has {len(members)}: give one "
                         "membership label per score")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite numbers (replace inf/NaN, e.g. clip the loss before scoring)")
    if not np.isin(members, (0, 1, False, True)).all():
        raise ValueError("members must hold only True/False (or 1/0): True = the point was in the training set")
    members = members.astype(bool)
    if members.all() or not members.any():
        raise ValueError("members must contain both members (True) and non-members (False) to draw a ROC curve")
    return scores, members


def roc_curve(scores, members) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(FPR, TPR, thresholds) of the rule "member if score ≥ threshold", over every distinct threshold.

    The curve starts at (0, 0) with threshold +inf and ends at (1, 1).

    >>> fpr, tpr, _ = roc_curve([0.9, 0.8, 0.3, 0.1], [True, False, True, False])
    >>> fpr.tolist(), tpr.tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    scores, members = _scores_and_labels(scores, members)
    order = np.argsort(-scores, kind="stable")
    s, m = scores[order], members[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # all tied scores flip together
    tp, fp = np.cumsum(m)[last_of_tie], np.cumsum(~m)[last_of_tie]
    tpr = np.r_[0.0, tp / m.sum()]
    fpr = np.r_[0.0, fp / (~m).sum()]
    return fpr, tpr, np.r_[np.inf, s[last_of_tie]]


def auc(fpr, tpr) -> float:
    """Area under a ROC curve (trapezoids: ties count half, as a random tie-break would)."""
    fpr, tpr = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def roc_auc(scores, members) -> float:
    """AUC of the attack: the chance a random member scores above a random non-member (0.5 = guessing)."""
    fpr, tpr, _ = roc_curve(scores, members)
    return auc(fpr, tpr)


def tpr_at_fpr(scores, members, fpr: float) -> float:
    """The highest TPR of any threshold whose FPR is at most `fpr` (no interpolation: an achievable rate).

    >>> tpr_at_fpr([0.9, 0.8, 0.3, 0.1], [True, False, True, False], 0.5)
    1.0
    """
    if not (isinstance(fpr, (int, float)) and 0 < fpr < 1):
        raise ValueError(f"fpr must lie strictly between 0 and 1 (e.g. 0.01 for 1 %), got {fpr!r}")
    curve_fpr, curve_tpr, _ = roc_curve(scores, members)
    return float(curve_tpr[curve_fpr <= fpr + 1e-12].max())


def tpr_on_grid(scores, members, grid) -> list[float]:
    """`tpr_at_fpr` at every FPR of `grid`: a compact ROC curve to store in a result file."""
    curve_fpr, curve_tpr, _ = roc_curve(scores, members)
    return [float(curve_tpr[curve_fpr <= f + 1e-12].max()) for f in grid]


def clopper_pearson(successes: int, trials: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact two-sided (1 − alpha) confidence interval of a binomial proportion.

    >>> clopper_pearson(0, 10, 0.05)[0]
    0.0
    """
    if not (0 <= successes <= trials and trials >= 1):
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got {successes} of {trials}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    low = 0.0 if successes == 0 else float(stats.beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(stats.beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return low, high


def _epsilon_from_counts(tp, fp, n_in: int, n_out: int, delta: float, alpha: float) -> np.ndarray:
    """ε proven by tests with `tp` of `n_in` members and `fp` of `n_out` non-members flagged (arrays)."""
    tp, fp = np.asarray(tp, dtype=np.float64), np.asarray(fp, dtype=np.float64)
    # Each rate gets a one-sided (1 − alpha/2) Clopper–Pearson bound: both hold together w.p. >= 1 − alpha.
    tpr_low = np.where(tp > 0, stats.beta.ppf(alpha / 2, np.maximum(tp, 1), n_in - tp + 1), 0.0)
    fpr_high = np.where(fp < n_out, stats.beta.ppf(1 - alpha / 2, fp + 1, np.maximum(n_out - fp, 1)), 1.0)
    # DP implies TPR <= e^ε FPR + δ and, for the complementary test, TNR <= e^ε FNR + δ.
    with np.errstate(divide="ignore", invalid="ignore"):
        direct = np.log((tpr_low - delta) / fpr_high)
        complement = np.log((1 - fpr_high - delta) / (1 - tpr_low))
    direct = np.where((tpr_low > delta) & (fpr_high > 0), direct, 0.0)
    complement = np.where((1 - fpr_high > delta) & (tpr_low < 1), complement, 0.0)
    return np.maximum(np.maximum(direct, complement), 0.0)


def epsilon_lower_bound(scores, members, delta: float, *, threshold: float, alpha: float = 0.05) -> dict:
    """The ε that the test "member if score ≥ threshold" proves with confidence 1 − alpha.

    Any (ε, δ)-DP training algorithm forces TPR ≤ e^ε·FPR + δ for every test; with the rates' Clopper–Pearson
    bounds this gives ε ≥ ln((TPR_low − δ) / FPR_high) (and the same for the complementary test).
    The threshold must be chosen on other data than `scores` (see `audit_epsilon`), or the bound is optimistic.
    """
    scores, members = _scores_and_labels(scores, members)
    if not 0 <= delta < 1:
        raise ValueError(f"delta must lie in [0, 1), got {delta!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    guess = scores >= threshold
    tp, fp = int((guess & members).sum()), int((guess & ~members).sum())
    n_in, n_out = int(members.sum()), int((~members).sum())
    eps = float(_epsilon_from_counts(tp, fp, n_in, n_out, delta, alpha))
    return dict(epsilon_lb=eps, threshold=float(threshold), tpr=tp / n_in, fpr=fp / n_out, n_members=n_in,
                n_nonmembers=n_out, alpha=alpha, delta=delta)


def audit_epsilon(calibration_scores, calibration_members, scores, members, delta: float,
                  alpha: float = 0.05) -> dict:
    """Choose the threshold that proves the most ε on the calibration set, then prove ε on held-out data."""
    cal_scores, cal_members = _scores_and_labels(calibration_scores, calibration_members)
    fpr, tpr, thresholds = roc_curve(cal_scores, cal_members)
    n_in, n_out = int(cal_members.sum()), int((~cal_members).sum())
    eps = _epsilon_from_counts(np.rint(tpr * n_in), np.rint(fpr * n_out), n_in, n_out, delta, alpha)
    best = int(np.argmax(eps[1:])) + 1  # index 0 is the empty test (threshold +inf)
    return dict(epsilon_lower_bound(scores, members, delta, threshold=float(thresholds[best]), alpha=alpha),
                calibration_epsilon_lb=float(eps[best]))


def psnr(reconstruction: torch.Tensor, original: torch.Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB (higher = closer; identical images give inf)."""
    if reconstruction.shape != original.shape:
        raise ValueError(f"images differ in shape: {tuple(reconstruction.shape)} vs {tuple(original.shape)}")
    mse = float(torch.mean((reconstruction.double() - original.double()) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(data_range ** 2 / mse)


def _gaussian_window(size: int, sigma: float, channels: int) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(reconstruction: torch.Tensor, original: torch.Tensor, data_range: float = 1.0,
         window: int = 11, sigma: float = 1.5) -> float:
    """Mean structural similarity of two images (C, H, W) or batches (N, C, H, W) in [0, data_range]; 1 = same.

    Wang et al.'s definition: local means, variances and covariance under a Gaussian window (valid
    positions only), averaged over positions, channels and images.
    """
    if reconstruction.shape != original.shape:
        raise ValueError(f"images differ in shape: {tuple(reconstruction.shape)} vs {tuple(original.shape)}")
    x, y = reconstruction.double(), original.double()
    if x.dim() == 3:
        x, y = x[None], y[None]
    if x.dim() != 4 or min(x.shape[-2:]) < window:
        raise ValueError(f"expected images (C, H, W) or (N, C, H, W) at least {window} pixels wide, got "
                         f"{tuple(reconstruction.shape)}")
    w = _gaussian_window(window, sigma, x.shape[1])
    mean = lambda t: F.conv2d(t, w, groups=x.shape[1])  # noqa: E731 - local filter, used five times
    mu_x, mu_y = mean(x), mean(y)
    var_x, var_y = mean(x * x) - mu_x ** 2, mean(y * y) - mu_y ** 2
    cov = mean(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return float(index.mean())
