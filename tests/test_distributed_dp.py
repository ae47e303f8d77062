"""Distributed Skellam DP under SecAgg+: the mechanism (fedmedlib.privacy.skellam) and its round
(fedmedlib.fl.distributed) — equivalence to a centralized DP-SGD step, calibrated variance, accounting, refusals."""

import math

import numpy as np
import pytest
import torch

from fedmedlib.privacy import skellam as ddp
from fedmedlib.fl import distributed as distributed_round, modes as plugs
from fedmedlib import fl, privacy
from fedmedlib.privacy.fastdp import LayerTape, clipped_gradient_sum
from fedmedlib.models import build_model
from fedmedlib.secagg import secure_sum

# Accountant outputs are compared with a stated tolerance, never exactly: the same ε computed in another
# process (a Flower worker) or another order differs in its last digit (5.995327573578496 vs ...4946).
EPS_TOL = 1e-9


DELTA = 1.9e-4


def plan(**kw):
    base = dict(n_hospitals=10, min_survivors=6, clip=1.0, dim=1000, sample_rate=0.1, steps=300, epsilon=6.0,
                delta=DELTA, n_records=9562)
    return ddp.SkellamPlan(**{**base, **kw})


def tiny(**kw):
    base = dict(n_clients=4, scheme="iid", rounds=3, width=8, train_subset=320, eval_subset=100, seed=1,
                dp="distributed_dpsgd", aggregator="secagg", secagg_threshold=3, batch_size=64, lr=1.0, clip=1.0,
                eval_every=2)
    return fl.Experiment(**{**base, **kw})


def test_the_secure_sum_of_shares_is_the_union_clipped_sum_plus_the_drawn_noise():
    p, rng = plan(dim=500), np.random.default_rng(0)
    sums = [rng.normal(0, 3, 500) for _ in range(10)]
    encoded, noise = [], np.zeros(500)
    for k, s in enumerate(sums):
        encoded.append(ddp.encode(s, p, np.random.default_rng([7, k]), hospital=k)[0])
        replay = np.random.default_rng([7, k])  # the same stream: rounding uniforms, then the two Poisson draws
        replay.random(500)
        noise += replay.poisson(p.share_variance / 2, 500) - replay.poisson(p.share_variance / 2, 500)
    released = ddp.decode(secure_sum(encoded, threshold=6, seed=3), p)
    central = np.sum(sums, axis=0) + noise * p.gamma  # a central step: clipped sum + the same noise
    # exact up to stochastic rounding: < 1 level per hospital and coordinate
    assert np.max(np.abs(released - central)) < 10 * p.gamma


def test_a_round_is_one_centralized_dp_sgd_step_over_the_union_batch(real_data_root, monkeypatch):
    exp = tiny(ema=0.0)
    monkeypatch.setattr(ddp, "skellam_noise", lambda size, variance, rng: np.zeros(size, dtype=np.int64))
    private = plugs.make_private(exp)
    fed = fl.Federation(exp, device="cpu", root=real_data_root, private=private)
    start = fl.get_flat(fed.model).clone()
    private.setup(fed)
    # The union batch: each hospital's Poisson sample at the one rate q, drawn as the round draws it
    union = []
    for h in fed.hospitals:
        g = torch.Generator().manual_seed(int(np.random.default_rng([exp.seed, 1, h.cid + 1, 17]).integers(2**62)))
        union.append(h.train_idx[torch.rand(len(h.train_idx), generator=g) < private.plan.sample_rate])
    union = torch.cat(union)
    new_flat, record = private.play_round(fed, start.clone(), 1)
    assert record["aggregated"] == 4
    net = build_model("dpresnet", width=8)
    fl.set_flat(net, start)
    tape = LayerTape(net)
    sums, _, _ = clipped_gradient_sum(net, tape, fed.x[union], fed.y[union], exp.clip)
    central = torch.cat([sums[p].reshape(-1) for p in net.parameters()]).double()
    grad = central / (private.plan.sample_rate * private.n_records)
    # the server's first SGD-momentum step is lr · grad; the round must agree up to 4 hospitals' rounding
    step = (start.double() - new_flat.double()) / exp.lr
    bound = 4 * private.plan.gamma / (private.plan.sample_rate * private.n_records) + 1e-6
    assert torch.max(torch.abs(step - grad)) < bound


@pytest.mark.parametrize("survivors", [10, 6])
def test_the_sum_of_shares_has_the_calibrated_variance_down_to_the_threshold(survivors):
    p = plan(dim=200_000)
    shares = [ddp.encode(np.zeros(p.dim), p, np.random.default_rng([1, k]), hospital=k)[0]
              for k in range(survivors)]
    total = ddp.decode(secure_sum(shares, threshold=6, seed=0), p) / p.gamma  # back to integer levels
    expected = survivors * p.share_variance
    # the rounding of zeros adds nothing; the sample variance of 200,000 draws is within 1 % (about 3 std)
    assert math.isclose(total.var(), expected, rel_tol=0.01)
    assert survivors * p.share_variance >= p.mu * (1 - 1e-12)  # any `min_survivors` carry the full noise
    assert math.isclose(p.noise_std(survivors), math.sqrt(expected) * p.gamma)


def test_dropout_overhead_and_collusion_size_the_shares():
    assert math.isclose(plan().dropout_overhead, math.sqrt(10 / 6))
    assert plan().dropout_overhead <= 1.3
    colluding = plan(colluding=2)
    assert math.isclose(colluding.share_variance, colluding.mu / 4)  # honest survivors alone carry μ
    assert math.isclose(plan(min_survivors=10).dropout_overhead, 1.0)


def test_the_ledger_spends_the_target_and_equals_the_accountant_for_the_centralized_equivalent():
    p = plan(dim=301_976)
    assert p.epsilon * 0.999 <= p.epsilon_for(p.mu) <= p.epsilon
    d = p.describe()
    z = d["gaussian_equivalent_noise_multiplier"]
    # the continuous cross-check is Opacus' accountant for a centralized step (q, z, steps)
    assert math.isclose(d["epsilon_gaussian_prv"], privacy.epsilon(z, DELTA, p.sample_rate, p.steps), rel_tol=1e-9)
    assert d["epsilon_gaussian_rdp"] < d["epsilon_skellam"]  # the integer-domain bound is the honest, larger one
    # at 2^16 levels per clip norm the integers cost nothing measurable: the same Gaussian through the same
    # general subsampling bound spends the same ε; the gap to PRV is that bound's looseness
    assert d["epsilon_gaussian_generic_bound"] <= d["epsilon_skellam"]
    assert d["epsilon_gaussian_generic_bound"] == pytest.approx(d["epsilon_skellam"], rel=1e-6)


def test_zhu_wang_bound_on_a_gaussian_is_an_upper_bound_of_the_exact_sampled_gaussian():
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    orders = list(range(2, 65))
    for q, z in [(0.01, 1.0), (0.1, 1.3), (0.5, 3.0)]:
        exact = np.array([rdp._compute_rdp_poisson_subsampled_gaussian(q, z, [a])[0] for a in orders])
        bound = ddp.subsampled_rdp(orders, q, ddp.gaussian_rdp(orders, z))
        assert np.all(bound >= exact * (1 - 1e-9))
    assert np.allclose(ddp.subsampled_rdp(orders, 1.0, ddp.gaussian_rdp(orders, 2.0)), ddp.gaussian_rdp(orders, 2.0))


def test_skellam_rdp_tends_to_the_gaussian_as_the_variance_grows():
    orders = np.arange(2, 33)
    for mu in (1e6, 1e10):
        l2 = 1000.0
        gauss = ddp.gaussian_rdp(orders, math.sqrt(mu) / l2)
        sk = ddp.skellam_rdp(orders, mu, l2, l2 ** 2)
        assert np.all(sk >= gauss)
    assert np.allclose(sk, gauss, rtol=1e-5)


def test_a_hospital_without_its_noise_share_or_too_few_survivors_are_refused():
    p = plan(dim=100)
    honest = [ddp.encode(np.zeros(100), p, np.random.default_rng(k), hospital=k)[1] for k in range(7)]
    lazy = ddp.encode(np.zeros(100), p, np.random.default_rng(9), hospital=7, share_variance=0.0)[1]
    with pytest.raises(ValueError, match=r"hospital\(s\) \[7\] added less than the calibrated noise share"):
        ddp.check_round(honest + [lazy], p)
    with pytest.raises(ValueError, match="only 5 hospitals survived"):
        ddp.check_round(honest[:5], p)
    ddp.check_round(honest[:6], p)  # exactly the threshold: fine
    with pytest.raises(ValueError, match="adds no noise share"):
        ddp.skellam_noise(10, 0.0, np.random.default_rng(0))


def test_a_round_with_fewer_survivors_than_calibrated_aborts_and_changes_nothing(real_data_root):
    exp = tiny(dropout_schedule=((2, (0, 1)),))
    private, aggregator = plugs.make_plugs(exp)
    r = fl.run_federated(exp, root=real_data_root, progress=False, private=private, aggregator=aggregator)
    second = r["rounds"][1]
    assert second["aggregated"] == 0 and "2 survivors < 3" in second["aborted"]
    assert r["rounds"][0]["aggregated"] == r["rounds"][2]["aggregated"] == 4
    assert "val_accuracy" in second and "val_accuracy" not in r["rounds"][0]  # eval_every=2, and the last round
    assert math.isclose(r["rounds"][-1]["epsilon"], 6.0, rel_tol=1e-3)
    audit = r["privacy"]
    assert audit["accountant"] == "skellam_rdp" and set(audit["hospitals"]) == {"0", "1", "2", "3"}
    assert audit["hospitals"]["2"]["steps"] == 3 and audit["hospitals"]["2"]["sample_rate"] == audit["sample_rate"]


def test_resume_gives_the_same_run(real_data_root, tmp_path, interrupted_run):
    exp = tiny(rounds=4, ema=0.9, schedule="cosine", eval_every=1)
    def plugged():
        private, aggregator = plugs.make_plugs(exp)
        return dict(private=private, aggregator=aggregator)

    full = fl.run_federated(exp, root=real_data_root, progress=False, **plugged())
    interrupted_run(exp, real_data_root, tmp_path / "ck.pt", **plugged())
    resumed = fl.run_federated(exp, root=real_data_root, checkpoint=tmp_path / "ck.pt", progress=False, **plugged())
    assert [h["test_loss"] for h in resumed["rounds"]] == [h["test_loss"] for h in full["rounds"]]
    assert resumed["rounds"][-1]["epsilon"] == pytest.approx(full["rounds"][-1]["epsilon"], rel=EPS_TOL)


def test_no_wrap_around_at_the_books_settings_and_a_clear_error_where_it_could():
    from fedmedlib.experiments import grid
    from fedmedlib.config import CPU, PAPER

    for profile, dim in ((CPU, 301_976), (PAPER, 4_802_120)):
        for n in (5, 10, 20):
            exp = grid.experiment(profile, "as_should", n, "paper", 0)
            p = distributed_round.union_plan(exp, 9562, dim)
            assert p.wrap_bound() < 1e-100
    # the largest integer sum the book could see still decodes to itself (no wrap mod 2^32)
    p = plan(dim=4)
    top = np.array([p.signal_bound, -p.signal_bound, 0, 1], dtype=np.int64)
    assert np.array_equal(ddp.decode(top.astype(np.uint32), p) / p.gamma, top.astype(float))
    with pytest.raises(ValueError, match="could wrap"):
        plan(scale_bits=24)


def test_the_mode_refuses_settings_that_would_weaken_it():
    with pytest.raises(ValueError, match="needs aggregator='secagg'"):
        tiny(aggregator="plain")
    with pytest.raises(ValueError, match="local_epochs=1"):
        tiny(local_epochs=2)
    with pytest.raises(ValueError, match="applies only to dp='distributed_dpsgd'"):
        fl.Experiment(dp="dpsgd", ema=0.9)
    with pytest.raises(ValueError, match="colluding must lie"):
        plan(colluding=6)
    with pytest.raises(ValueError, match="batch_size"):
        distributed_round.union_plan(tiny(batch_size=10_000), 256, 100)


def test_new_fields_keep_every_earlier_hash():
    # Experiments from before this mode do not carry its fields in their cache key
    assert "ema" not in fl.Experiment().to_dict() and "scale_bits" not in fl.Experiment().to_dict()


# ---- The tight Poisson-subsampling bound (Steinke 2022) next to Zhu & Wang's general one ---------------------

def test_the_tight_bound_on_a_gaussian_is_exactly_dp_accountings_sampled_gaussian_rdp():
    """For the Gaussian the tight bound is Mironov et al.'s exact sampled-Gaussian RDP: dp-accounting, an
    independent implementation, gives the same numbers."""
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    orders = list(range(2, 65))
    for q, z in [(0.01, 1.0), (0.1, 1.66), (0.1, 12.6), (0.5, 3.0)]:
        exact = np.array([rdp._compute_rdp_poisson_subsampled_gaussian(q, z, [a])[0] for a in orders])
        tight = ddp.subsampled_rdp(orders, q, ddp.gaussian_rdp(orders, z), "tight")
        np.testing.assert_allclose(tight, exact, rtol=1e-9)


def test_the_tight_bound_holds_in_both_neighbouring_directions_for_a_skellam_pair():
    """An exact check of the bound on a one-dimensional Skellam pair at the book's sampling rate: the
    add direction D_α(P ‖ (1−q)P + qQ) and the remove direction D_α((1−q)P + qQ ‖ P), computed from the
    probability mass functions, both lie under the bound built from the pair's own RDP in both directions."""
    from scipy.special import logsumexp
    from scipy.stats import skellam

    def renyi(log_p, log_q, a):
        return logsumexp(a * log_p + (1 - a) * log_q) / (a - 1)

    k = np.arange(-6000, 6001)
    for mu, shift in [(50.0, 3), (50.0, 10), (1000.0, 10)]:
        log_p = skellam.logpmf(k, mu / 2, mu / 2)
        log_q = skellam.logpmf(k - shift, mu / 2, mu / 2)
        keep = np.isfinite(log_p) & np.isfinite(log_q)
        log_p, log_q = log_p[keep], log_q[keep]
        orders = list(range(2, 41))
        base = [max(renyi(log_q, log_p, a), renyi(log_p, log_q, a)) for a in orders]
        for q in (0.1, 0.3):
            bound = ddp.subsampled_rdp(orders, q, np.array(base), "tight")
            log_mix = np.logaddexp(math.log1p(-q) + log_p, math.log(q) + log_q)
            for a, b in zip(orders, bound):
                assert renyi(log_p, log_mix, a) <= b * (1 + 1e-9)
                assert renyi(log_mix, log_p, a) <= b * (1 + 1e-9)


def test_the_tight_bound_needs_far_less_noise_at_small_epsilon_and_never_more():
    tight = {e: plan(dim=301_976, epsilon=e, bound="tight") for e in (0.5, 6.0)}
    general = {e: plan(dim=301_976, epsilon=e) for e in (0.5, 6.0)}
    for e in tight:
        assert tight[e].noise_multiplier < general[e].noise_multiplier
        assert tight[e].describe()["subsampling_bound"] == "tight"
        # still above the continuous Gaussian accountant's noise for the same (ε, δ, q, steps)
        assert tight[e].gaussian_equivalent > privacy.noise_multiplier(e, DELTA, 0.1, 300, "prv")
    assert general[0.5].noise_multiplier / tight[0.5].noise_multiplier > 5  # the general bound's floor


def test_an_unknown_bound_is_refused_and_the_default_keeps_every_hash():
    with pytest.raises(ValueError, match="unknown subsampling bound 'loose'"):
        ddp.subsampled_rdp([2, 3], 0.1, np.array([0.1, 0.2]), "loose")
    with pytest.raises(ValueError, match="bound must be one of"):
        plan(bound="loose")
    with pytest.raises(ValueError, match="subsampling_bound must be one of"):
        tiny(subsampling_bound="loose")
    with pytest.raises(ValueError, match="applies only to dp='distributed_dpsgd'"):
        fl.Experiment(subsampling_bound="tight")
    assert "subsampling_bound" not in tiny().to_dict() and tiny(subsampling_bound="tight").hash() != tiny().hash()
