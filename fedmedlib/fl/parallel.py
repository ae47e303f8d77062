"""Hospitals trained in parallel: one vmap-batched step over stacked per-hospital parameters, plain or DP-SGD.

Each hospital keeps its own parameters, Adam state, batch order and DP noise stream; step s of the batched
loop is step s of every hospital that still has one. Padded samples weigh 0 and a hospital without a step
left does not move (Adam would: its momentum moves parameters even on a zero gradient, hence `StackedAdam`).
The batch order, Poisson draws and noise draws are the sequential engine's, so both engines agree up to
floating-point rounding (tests/test_parallel.py pins the tolerance); the privacy accounting is the same
calls on the same accountants.

References:
    PyTorch `torch.func` (functional_call, vmap, grad): per-model and per-sample batching.
    Kingma & Ba, "Adam", ICLR 2015, as `torch.optim.Adam` computes it (bias corrections, eps outside sqrt).
    Abadi et al., CCS 2016 (DP-SGD: per-sample clipping, Poisson sampling, Gaussian noise).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from ..train import autocast, batches

ENGINES = ("auto", "sequential", "parallel")
# Per-sample gradients of a whole step are materialised: cap one chunk at this many floats (1 GiB / 4 GiB).
CHUNK_FLOATS = {"cpu": 2 ** 28, "cuda": 2 ** 30}


def resolve_engine(engine: str, model: nn.Module, device: torch.device, multiplicity: int = 1,
                   optimizer: str = "adam") -> str:
    """'auto': parallel on a GPU for models without BatchNorm, without augmentation multiplicity and with the
    local Adam of StackedAdam, else sequential (faster on CPU, measured)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "auto":
        parallel_ok = device.type == "cuda" and not _batch_norms(model) and multiplicity == 1 and optimizer == "adam"
        return "parallel" if parallel_ok else "sequential"
    if engine == "parallel" and multiplicity > 1:
        raise ValueError(f"engine='parallel' has no augmentation multiplicity (got multiplicity={multiplicity}): "
                         "use engine='sequential' (or 'auto'), whose fastdp.FastSession averages the copies")
    if engine == "parallel" and optimizer != "adam":
        raise ValueError(f"engine='parallel' steps every hospital with StackedAdam, not local_optimizer="
                         f"{optimizer!r}: use engine='sequential' (or 'auto')")
    if engine == "parallel" and _batch_norms(model):
        raise ValueError(f"engine='parallel' cannot train {type(model).__name__}: its BatchNorm layers "
                         f"({_batch_norms(model)[0]}) mix the samples of a batch and keep running statistics, "
                         "which a vmap over hospitals cannot batch. Use engine='sequential' or model='dpresnet'")
    return engine


def _batch_norms(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class StackedAdam:
    """torch.optim.Adam (defaults: betas 0.9/0.999, eps 1e-8) on (H, ...) stacked parameters, one step count
    per hospital; `step(grads, active)` leaves inactive hospitals' parameters and moments untouched."""

    def __init__(self, params: list[torch.Tensor], lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = torch.zeros(params[0].shape[0], dtype=torch.float64, device=params[0].device)

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor], active: torch.Tensor) -> None:
        b1, b2 = self.betas
        self.t += active
        t = self.t.clamp(min=1)  # an inactive hospital at t = 0 gets a finite (unused) step size
        # Bias corrections in float64 like Adam's Python floats, then one float32 value per hospital.
        step_size = (self.lr / (1 - b1 ** t)).to(self.params[0].dtype)
        bc2_sqrt = ((1 - b2 ** t) ** 0.5).to(self.params[0].dtype)
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            shape = (-1,) + (1,) * (p.dim() - 1)
            on = active.view(shape)
            m.copy_(torch.where(on, m.lerp(g, 1 - b1), m))
            v.copy_(torch.where(on, v * b2 + (1 - b2) * g * g, v))
            denom = v.sqrt() / bc2_sqrt.view(shape) + self.eps
            p.sub_(torch.where(on, step_size.view(shape) * (m / denom), torch.zeros((), device=p.device)))


def stack(model: nn.Module, flat: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
    """`n` copies of the parameters in `flat` (fl.get_flat's order), as leaf tensors (n, *shape)."""
    params, offset = {}, 0
    for name, p in model.named_parameters():
        value = flat[offset:offset + p.numel()].view_as(p)
        params[name] = value.unsqueeze(0).repeat(n, *([1] * p.dim())).requires_grad_(True)
        offset += p.numel()
    if offset != flat.numel() or any(b.is_floating_point() for b in model.buffers()):
        raise ValueError("engine='parallel' needs a model whose flat vector is its parameters only (no buffers)")
    return params


def flat_rows(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """(H, P): each hospital's parameters in fl.get_flat's order."""
    return torch.cat([p.detach().flatten(1) for p in params.values()], 1)


def _padded(rows: list[list[torch.Tensor]], width: int, device, dtype):
    """(S, H, width) indices, (S, H, width) 0/1 weights, (S, H) active, from each hospital's list of batches."""
    steps = max(len(r) for r in rows)
    idx = torch.zeros(steps, len(rows), width, dtype=torch.long)
    weight = torch.zeros(steps, len(rows), width, dtype=dtype)
    for h, row in enumerate(rows):
        for s, b in enumerate(row):
            idx[s, h, :len(b)], weight[s, h, :len(b)] = b, 1.0
    active = torch.tensor([[s < len(r) for r in rows] for s in range(steps)])
    return idx.to(device), weight.to(device), active.to(device)


def train_plain(model, params, x, y, train_idx: list[torch.Tensor], generators: list[torch.Generator], *,
                lr: float, batch_size: int, epochs: int, precision: str = "fp32") -> list[float]:
    """Local Adam epochs of every hospital at once; `params` (stacked) are updated in place; mean losses out.

    Hospital h's batches are `train.batches` over its `train_idx[h]` with `generators[h]`, epoch after
    epoch, exactly as `train.train_epoch` draws them.
    """
    rows, epoch_of = [], []
    for idx, gen in zip([i.cpu() for i in train_idx], generators):
        per_epoch = [[idx[b] for b in batches(len(idx), batch_size, gen)] for _ in range(epochs)]
        rows.append([b for e in per_epoch for b in e])
        epoch_of.append([e for e, bs in enumerate(per_epoch) for _ in bs])
    index, weight, active = _padded(rows, batch_size, x.device, x.dtype)
    epoch = torch.tensor([[r[s] if s < len(r) else 0 for r in epoch_of] for s in range(len(index))], device=x.device)
    hospitals = torch.arange(len(rows), device=x.device)

    def loss(p, xb, yb, wb):
        losses = F.cross_entropy(functional_call(model, p, (xb,)), yb, reduction="none")
        return (losses * wb).sum() / wb.sum().clamp(min=1)  # the mean over real samples

    adam, names = StackedAdam(list(params.values()), lr), list(params)
    sums = torch.zeros(len(rows), epochs, device=x.device, dtype=torch.float64)
    seen = torch.zeros_like(sums)
    for s in range(len(index)):
        with autocast(x.device, precision):
            losses = vmap(loss)(params, x[index[s]], y[index[s]], weight[s])
        grads = torch.autograd.grad(losses.sum(), [params[n] for n in names])
        adam.step(list(grads), active[s])
        n_real = weight[s].sum(1).double()
        sums.index_put_((hospitals, epoch[s]), losses.detach().double() * n_real, accumulate=True)
        seen.index_put_((hospitals, epoch[s]), n_real, accumulate=True)
    return [float(np.mean([t / max(c, 1.0) for t, c in zip(ts, cs)])) for ts, cs in zip(sums.tolist(), seen.tolist())]


def train_dpsgd(model, params, x, y, train_idx: list[torch.Tensor], dps: list, *, precision: str = "fp32",
                chunk_floats: int | None = None) -> None:
    """Local DP-SGD of every hospital at once, as `fastdp.FastSession` runs it one hospital at a time.

    `dps[h]` is hospital h's `dpsgd.RecordLevelDP` (noise multiplier, sample rate, clip, generator,
    accountant); its budget is spent here exactly as `train_round` spends it. Per-sample gradients come from a
    vmap over hospitals of a vmap over samples of `grad`, computed in chunks of at most `chunk_floats` floats.
    """
    device, names = x.device, list(params)
    n_params = sum(p[0].numel() for p in params.values())
    budget = chunk_floats or CHUNK_FLOATS.get(device.type, CHUNK_FLOATS["cpu"])
    for dp in dps:
        dp._spend(dp.local_epochs)
    steps = [dp.local_epochs * dp.steps_per_epoch for dp in dps]
    ebs = torch.tensor([int(len(i) * dp.sample_rate) for i, dp in zip(train_idx, dps)], device=device,
                       dtype=x.dtype)  # FastSession's expected batch size, Opacus' choice

    def sample_loss(p, xi, yi):
        with autocast(device, precision):
            return F.cross_entropy(functional_call(model, p, (xi[None],)), yi[None])

    per_sample = vmap(vmap(grad(sample_loss), in_dims=(None, 0, 0)))
    clip = torch.tensor([dp.clip for dp in dps], device=device, dtype=x.dtype)
    adam = StackedAdam([params[n] for n in names], dps[0].lr)
    for s in range(max(steps)):
        active = torch.tensor([s < t for t in steps], device=device)
        chosen, noise = [], []
        for h, dp in enumerate(dps):  # the same draws, in the same order, as FastSession.epoch + noisy_gradient
            if s >= steps[h]:
                chosen.append(train_idx[h][:0])
                noise.append([torch.zeros_like(params[n][0]) for n in names])
                continue
            g = dp.generator
            pick = torch.rand(len(train_idx[h]), generator=g, device=g.device) < dp.sample_rate
            chosen.append(train_idx[h][pick.nonzero().squeeze(1).to(device)])
            std = dp.noise_multiplier * dp.clip
            noise.append([torch.normal(0.0, std, size=params[n].shape[1:], generator=g, device=g.device,
                                       dtype=params[n].dtype).to(device)
                          if std > 0 else torch.zeros_like(params[n][0]) for n in names])
            dp.accountant.step(noise_multiplier=dp.noise_multiplier, sample_rate=dp.sample_rate)
        width = max(len(c) for c in chosen)
        sums = [torch.zeros_like(params[n]) for n in names]
        chunk = max(1, budget // max(1, len(dps) * n_params))
        for start in range(0, width, chunk):
            rows = [c[start:start + chunk] for c in chosen]
            k = max(len(r) for r in rows)
            if k == 0:
                continue
            index = torch.zeros(len(dps), k, dtype=torch.long, device=device)
            mask = torch.zeros(len(dps), k, device=device, dtype=x.dtype)
            for h, r in enumerate(rows):
                index[h, :len(r)], mask[h, :len(r)] = r, 1.0
            with torch.no_grad():
                detached = {n: params[n].detach() for n in names}
            g = per_sample(detached, x[index], y[index])
            norms = torch.stack([g[n].flatten(2).pow(2).sum(2) for n in names]).sum(0).sqrt()
            c = (clip[:, None] / (norms + 1e-6)).clamp(max=1.0) * mask  # Opacus' flat clipping, padding at 0
            for i, n in enumerate(names):
                sums[i] += torch.einsum("hk,hk...->h...", c, g[n])
        grads = [(sums[i] + torch.stack([nz[i] for nz in noise])) / ebs.view((-1,) + (1,) * (sums[i].dim() - 1))
                 for i in range(len(names))]
        adam.step(grads, active)


def local_updates(fed, cids: list[int], global_flat: torch.Tensor, rnd: int) -> list[tuple]:
    """`fl.Federation.local_updates` for engine='parallel': (update, loss) per hospital in `cids`."""
    exp, private, hospitals = fed.exp, fed.private, [fed.hospitals[c] for c in cids]
    params = stack(fed.model, global_flat, len(cids))
    train_idx = [h.train_idx for h in hospitals]
    if private is not None and hasattr(private, "local_train"):
        if not hasattr(private, "hospital"):
            raise ValueError(f"engine='parallel' runs DP-SGD through RecordLevelPlug, not {type(private).__name__}: "
                             "use engine='sequential'")
        dps = [private.hospital(h.cid, len(h.train_idx), fed.device) for h in hospitals]
        train_dpsgd(fed.model, params, fed.x, fed.y, train_idx, dps, precision=exp.precision)
        losses = [None] * len(cids)  # DP-SGD's noisy loss is not reported
    else:
        generators = [fed.local_generator(h.cid, rnd) for h in hospitals]
        losses = train_plain(fed.model, params, fed.x, fed.y, train_idx, generators, lr=exp.lr,
                             batch_size=exp.batch_size, epochs=exp.local_epochs, precision=exp.precision)
    rows = flat_rows(params)
    return [(rows[i] - global_flat, losses[i]) for i in range(len(cids))]
