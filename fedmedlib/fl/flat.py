"""A model as one flat vector (what hospitals send and the server averages), and FedAvg's weighted mean of them.

References:
    McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data", AISTATS 2017.
"""

from __future__ import annotations

import torch


def get_flat(model: torch.nn.Module) -> torch.Tensor:
    """All trainable parameters and floating buffers (BatchNorm statistics) as one vector."""
    tensors = list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def set_flat(model: torch.nn.Module, flat: torch.Tensor) -> None:
    tensors = list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]
    offset = 0
    with torch.no_grad():
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()
    if offset != flat.numel():
        raise ValueError(f"flat vector has {flat.numel()} values, the model needs {offset}")


def weighted_mean(updates: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """FedAvg's aggregate: sum_i w_i u_i / sum_i w_i."""
    if not updates or len(updates) != len(weights):
        raise ValueError(f"need one weight per update, got {len(updates)} updates and {len(weights)} weights")
    w = torch.tensor(weights, dtype=torch.float64)
    if torch.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be non-negative with a positive sum")
    total = torch.zeros_like(updates[0], dtype=torch.float64)
    for u, wi in zip(updates, w):
        total += wi * u.double()
    return (total / w.sum()).to(updates[0].dtype)
