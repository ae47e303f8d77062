"""Vector mechanisms (fedmedlib.privacy.mechanisms): clipping, noise that is really applied, as-coded guarantees."""

import math

import numpy as np
import pytest
import torch

from fedmedlib.privacy import mechanisms as mech
from fedmedlib import privacy

D = 200_000  # coordinates: the std of 200k draws is within ~0.3 % of σ (3 standard errors ≈ 0.5 %)


def _update(d=D, norm=50.0, seed=0):
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return v * (norm / v.norm())


def test_clip_update_scales_long_updates_and_keeps_short_ones():
    clipped, norm = mech.clip_update(_update(norm=50.0), 7.0)
    assert norm == pytest.approx(50.0) and mech.l2_norm(clipped) == pytest.approx(7.0)
    short = _update(norm=3.0)
    kept, _ = mech.clip_update(short, 7.0)
    assert torch.equal(kept, short)


def test_clip_update_works_on_numpy_and_rejects_bad_clip():
    clipped, norm = mech.clip_update(np.array([3.0, 4.0]), 1.0)
    np.testing.assert_allclose(clipped, [0.6, 0.8])
    with pytest.raises(ValueError, match="clip must be > 0"):
        mech.clip_update(np.ones(3), 0.0)


def test_state_vector_round_trip():
    state = {"w": torch.randn(3, 4), "b": torch.randn(4), "steps": torch.tensor(7)}
    back = mech.vector_to_state(mech.state_to_vector(state), state)
    assert all(torch.equal(state[k], back[k]) for k in state)
    with pytest.raises(ValueError, match="entries"):
        mech.vector_to_state(torch.zeros(5), state)


@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_add_gaussian_really_adds_the_requested_std(kind):
    base = _update() if kind == "torch" else _update().numpy()
    gen = torch.Generator().manual_seed(1) if kind == "torch" else np.random.default_rng(1)
    noise = mech.add_gaussian(base, 0.7, gen) - base
    assert float(noise.std()) == pytest.approx(0.7, rel=0.01)
    assert abs(float(noise.mean())) < 0.01


def test_update_ldp_noise_std_is_paper_sigma():
    released, info = mech.update_ldp(_update(), generator=torch.Generator().manual_seed(2))
    clipped, _ = mech.clip_update(_update(), 7.0)
    assert info["sigma"] == pytest.approx(0.69887, abs=1e-5) and info["noise_applied"]
    assert float((released - clipped).std()) == pytest.approx(info["sigma"], rel=0.01)


def test_drop_noise_reproduces_the_flower_bug_and_says_so():
    with pytest.warns(UserWarning, match="BUG REPRODUCTION"):
        released, info = mech.update_ldp(_update(), drop_noise=True)
    clipped, _ = mech.clip_update(_update(), 7.0)
    assert float((released - clipped).std()) < 1e-9  # what Flower 1.13 returned
    assert info["bug_reproduction"] and not info["noise_applied"] and "BUG" in info["note"]


def test_as_coded_guarantee_over_50_rounds():
    g = mech.as_coded_guarantee(50)
    assert g["noise_multiplier"] == pytest.approx(0.69887 / 7, rel=1e-4)
    assert g["epsilon_per_round"] == pytest.approx(84.90, abs=0.01)   # not 6
    assert g["epsilon_composed"] == pytest.approx(2758.8, abs=0.1)    # not 6 either
    assert privacy.opacus_epsilon([(g["noise_multiplier"], 1.0, 1)], 1.9e-4) == pytest.approx(84.90, rel=0.01)
    assert g["epsilon_composed_rdp"] >= g["epsilon_composed"]         # RDP is an upper bound
    assert g["epsilon_composed_replace_one"] > g["epsilon_composed"]
    assert mech.as_coded_guarantee(50, drop_noise=True)["epsilon_composed"] == math.inf


def test_central_client_level_noise_on_the_sum_is_z_times_s():
    updates = [_update(norm=20.0, seed=s) for s in range(5)]
    total, info = mech.client_level_sum(updates, clip=7.0, noise_multiplier=0.5,
                                        generator=torch.Generator().manual_seed(3))
    clean = sum(mech.clip_update(u, 7.0)[0] for u in updates)
    assert info["server_std"] == pytest.approx(3.5)
    assert float((total - clean).std()) == pytest.approx(3.5, rel=0.01)


def test_distributed_shares_sum_to_z_times_s_without_dropouts():
    updates = [_update(norm=20.0, seed=s) for s in range(10)]
    total, info = mech.client_level_sum(updates, clip=7.0, noise_multiplier=0.5, placement="distributed",
                                        generator=torch.Generator().manual_seed(4))
    clean = sum(mech.clip_update(u, 7.0)[0] for u in updates)
    assert info["per_client_std"] == pytest.approx(3.5 / math.sqrt(10)) and info["server_std"] == 0
    assert float((total - clean).std()) == pytest.approx(3.5, rel=0.01)


def test_distributed_dropouts_below_declared_minimum_raise():
    updates = [_update(norm=20.0, seed=s) for s in range(6)]
    with pytest.raises(ValueError, match="min_survivors"):
        mech.client_level_sum(updates, clip=7.0, noise_multiplier=0.5, placement="distributed", n_selected=10)


def test_distributed_with_declared_minimum_keeps_the_guarantee():
    updates = [_update(norm=20.0, seed=s) for s in range(8)]
    _, info = mech.client_level_sum(updates, clip=7.0, noise_multiplier=0.5, placement="distributed",
                                    n_selected=10, min_survivors=6)
    assert info["sum_noise_std"] == pytest.approx(3.5 * math.sqrt(8 / 6))
    assert info["effective_noise_multiplier"] >= 0.5


def test_server_top_up_restores_the_full_noise():
    updates = [_update(norm=20.0, seed=s) for s in range(6)]
    total, info = mech.client_level_sum(updates, clip=7.0, noise_multiplier=0.5, placement="distributed",
                                        n_selected=10, server_top_up=True,
                                        generator=torch.Generator().manual_seed(5))
    clean = sum(mech.clip_update(u, 7.0)[0] for u in updates)
    assert info["server_std"] == pytest.approx(3.5 * math.sqrt(1 - 6 / 10))
    assert float((total - clean).std()) == pytest.approx(3.5, rel=0.01)


def test_client_level_accounting_uses_the_client_sampling_rate():
    z = privacy.noise_multiplier(6.0, 1.9e-4, sample_rate=10 / 100, steps=50)
    assert privacy.epsilon(z, 1.9e-4, 0.1, 50) == pytest.approx(6.0, abs=0.02)
