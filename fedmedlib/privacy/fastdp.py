"""Fast DP-SGD for CNNs: per-sample gradient norms layer by layer (materialised or ghost), one backward pass.

Each trainable layer's per-sample gradient is a product of its input a_i and its output gradient g_i.
Per layer we pick the cheaper way to get ‖∇_i‖²: materialise g_i a_iᵀ (cost ∝ p·D·T) or the ghost norm
Σ_{t,s} (a_t·a_s)(g_t·g_s) (cost ∝ T²·(p+D)), as in mixed ghost clipping. Instead of the second backward
pass of ghost clipping we then form the clipped sum Σ_i c_i ∇_i directly from the stored a and g
("book-keeping"), so the network is traversed backward once. The result is exactly Opacus' clipped,
noised gradient (same clipping formula, same noise draws in the same parameter order).

References:
    Abadi et al., CCS 2016 (DP-SGD).
    Goodfellow, "Efficient Per-Example Gradient Computations", arXiv 1510.01799 (2015).
    Li et al., "Large Language Models Can Be Strong Differentially Private Learners", ICLR 2022 (ghost norm).
    Bu et al., "Scalable and Efficient Training of Large CNNs with DP", NeurIPS 2022 (mixed ghost clipping).
    Bu et al., "Differentially Private Optimization on Large Model at Small Cost", ICML 2023 (book-keeping).
    De et al., "Unlocking High-Accuracy Differentially Private Image Classification through Scale", arXiv
    2204.13650 (2022) (augmentation multiplicity: average a sample's augmented copies, then clip).
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.nn import functional as F

from ..models import WSConv2d
from ..train import autocast

SUPPORTED = (nn.Conv2d, nn.Linear, nn.GroupNorm)
# Unfold at most this many floats at once (32 MiB): caps the memory of per-sample conv norms.
UNFOLD_BUDGET = 8 * 2 ** 20
# Keep one layer's per-sample weight gradients when they are at most this many floats (128 MiB).
PER_SAMPLE_BUDGET = 32 * 2 ** 20
STRATEGIES = ("auto", "ghost", "materialise", "grouped")


def default_strategy() -> str:
    """The strategy when none is given: $FEDMED_FASTDP_STRATEGY, else 'auto'. Every strategy computes the same
    clipped sum (tested), so this is a speed setting, not part of any experiment: 'auto' was tuned on a CPU,
    and a GPU may favour another (scripts/gpu_paper_grid.py times each one on the device it runs on)."""
    chosen = os.environ.get("FEDMED_FASTDP_STRATEGY") or "auto"
    if chosen not in STRATEGIES:
        raise ValueError(f"FEDMED_FASTDP_STRATEGY={chosen!r} is not a fast-DP strategy: use one of {STRATEGIES}")
    return chosen


class LayerTape:
    """Forward hooks that keep each trainable layer's input and output while `recording`."""

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules()
                       if any(p.requires_grad for p in m.parameters(recurse=False))]
        unsupported = sorted({type(m).__name__ for m in self.layers if not isinstance(m, SUPPORTED)})
        if unsupported or any(isinstance(m, nn.Conv2d) and m.groups != 1 for m in self.layers):
            raise ValueError(f"the fast DP path supports Conv2d (groups=1), Linear and GroupNorm layers, found "
                             f"{unsupported or 'grouped Conv2d'}: use backend='opacus'")
        self.recording, self.records = False, {}
        self._handles = [m.register_forward_hook(self._keep) for m in self.layers]

    def _keep(self, module, inputs, output):
        if self.recording:
            if module in self.records:
                raise ValueError(f"{module} ran twice in one forward pass: use backend='opacus'")
            self.records[module] = (inputs[0].detach(), output, inputs[0].requires_grad)

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles, self.records = [], {}


def _conv_strategy(m: nn.Conv2d, t: int, b: int) -> str:
    d = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
    if t * t * (d + m.out_channels) < t * d * m.out_channels:
        return "ghost"
    return _per_sample_strategy(m, b)


def _per_sample_strategy(m: nn.Conv2d, b: int) -> str:
    # Per-sample gradients by one grouped convolution, kept for the clipped sum: ≈ 2× cheaper than the
    # unfolded bmm plus a second weight-gradient pass (measured on 2 CPU cores at width 16), if they fit.
    return "grouped" if b * m.weight.numel() <= PER_SAMPLE_BUDGET else "materialise"


def _patches(a: torch.Tensor, m: nn.Conv2d) -> torch.Tensor:
    """F.unfold(a) for `m`'s geometry, (B, Cin·kh·kw, T), built from kh·kw strided slices: CPU im2col is
    ~20× slower than these copies on the shapes used here."""
    (kh, kw), (sh, sw), (dh, dw), (ph, pw) = m.kernel_size, m.stride, m.dilation, m.padding
    a = F.pad(a, (pw, pw, ph, ph))
    ho = (a.shape[2] - dh * (kh - 1) - 1) // sh + 1
    wo = (a.shape[3] - dw * (kw - 1) - 1) // sw + 1
    cols = [a[:, :, i * dh:i * dh + sh * (ho - 1) + 1:sh, j * dw:j * dw + sw * (wo - 1) + 1:sw]
            for i in range(kh) for j in range(kw)]
    return torch.stack(cols, 2).reshape(a.shape[0], -1, ho * wo)


def _wide(t: torch.Tensor) -> torch.Tensor:
    """`t` in at least fp32 (bf16 activations/gradients under autocast are summed in fp32)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _grouped_terms(m: nn.Conv2d, a, g4, k: int = 1):
    """Per-sample weight gradients as one convolution with the batch as groups, (B, Cout, Cin, kh, kw);
    with k copies per sample, each sample's k copy gradients are summed. For a WSConv2d these are gradients
    with respect to the standardised filters, carried to the trained weight by its (linear) Jacobian."""
    b, cin, cout = a.shape[0], m.in_channels, m.out_channels
    a = a.to(g4.dtype)  # under bf16 autocast the layer saw fp32 input and gave bf16 output
    w = torch.nn.grad.conv2d_weight(a.reshape(1, b * cin, *a.shape[2:]), (b * cout, cin, *m.kernel_size),
                                    g4.reshape(1, b * cout, *g4.shape[2:]), m.stride, m.padding, m.dilation, b)
    per_sample = _wide(w.reshape(b, cout, cin, *m.kernel_size))
    if k > 1:
        per_sample = per_sample.reshape(b // k, k, *per_sample.shape[1:]).sum(1)
    if isinstance(m, WSConv2d):
        per_sample = m.weight_gradient(per_sample)
    return per_sample.flatten(1).pow(2).sum(1), lambda c: torch.einsum("b,b...->...", c, per_sample)


def _conv_terms(m: nn.Conv2d, a, g4, strategy: str, k: int = 1):
    """Per-sample squared gradient norms of one conv layer, and a maker of its clipped weight/bias sums.

    With k > 1 the batch holds k consecutive augmented copies of each sample: a sample's gradient is the sum
    over its copies, i.e. its copies' positions are concatenated (T becomes k·T)."""
    rows, p = g4.shape[0], g4.shape[1]
    b = rows // k
    g = g4.reshape(rows, p, -1)
    d, t = m.in_channels * m.kernel_size[0] * m.kernel_size[1], g.shape[2] * k
    strategy = _conv_strategy(m, t, rows) if strategy == "auto" else strategy
    ws = isinstance(m, WSConv2d)
    if ws and strategy == "ghost":
        # The ghost norm is that of the gradient with respect to the standardised filters, and the weight
        # standardisation Jacobian is not an isometry: such a layer's per-sample gradients are materialised.
        strategy = _per_sample_strategy(m, rows)
    gb = _wide(g).sum(2).reshape(b, k, p).sum(1) if m.bias is not None else None
    if strategy == "grouped":
        sq, weight_sum = _grouped_terms(m, a, g4, k)
    else:
        a = a.to(g.dtype)
        chunk, norms = max(1, UNFOLD_BUDGET // (d * t)), []
        for s in range(0, b, chunk):
            u, gs = _patches(a[s * k:(s + chunk) * k], m), g[s * k:(s + chunk) * k]  # (n·k, D, T), (n·k, p, T)
            if k > 1:
                n = u.shape[0] // k
                u = u.reshape(n, k, d, -1).transpose(1, 2).reshape(n, d, t)
                gs = gs.reshape(n, k, p, -1).transpose(1, 2).reshape(n, p, t)
            if strategy == "ghost":  # ‖Σ_t g_t a_tᵀ‖² = Σ_{t,s} (a_t·a_s)(g_t·g_s): no p×D matrix a sample
                norms.append(_wide(torch.bmm(u.transpose(1, 2), u) * torch.bmm(gs.transpose(1, 2), gs)).sum((1, 2)))
            else:  # the per-sample gradient itself, one chunk at a time, only its norm kept
                per_sample = _wide(torch.bmm(gs, u.transpose(1, 2)))
                if ws:
                    per_sample = m.weight_gradient(per_sample.reshape(-1, *m.weight.shape))
                norms.append(per_sample.pow(2).flatten(1).sum(1))
        sq = torch.cat(norms)

        def weight_sum(c):  # one weight-gradient convolution of the reweighted output gradient (book-keeping)
            ck = c.repeat_interleave(k) if k > 1 else c
            total = _wide(torch.nn.grad.conv2d_weight(a, m.weight.shape, g4 * ck.to(g4.dtype)[:, None, None, None],
                                                      m.stride, m.padding, m.dilation, m.groups))
            return m.weight_gradient(total) if ws else total
    if gb is not None:
        sq = sq + gb.pow(2).sum(1)

    def sums(c):
        return [(m.weight, weight_sum(c))] + ([(m.bias, (gb * c[:, None]).sum(0))] if gb is not None else [])

    return sq, sums


def _linear_terms(m: nn.Linear, a, g, k: int = 1):
    a, g = _wide(a), _wide(g)  # small, and under bf16 autocast of mixed precision
    # (B, T, D/p); a sample's k copies are consecutive rows, so they become k·T positions of one sample
    b = a.shape[0] // k
    a, g = a.reshape(b, -1, a.shape[-1]), g.reshape(b, -1, g.shape[-1])
    if a.shape[1] == 1:
        sq = a.pow(2).sum((1, 2)) * g.pow(2).sum((1, 2))
    else:
        sq = (torch.bmm(a, a.transpose(1, 2)) * torch.bmm(g, g.transpose(1, 2))).sum((1, 2))
    gb = g.sum(1)
    if m.bias is not None:
        sq = sq + gb.pow(2).sum(1)

    def sums(c):
        w = torch.einsum("btp,btd->pd", g * c[:, None, None], a)
        return [(m.weight, w)] + ([(m.bias, (gb * c[:, None]).sum(0))] if m.bias is not None else [])

    return sq, sums


def _group_norm_terms(m: nn.GroupNorm, a, g, k: int = 1):
    a, g = _wide(a), _wide(g)  # GroupNorm runs in fp32 under autocast; its input may be bf16
    x_hat = F.group_norm(a, m.num_groups, eps=m.eps)
    gw, gb = (g * x_hat).flatten(2).sum(2), g.flatten(2).sum(2)  # (B·k, C) each: the big g is freed now
    if k > 1:
        gw, gb = gw.reshape(-1, k, gw.shape[1]).sum(1), gb.reshape(-1, k, gb.shape[1]).sum(1)
    sq = gw.pow(2).sum(1) + gb.pow(2).sum(1)
    return sq, lambda c: [(m.weight, (gw * c[:, None]).sum(0)), (m.bias, (gb * c[:, None]).sum(0))]


def _terms(m, a, g, strategy, k):
    if isinstance(m, nn.Conv2d):
        return _conv_terms(m, a, g, strategy, k)
    return _linear_terms(m, a, g, k) if isinstance(m, nn.Linear) else _group_norm_terms(m, a, g, k)


def clipped_gradient_sum(model: nn.Module, tape: LayerTape, x: torch.Tensor, y: torch.Tensor, clip: float,
                         strategy: str | None = None, precision: str = "fp32", multiplicity: int = 1):
    """(Σ_i min(1, C/(‖∇ℓ_i‖+1e-6))·∇ℓ_i per parameter, per-sample norms, mean loss) for one batch.

    `strategy`: 'auto' (cheapest that fits, per conv layer), 'ghost', 'materialise' or 'grouped'; None reads
    `default_strategy()`.
    Cross-entropy. Each layer's output gradient is reduced by a tensor hook the moment backward produces it,
    so only conv output gradients or per-sample gradients (for the weighted sum) outlive the backward pass.
    `precision='bf16'` runs the forward under bf16 autocast; norms and sums are accumulated in fp32.
    `multiplicity` k > 1: x holds k consecutive augmented copies of each of len(y) samples, and ℓ_i is the
    mean loss over sample i's copies — so each *sample's* gradient is clipped once, after averaging its
    copies (augmentation multiplicity, De et al. 2022), and the privacy unit stays one record.
    """
    strategy = default_strategy() if strategy is None else strategy
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    k = int(multiplicity)
    if k < 1 or len(x) != k * len(y):
        raise ValueError(f"multiplicity {multiplicity} needs exactly k·len(y) = {k * len(y)} inputs (k copies "
                         f"of each sample, consecutive), got {len(x)}")
    tape.recording, tape.records = True, {}
    try:
        with autocast(x.device, precision):
            logits = model(x)
            losses = F.cross_entropy(logits, y.repeat_interleave(k) if k > 1 else y, reduction="none")
    finally:
        tape.recording = False
    losses = losses.reshape(len(y), k).mean(1) if k > 1 else losses
    terms, roots = [], []
    for m, (a, out, input_needs_grad) in tape.records.items():
        out.register_hook(lambda g, m=m, a=a: terms.append(_terms(m, a, g, strategy, k)))
        if not input_needs_grad:
            roots.append(out)  # every other layer lies between the loss and a root: its hook fires too
    tape.records = {}
    torch.autograd.grad(losses.sum(), roots)  # no parameter gradients: the hooks collect what we need
    norms = torch.stack([sq for sq, _ in terms]).sum(0).sqrt()
    c = (clip / (norms + 1e-6)).clamp(max=1.0)  # Opacus' flat-clipping formula, to the last epsilon
    sums = {p: v.reshape(p.shape) for _, maker in terms for p, v in maker(c)}
    return sums, norms.detach(), float(losses.detach().mean()) if len(losses) else 0.0


def noisy_gradient(model: nn.Module, sums: dict, *, noise_std: float, expected_batch_size: int, generator=None):
    """Set p.grad = (clipped sum + N(0, noise_std²)) / expected batch size, noise drawn in parameter order."""
    for p in model.parameters():
        if not p.requires_grad:
            continue
        total = sums.get(p, torch.zeros_like(p))  # a Poisson batch can be empty: noise only
        if noise_std > 0:  # drawn where the generator lives (a CPU stream is the same on every device)
            total = total + torch.normal(0.0, noise_std, size=p.shape, generator=generator, dtype=p.dtype,
                                         device=generator.device if generator is not None else p.device).to(p.device)
        p.grad = total / expected_batch_size


class FastSession:
    """DP epochs with Poisson sampling on device tensors; each step is recorded in `accountant`.

    `multiplicity` k > 1 trains on k augmented copies of each sampled record (fedmedlib.augment), averaged
    before clipping; `physical_batch` caps the records per forward pass (clipped sums add up across chunks);
    `after_step()` runs after every optimizer step (a schedule, a weight average).
    """

    def __init__(self, net, optimizer, x, y, *, sample_rate, z, clip, accountant, generator, precision="fp32",
                 multiplicity: int = 1, physical_batch: int | None = None, after_step=None):
        self.net, self.optimizer, self.x, self.y, self.precision = net, optimizer, x, y, precision
        self.q, self.z, self.clip, self.accountant, self.generator = sample_rate, z, clip, accountant, generator
        self.k, self.physical_batch, self.after_step = int(multiplicity), physical_batch, after_step
        self.steps = round(1 / sample_rate)
        self.expected_batch_size = int(len(x) * sample_rate)  # Opacus' choice, so updates are comparable
        self.tape = LayerTape(net)

    def _clipped_sums(self, idx) -> tuple[dict, float]:
        from ..augment import augment

        sums, loss_sum, chunk = {}, 0.0, self.physical_batch or max(len(idx), 1)
        for s in range(0, len(idx), chunk):
            part = idx[s:s + chunk]
            xb = augment(self.x[part], self.k, generator=self.generator) if self.k > 1 else self.x[part]
            got, _, loss = clipped_gradient_sum(self.net, self.tape, xb, self.y[part], self.clip,
                                                precision=self.precision, multiplicity=self.k)
            sums = {p: sums[p] + v if p in sums else v for p, v in got.items()}
            loss_sum += loss * len(part)
        return sums, loss_sum

    def epoch(self) -> float:
        self.net.train()
        total, seen = 0.0, 0
        for _ in range(self.steps):
            g = self.generator
            chosen = torch.rand(len(self.x), generator=g, device=g.device) < self.q  # Poisson sampling
            idx = chosen.nonzero().squeeze(1).to(self.x.device)
            self.optimizer.zero_grad(set_to_none=True)
            sums, loss_sum = self._clipped_sums(idx)
            noisy_gradient(self.net, sums, noise_std=self.z * self.clip,
                           expected_batch_size=self.expected_batch_size, generator=self.generator)
            self.optimizer.step()
            self.accountant.step(noise_multiplier=self.z, sample_rate=self.q)
            if self.after_step:
                self.after_step()
            total, seen = total + loss_sum, seen + len(idx)
        return total / max(seen, 1)

    def close(self) -> None:
        self.tape.close()
