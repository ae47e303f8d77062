"""Label-preserving augmentations of blood-cell images, vectorised on device tensors, k copies per sample.

A smear image of one cell has no preferred orientation: flips and quarter turns keep its label, and a shift
of a couple of pixels keeps the cell in frame. Two users: DP-SGD's augmentation multiplicity (k copies of each
sample, averaged before clipping, lowers the variance of each sample's gradient at no privacy cost;
fedmedlib.privacy.fastdp) and the non-private ceiling (k = 1, a fresh copy per step; fedmedlib.ceiling). It sits
at the ground layer so that both use one definition.

References:
    De et al., "Unlocking High-Accuracy Differentially Private Image Classification through Scale", arXiv
    2204.13650 (2022) — augmentation multiplicity.
    Yang et al., "MedMNIST v2", Scientific Data 2023 — BloodMNIST (28×28 RGB, centred single cells).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def augment(x: torch.Tensor, k: int, *, generator: torch.Generator | None = None, shift: int = 2,
            keep_first: bool = False) -> torch.Tensor:
    """k randomly flipped, rotated (multiples of 90°) and shifted (≤ `shift` px, reflect-padded) copies of
    each image of x (B, C, H, W) — returned as (B·k, C, H, W), sample i's copies at rows i·k … i·k + k − 1.

    `keep_first=True` keeps the first copy of every sample unaugmented.
    """
    if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"augment needs square images shaped (B, C, H, W), got {tuple(x.shape)}")
    if int(k) != k or k < 1 or shift < 0:
        raise ValueError(f"need an integer k >= 1 and shift >= 0, got k={k}, shift={shift}")
    k, n, size = int(k), x.shape[0] * int(k), x.shape[-1]
    out = x.repeat_interleave(k, dim=0)
    if n == 0:
        return out
    draw = lambda high: torch.randint(0, high, (n,), generator=generator).to(x.device)  # noqa: E731
    flip, turns, dy, dx = draw(2), draw(4), draw(2 * shift + 1), draw(2 * shift + 1)
    if keep_first:
        first = torch.arange(n, device=x.device) % k == 0
        flip, turns = flip.masked_fill(first, 0), turns.masked_fill(first, 0)
        dy, dx = dy.masked_fill(first, shift), dx.masked_fill(first, shift)
    out = torch.where(flip.bool()[:, None, None, None], out.flip(-1), out)
    rotated = out.clone()
    for t in (1, 2, 3):  # rot90 has no per-sample angle: one call per quarter turn
        sel = turns == t
        if sel.any():
            rotated[sel] = torch.rot90(out[sel], t, dims=(-2, -1))
    if shift == 0:
        return rotated
    padded = F.pad(rotated, (shift,) * 4, mode="reflect")
    rows = (dy[:, None] + torch.arange(size, device=x.device))[:, None, :, None]  # (n, 1, H, 1)
    cols = (dx[:, None] + torch.arange(size, device=x.device))[:, None, None, :]  # (n, 1, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]
