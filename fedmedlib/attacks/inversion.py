"""Gradient inversion: rebuild a hospital's training images from the gradient it shares with the server.

The attacker knows the model it sent (the global weights) and sees one released gradient. It infers the
labels from the last layer's bias gradient (for cross-entropy, ∂L/∂b = mean(p − onehot(y)) is negative
only at the labels present: exact for one image, a heuristic for a few images of distinct classes), then
optimises dummy images so that their gradient points the same way (cosine distance) while a
total-variation prior keeps them image-like; Adam, pixels boxed to the data range, best of a few restarts.

References:
    Zhu, Liu & Han, "Deep Leakage from Gradients", NeurIPS 2019 (DLG).
    Zhao, Mopuri & Bilen, "iDLG: Improved Deep Leakage from Gradients", arXiv 2001.02610 (2020) (labels).
    Geiping, Bauermeister, Dröge & Moeller, "Inverting Gradients — How easy is it to break privacy in
    federated learning?", NeurIPS 2020 (cosine similarity + total variation, Adam, restarts).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .. import data
from . import metrics


@dataclass(frozen=True)
class InversionSettings:
    """Optimiser settings of the attack (chosen on validation images, never on the ones reported)."""

    iterations: int = 600
    lr: float = 0.1
    tv_weight: float = 1e-2
    restarts: int = 2

    def __post_init__(self):
        if self.iterations < 1 or self.restarts < 1 or not self.lr > 0 or self.tv_weight < 0:
            raise ValueError("need iterations >= 1, restarts >= 1, lr > 0 and tv_weight >= 0, got "
                             f"{self.iterations}, {self.restarts}, {self.lr}, {self.tv_weight}")


def _parameters(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def batch_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """What an undefended hospital shares in FedSGD: the gradient of its mean cross-entropy on (x, y)."""
    loss = F.cross_entropy(model(x), y)
    return [g.detach() for g in torch.autograd.grad(loss, _parameters(model))]


def dpsgd_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, clip: float,
                   noise_multiplier: float, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """One DP-SGD step's released gradient: per-image clipping to `clip`, N(0, (z·clip)²) on the sum, / batch."""
    from ..privacy.fastdp import LayerTape, clipped_gradient_sum, noisy_gradient

    tape = LayerTape(model)
    try:
        sums, _, _ = clipped_gradient_sum(model, tape, x, y, clip)
    finally:
        tape.close()
    noisy_gradient(model, sums, noise_std=noise_multiplier * clip, expected_batch_size=len(x), generator=generator)
    grads = [p.grad.detach().clone() for p in _parameters(model)]
    model.zero_grad(set_to_none=True)
    return grads


def flatten(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def unflatten(vector: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    if vector.numel() != sum(g.numel() for g in like):
        raise ValueError(f"vector has {vector.numel()} entries, the gradient {sum(g.numel() for g in like)}")
    return [v.reshape(g.shape) for v, g in zip(torch.split(vector, [g.numel() for g in like]), like)]


def update_noise_gradient(grads: list[torch.Tensor], *, clip: float, sigma: float,
                          generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """The paper's update-level LDP on a one-step update: the update at the clip norm (the largest signal
    the clip allows, the attacker's best case) plus N(0, σ²) per parameter."""
    from ..privacy.mechanisms import add_gaussian

    flat = flatten(grads)
    update = flat * (clip / flat.norm())
    return unflatten(add_gaussian(update, sigma, generator), grads)


def infer_labels(bias_gradient: torch.Tensor, count: int) -> torch.Tensor:
    """The `count` classes with the most negative last-layer bias gradient (iDLG's sign trick).

    >>> infer_labels(torch.tensor([0.1, -0.6, 0.2, 0.3]), 1).tolist()
    [1]
    """
    if bias_gradient.dim() != 1 or not 1 <= count <= len(bias_gradient):
        raise ValueError(f"need a 1-D bias gradient and 1 <= count <= {len(bias_gradient)}, got "
                         f"shape {tuple(bias_gradient.shape)} and count {count}")
    return torch.argsort(bias_gradient)[:count]


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels: small for smooth, image-like inputs."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def cosine_distance(grads: list[torch.Tensor], target: list[torch.Tensor]) -> torch.Tensor:
    """1 − cos(∇, target) over all parameters at once: blind to the gradient's scale (learning rate, batch)."""
    dot = sum((g * t).sum() for g, t in zip(grads, target))
    norm_g = torch.sqrt(sum(g.pow(2).sum() for g in grads))
    norm_t = torch.sqrt(sum(t.pow(2).sum() for t in target))
    return 1 - dot / (norm_g * norm_t + 1e-12)


def invert(model: torch.nn.Module, target: list[torch.Tensor], labels: torch.Tensor, settings: InversionSettings,
           *, shape=(3, 28, 28), seed: int = 0) -> tuple[torch.Tensor, float]:
    """Dummy images (len(labels), *shape) whose gradient best matches `target`; returns (images, match loss)."""
    params = _parameters(model)
    if [tuple(t.shape) for t in target] != [tuple(p.shape) for p in params]:
        raise ValueError("target must hold one gradient per trainable parameter of model, in model order")
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    best, best_loss = None, float("inf")
    for _ in range(settings.restarts):
        dummy = torch.randn(len(labels), *shape, generator=gen).clamp_(-1, 1).requires_grad_(True)
        opt = torch.optim.Adam([dummy], lr=settings.lr)
        steps = [int(settings.iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]  # Geiping et al.'s schedule
        schedule = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=steps, gamma=0.1)
        for _ in range(settings.iterations):
            opt.zero_grad()
            grads = torch.autograd.grad(F.cross_entropy(model(dummy), labels), params, create_graph=True)
            loss = cosine_distance(grads, target) + settings.tv_weight * total_variation(dummy)
            loss.backward()
            dummy.grad.sign_()  # signed gradients: Geiping et al. found them more robust for this loss
            opt.step()
            schedule.step()
            with torch.no_grad():
                dummy.clamp_(-1, 1)  # the data range of normalised BloodMNIST
        final = float(cosine_distance(batch_gradient(model, dummy.detach(), labels), target))
        if final < best_loss:
            best, best_loss = dummy.detach().clone(), final
    return best, best_loss


def colour_prior(images: torch.Tensor, public: torch.Tensor) -> torch.Tensor:
    """Give each reconstruction the per-channel mean and spread of public images of the same kind.

    With one channel per GroupNorm group in the first layer (width 16), the gradient cannot see a constant
    added to a colour channel, nor the image's overall contrast: optimisation leaves them arbitrary. The
    attacker fills them in from public data (here another split of BloodMNIST), never from the target.
    """
    mean, spread = public.mean((0, 2, 3))[:, None, None], public.std((0, 2, 3))[:, None, None]
    own_mean, own_spread = images.mean((2, 3), keepdim=True), images.std((2, 3), keepdim=True) + 1e-8
    return ((images - own_mean) / own_spread * spread + mean).clamp(-1, 1)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Normalised images back to pixel intensities in [0, 1] (the range PSNR and SSIM are computed in)."""
    return (x * data.STD + data.MEAN).clamp(0, 1)


def match(reconstructions: torch.Tensor, originals: torch.Tensor) -> list[dict]:
    """Pair each reconstruction with an original and score it (PSNR in dB, SSIM), both in [0, 1] range.

    Same count (at most 6): the pairing with the best mean PSNR. Otherwise each reconstruction gets
    its best-scoring original anywhere in `originals` — generous to the attacker.
    """
    rec, orig = to_unit(reconstructions), to_unit(originals)
    # PSNR per pair with the squared error floored at 1e-12, so that perfect copies do not all tie at inf.
    error = ((rec[:, None].double() - orig[None].double()) ** 2).mean((2, 3, 4))
    score = (-10 * torch.log10(error.clamp(min=1e-12))).tolist()
    if len(rec) == len(orig) <= 6:
        pairing = max(itertools.permutations(range(len(orig))),
                      key=lambda perm: sum(score[i][j] for i, j in enumerate(perm)))
    else:
        pairing = [max(range(len(orig)), key=lambda j: score[i][j]) for i in range(len(rec))]
    return [dict(reconstruction=i, original=int(j), psnr=metrics.psnr(rec[i], orig[j]),
                 ssim=metrics.ssim(rec[i], orig[j])) for i, j in enumerate(pairing)]
