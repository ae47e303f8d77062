"""The standard recipe the fast engine is measured against: a DataLoader per hospital, Opacus hooks for DP.

This is what the reproduced paper's client code and the usual Opacus/Flower tutorials do for one local
update: wrap the hospital's data in a `DataLoader`, call `PrivacyEngine.make_private` (grad-sample hooks,
Poisson sampling) on a fresh model and Adam, and loop over the loader. It is a *baseline* for
benchmarks/fl_round.py, run with the same data, weights, noise multiplier and clip as the engine; its
batches and noise differ from the engine's (its own sampler), so only its speed is compared, not its numbers.

References:
    Yousefpour et al., "Opacus: User-Friendly Differential Privacy Library in PyTorch", 2021 (make_private).
    Fares & Saad, arXiv 2412.00687 (2024), code: one DataLoader per client, Adam lr 1e-3, batch 32.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import fl
from ..privacy.dpsgd import _opacus_quiet
from ..models import build_model
from ..train import make_optimizer


def opacus_local_update(exp: fl.Experiment, global_flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *,
                        noise_multiplier: float | None = None, seed: int = 0) -> torch.Tensor:
    """One hospital's local epochs the tutorial way; returns its new flat weights.

    `noise_multiplier=None` trains without DP (a plain shuffled DataLoader); otherwise Opacus' hooks clip
    each per-sample gradient to `exp.clip` and add noise of std `noise_multiplier · clip`.
    """
    torch.manual_seed(seed)
    model = build_model(exp.model, width=exp.width)
    fl.set_flat(model, global_flat.cpu())
    optimizer = make_optimizer(exp.local_optimizer, model.parameters(), exp.lr)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x.cpu(), y.cpu()),
                                         batch_size=min(exp.batch_size, len(x)), shuffle=noise_multiplier is None)
    if noise_multiplier is not None:
        from opacus import PrivacyEngine

        with _opacus_quiet():
            model, optimizer, loader = PrivacyEngine(accountant="prv").make_private(
                module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=noise_multiplier,
                max_grad_norm=exp.clip, poisson_sampling=True)
    model.train()
    with _opacus_quiet():
        for _ in range(exp.local_epochs):
            for xb, yb in loader:
                optimizer.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(model(xb), yb).backward()
                optimizer.step()
    module = model._module if hasattr(model, "_module") else model
    flat = fl.get_flat(module)
    if hasattr(model, "_close"):
        model._close()  # removes Opacus' hooks
    return flat


def opacus_round(fed: fl.Federation, global_flat: torch.Tensor, rnd: int, *,
                 noise_multipliers: dict[int, float] | None = None) -> torch.Tensor:
    """One FedAvg round with the recipe: every hospital one after another, weighted mean, evaluation.

    Returns the new global flat vector; `noise_multipliers` (hospital -> σ, e.g. the engine's calibration)
    switches DP on.
    """
    updates, weights = [], []
    for h in fed.hospitals:
        sigma = None if noise_multipliers is None else noise_multipliers[h.cid]
        new = opacus_local_update(fed.exp, global_flat, fed.x[h.train_idx], fed.y[h.train_idx],
                                  noise_multiplier=sigma, seed=fed.exp.seed * 1000 + rnd * 100 + h.cid)
        updates.append(new.to(global_flat.device) - global_flat)
        weights.append(float(len(h.train_idx)))
    new_global = global_flat + fl.weighted_mean(updates, weights)
    fed.evaluate_global(new_global)
    return new_global
