"""DPResNet (the paper's DP-friendly ResNet-9: GroupNorm, no max-pooling) and a standard ResNet-9.

References:
    Qiao et al., "Micro-Batch Training with Batch-Channel Normalization and Weight Standardization", arXiv
    1903.10520 (2019) — weight standardization, which pairs with GroupNorm; De et al., arXiv 2204.13650
    (2022) use it for DP-SGD.
    Fares & Saad, arXiv 2412.00687 (2024) — DPResNet, 4,802,120 parameters at width 64 with 8 classes.
    Page, "How to train your ResNet" (2018) / DAWNBench — the standard ResNet-9 (BatchNorm, max-pooling).
    Abadi et al., CCS 2016 — why BatchNorm breaks per-sample DP (it mixes samples within a batch).
"""

from __future__ import annotations

import math

import torch
from torch import nn

MODELS = ("dpresnet", "resnet9")


def _scaled(width: int, base: int) -> int:
    """Channels of a layer that has `base` channels at the paper's width 64."""
    return base * width // 64


def _group_norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    # The paper uses 32 groups; at small widths a layer can have fewer than 32 channels, and the
    # group count must divide the channel count, so use the largest valid count not above 32.
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class WSConv2d(nn.Conv2d):
    """A convolution whose filters are standardised before use: each output channel's weights minus their
    mean, divided by sqrt(their (biased) variance + eps). The trained parameter stays `weight`."""

    eps = 1e-5

    def _standardize(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ŵ, s): the standardised filters and each output channel's sqrt(var + eps)."""
        s = torch.sqrt(w.var(dim=(1, 2, 3), unbiased=False, keepdim=True) + self.eps)
        return (w - w.mean(dim=(1, 2, 3), keepdim=True)) / s, s

    def standardized_weight(self) -> torch.Tensor:
        return self._standardize(self.weight)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.standardized_weight(), self.bias)

    def weight_gradient(self, grad: torch.Tensor) -> torch.Tensor:
        """The gradient with respect to `weight`, given gradients with respect to the standardised weight:
        `grad` is (..., Cout, Cin, kh, kw), any leading (per-sample) dimensions. The map is linear and the
        same for every sample, so it turns per-sample gradients and their clipped sum alike:
        ∂L/∂w = (g − mean(g) − ŵ·mean(g ⊙ ŵ)) / s per output channel, s = sqrt(var(w) + eps)."""
        w_hat, s = self._standardize(self.weight.detach().to(grad.dtype))
        dims = (-3, -2, -1)
        return (grad - grad.mean(dims, keepdim=True) - w_hat * (grad * w_hat).mean(dims, keepdim=True)) / s


def _conv(cin: int, cout: int, stride: int = 1, ws: bool = False) -> nn.Conv2d:
    return (WSConv2d if ws else nn.Conv2d)(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv_gn_relu(cin: int, cout: int, stride: int = 1, ws: bool = False) -> list[nn.Module]:
    return [_conv(cin, cout, stride, ws), _group_norm(cout), nn.ReLU()]


class DPResNet(nn.Module):
    """The authors' DPResNet at width 64; channels scale with `width / 64`.

    Stem conv 3→w and conv w→2w (GN, ReLU), an identity-residual block at 2w (no ReLU after the add),
    then two plain conv blocks 2w→4w and 4w→8w whose first conv has stride 2, global average pool, linear.
    `weight_standardization=True` standardises every conv's filters (WSConv2d); the parameters are the same.

    >>> sum(p.numel() for p in DPResNet().parameters())
    4802120
    """

    def __init__(self, num_classes: int = 8, width: int = 64, in_channels: int = 3,
                 weight_standardization: bool = False):
        super().__init__()
        _check_width(width)
        c1, c2, c3, c4 = (_scaled(width, b) for b in (64, 128, 256, 512))
        ws = weight_standardization
        self.stem = nn.Sequential(*_conv_gn_relu(in_channels, c1, ws=ws), *_conv_gn_relu(c1, c2, ws=ws))
        self.res1 = nn.Sequential(*_conv_gn_relu(c2, c2, ws=ws), _conv(c2, c2, ws=ws), _group_norm(c2))
        self.block2 = nn.Sequential(*_conv_gn_relu(c2, c3, stride=2, ws=ws), _conv(c3, c3, ws=ws), _group_norm(c3))
        self.block3 = nn.Sequential(*_conv_gn_relu(c3, c4, stride=2, ws=ws), _conv(c4, c4, ws=ws), _group_norm(c4))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.res1(x)  # out-of-place: an in-place add breaks Opacus' backward hooks
        x = self.block3(self.block2(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def _conv_bn_relu(cin: int, cout: int, pool: bool = False) -> list[nn.Module]:
    layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    return layers + [nn.MaxPool2d(2)] if pool else layers


class _Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn_relu(channels, channels), *_conv_bn_relu(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet9(nn.Module):
    """The standard ResNet-9 (BatchNorm, max-pooling, residual blocks after layers 1 and 3): non-DP baseline."""

    def __init__(self, num_classes: int = 8, width: int = 64, in_channels: int = 3):
        super().__init__()
        _check_width(width)
        c1, c2, c3, c4 = (_scaled(width, b) for b in (64, 128, 256, 512))
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, c1),
            *_conv_bn_relu(c1, c2, pool=True), _Residual(c2),  # 28 -> 14
            *_conv_bn_relu(c2, c3, pool=True),                 # 14 -> 7
            *_conv_bn_relu(c3, c4, pool=True), _Residual(c4),  # 7 -> 3
            nn.AdaptiveMaxPool2d(1),
        )
        self.fc = nn.Linear(c4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


def _check_width(width: int) -> None:
    if not isinstance(width, int) or width < 8 or width % 8:
        raise ValueError(f"width must be a multiple of 8 and at least 8 (64 = the paper's model), got {width!r}")


def build_model(name: str, *, num_classes: int = 8, width: int = 64,
                weight_standardization: bool = False) -> nn.Module:
    """Model by name: 'dpresnet' (DP-compatible) or 'resnet9' (BatchNorm, not DP-compatible).
    `weight_standardization` (DPResNet only) standardises every conv's filters."""
    key = name.lower().replace("-", "").replace("_", "")
    if key == "dpresnet":
        return DPResNet(num_classes=num_classes, width=width, weight_standardization=weight_standardization)
    if weight_standardization:
        raise ValueError(f"weight_standardization is a DPResNet option (it pairs with GroupNorm), not {name!r}")
    if key == "resnet9":
        return ResNet9(num_classes=num_classes, width=width)
    raise ValueError(f"unknown model {name!r}: choose one of {MODELS}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
