"""DP mechanisms on flat update vectors (NumPy or torch): clip, Gaussian noise, update-level LDP, client-level DP.

References:
    McMahan, Ramage, Talwar & Zhang, "Learning Differentially Private Recurrent Language Models", ICLR 2018
    (DP-FedAvg: clip each client's update to S, Gaussian noise of std z·S on the sum).
    Kairouz, Liu & Steinke, "The Distributed Discrete Gaussian Mechanism for FL with SecAgg", ICML 2021
    (each client adds a share of the noise so that only the secure sum carries all of it).
    Flower PR #4677 (Dec 2024): LocalDpMod before 1.14 computed the noised update and returned the un-noised one.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from . import accounting


def state_to_vector(state: dict) -> torch.Tensor:
    """All floating-point tensors of a state dict, flattened and concatenated in key order."""
    parts = [v.detach().reshape(-1) for v in state.values() if torch.is_floating_point(v)]
    if not parts:
        raise ValueError("the state dict holds no floating-point tensors")
    return torch.cat(parts)


def vector_to_state(vector: torch.Tensor, like: dict) -> dict:
    """The inverse of `state_to_vector`: `vector` cut into `like`'s float shapes; other entries copied."""
    vector = torch.as_tensor(vector)
    expected = sum(v.numel() for v in like.values() if torch.is_floating_point(v))
    if vector.numel() != expected:
        raise ValueError(f"vector has {vector.numel()} entries, the state dict's float tensors {expected}")
    out, start = {}, 0
    for key, v in like.items():
        if torch.is_floating_point(v):
            out[key] = vector[start:start + v.numel()].reshape(v.shape).to(v.dtype).clone()
            start += v.numel()
        else:
            out[key] = v.clone()
    return out


def model_update(new_state: dict, old_state: dict) -> torch.Tensor:
    """new − old parameters as one flat vector: the thing update-level and client-level DP clip."""
    return state_to_vector(new_state) - state_to_vector(old_state)


def l2_norm(vector) -> float:
    if isinstance(vector, torch.Tensor):
        return float(torch.linalg.vector_norm(vector.double()))
    return float(np.linalg.norm(np.asarray(vector, dtype=np.float64)))


def clip_update(update, clip: float):
    """(update scaled to L2 norm ≤ clip, its norm before clipping); same type as the input.

    >>> clip_update(np.array([3.0, 4.0]), 1.0)
    (array([0.6, 0.8]), 5.0)
    """
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip!r}")
    norm = l2_norm(update)
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    return update * scale, norm


def add_gaussian(vector, std: float, generator=None):
    """vector + N(0, std²) per coordinate: torch.Generator for tensors, np.random.Generator for arrays."""
    if not std >= 0:
        raise ValueError(f"noise std must be >= 0, got {std!r}")
    if isinstance(vector, torch.Tensor):
        if std == 0:
            return vector.clone()
        return vector + torch.normal(0.0, std, size=vector.shape, generator=generator,
                                     dtype=vector.dtype, device=vector.device)
    vector = np.asarray(vector)
    rng = generator if generator is not None else np.random.default_rng()
    return vector + rng.normal(0.0, std, size=vector.shape).astype(vector.dtype, copy=False)


PAPER_SIGMA = accounting.gaussian_sigma(accounting.PAPER_EPSILON, accounting.PAPER_DELTA, accounting.PAPER_SENSITIVITY)
BUG_NOTE = ("BUG REPRODUCTION (Flower < 1.14, fixed in PR #4677): the noise is computed and thrown away; "
            "the released update is only clipped and carries NO differential privacy")


def update_ldp(update, *, clip: float = accounting.PAPER_CLIP, sigma: float = PAPER_SIGMA,
               drop_noise: bool = False, generator=None):
    """The paper's DP as coded: clip the whole update to `clip`, add N(0, σ²) per coordinate.

    σ defaults to gaussian_sigma(6, 1.9e-4, sensitivity=1) ≈ 0.699, as Flower's LocalDpMod computes it.
    `drop_noise=True` reproduces Flower < 1.14, which returned the clipped update without the noise.
    Returns (released update, info dict).
    """
    clipped, norm = clip_update(update, clip)
    noised = add_gaussian(clipped, sigma, generator)
    info = dict(mechanism="update_ldp", norm_before_clip=norm, clip=clip, sigma=sigma,
                noise_applied=not drop_noise, bug_reproduction=drop_noise)
    if drop_noise:
        warnings.warn(BUG_NOTE, stacklevel=2)
        info["note"] = BUG_NOTE
        return clipped, info
    return noised, info


def as_coded_guarantee(rounds: int = accounting.PAPER_ROUNDS, *, epsilon: float = accounting.PAPER_EPSILON,
                       delta: float = accounting.PAPER_DELTA, clip: float = accounting.PAPER_CLIP,
                       sensitivity: float = accounting.PAPER_SENSITIVITY, drop_noise: bool = False) -> dict:
    """What update-level LDP with σ = gaussian_sigma(ε, δ, sensitivity) really guarantees per client.

    Two clipped updates differ by up to `clip` when one client's contribution is added or removed
    (2·clip when replaced), not by `sensitivity`; so the true noise multiplier is σ / clip. ε per round
    and composed over `rounds` are exact (analytic Gaussian / GDP); `epsilon_composed_rdp` is Opacus'
    RDP accountant's upper bound, as a cross-check. With drop_noise every ε is infinite.
    """
    sigma = accounting.gaussian_sigma(epsilon, delta, sensitivity)
    z = 0.0 if drop_noise else sigma / clip
    return dict(
        claimed_epsilon=epsilon, delta=delta, clip=clip, sensitivity_assumed=sensitivity, rounds=rounds,
        sigma=sigma, noise_multiplier=z, drop_noise=drop_noise,
        epsilon_per_round=accounting.gaussian_epsilon(z, delta),
        epsilon_composed=accounting.gaussian_epsilon(z, delta, rounds),
        epsilon_composed_rdp=accounting.opacus_epsilon([(z, 1.0, rounds)], delta, "rdp") if z else math.inf,
        epsilon_composed_replace_one=accounting.gaussian_epsilon(z / 2, delta, rounds),
        note=BUG_NOTE if drop_noise else "")


def client_noise_std(noise_multiplier: float, clip: float, *, placement: str = "central",
                     n_clients: int | None = None, min_survivors: int | None = None) -> float:
    """Std each party adds for client-level DP with z·S total: the server z·S ('central'), or each client
    z·S/√n_min ('distributed'), n_min = the declared minimum survivors (default: all n_clients)."""
    if not (noise_multiplier >= 0 and clip > 0):
        raise ValueError(f"need noise_multiplier >= 0 and clip > 0, got {noise_multiplier!r}, {clip!r}")
    if placement == "central":
        return noise_multiplier * clip
    if placement != "distributed":
        raise ValueError(f"placement must be 'central' or 'distributed', got {placement!r}")
    n_min = min_survivors or n_clients
    if not (n_min and n_min >= 1):
        raise ValueError("distributed noise needs n_clients (or min_survivors) >= 1")
    return noise_multiplier * clip / math.sqrt(n_min)


def server_top_up_std(noise_multiplier: float, clip: float, survivors: int, per_client_std: float) -> float:
    """Extra std the server must add so the sum of `survivors` noise shares reaches z·S (0 if it does)."""
    missing = (noise_multiplier * clip) ** 2 - survivors * per_client_std ** 2
    return math.sqrt(missing) if missing > 1e-12 * (noise_multiplier * clip) ** 2 else 0.0


def client_level_sum(updates, *, clip: float, noise_multiplier: float, placement: str = "central",
                     n_selected: int | None = None, min_survivors: int | None = None,
                     server_top_up: bool = False, generator=None):
    """DP-FedAvg's noised sum of the surviving clients' clipped updates (divide by the planned count after).

    Distributed placement: each client adds z·S/√n_min before (secure) summation. If m survivors of n
    remain, their shares sum to std z·S·√(m/n_min): with m ≥ n_min the guarantee holds (a little more
    noise than needed); with m < n_min it breaks, so this raises — unless `server_top_up`, where the server
    adds the missing z·S·√(1 − m/n_min) itself (which means trusting the server with that part).
    Returns (noised sum, info).
    """
    updates = list(updates)
    if not updates:
        raise ValueError("no client update survived this round: nothing to aggregate")
    m = len(updates)
    n = n_selected or m
    if m > n:
        raise ValueError(f"{m} updates but only n_selected={n} clients were selected")
    per_client = client_noise_std(noise_multiplier, clip, placement=placement, n_clients=n,
                                  min_survivors=min_survivors) if placement == "distributed" else 0.0
    total = None
    for u in updates:
        released, _ = clip_update(u, clip)
        released = add_gaussian(released, per_client, generator)  # the client's own share, before SecAgg
        total = released if total is None else total + released
    if placement == "central":
        server_std = noise_multiplier * clip
    else:
        server_std = server_top_up_std(noise_multiplier, clip, m, per_client)
        if server_std > 0 and not server_top_up:
            raise ValueError(
                f"only {m} of {n} clients survived but each added noise for {min_survivors or n}: the sum carries "
                f"std {per_client * math.sqrt(m):.4g} < z·S = {noise_multiplier * clip:.4g}, so the DP guarantee "
                "fails. Declare min_survivors <= the survivors you expect, or pass server_top_up=True")
    total = add_gaussian(total, server_std, generator)
    sum_std = math.sqrt(m * per_client ** 2 + server_std ** 2)
    return total, dict(mechanism="client_level", placement=placement, survivors=m, selected=n,
                       per_client_std=per_client, server_std=server_std, sum_noise_std=sum_std,
                       effective_noise_multiplier=sum_std / clip)
