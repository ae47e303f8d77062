import math
import warnings

import pytest
import torch

from fedmedlib import fl
from fedmedlib.fl import modes as plugs
from fedmedlib.privacy import gaussian_sigma

# Accountant outputs are compared with a stated tolerance, never exactly: the same ε computed in another
# process (a Flower worker) or another order differs in its last digit (5.995327573578496 vs ...4946).
EPS_TOL = 1e-9


def tiny(**kw):
    base = dict(n_clients=3, scheme="iid", rounds=2, width=8, train_subset=240, eval_subset=100, seed=1)
    return fl.Experiment(**{**base, **kw})


def test_update_ldp_plug_really_adds_the_as_coded_noise():
    plug = plugs.make_private(tiny(dp="update_ldp"))
    assert plug.spent() == 0.0  # nothing released yet
    update = torch.full((200_000,), 1e-3)  # norm 0.45 < clip 7: clipping leaves it unchanged
    released = plug.privatize_update(update, cid=0, rnd=1)
    assert math.isclose(float((released - update).std()), gaussian_sigma(6.0, 1.9e-4), rel_tol=0.01)
    assert plug.spent() > 80  # one round of sigma/C = 0.0998 is worth ε ≈ 85, not 6


def test_drop_noise_is_the_flower_bug_reproduction_and_spends_infinite_epsilon():
    plug = plugs.make_private(tiny(dp="update_ldp", drop_noise=True))
    update = torch.randn(10_000) * 10
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        released = plug.privatize_update(update, cid=0, rnd=1)
    assert math.isclose(float(released.norm()), 7.0, rel_tol=1e-5)  # clipped, and nothing more
    assert plug.spent() == math.inf


def test_client_level_distributed_noise_shares_and_server_top_up():
    plug = plugs.make_private(tiny(dp="client_level", n_clients=4, noise_multiplier=1.0, clip=1.0))
    zero = torch.zeros(400_000)
    share = plug.privatize_update(zero, cid=0, rnd=1)
    assert math.isclose(float(share.std()), 1.0 / math.sqrt(4), rel_tol=0.01)  # z*S/sqrt(n)
    assert torch.equal(plug.server_noise(zero, rnd=1, survivors=4), zero)  # all shares present: no top-up
    topped = plug.server_noise(zero, rnd=1, survivors=2)
    assert math.isclose(float(topped.std()), math.sqrt(1 - 2 / 4) / 2, rel_tol=0.01)  # on the mean of 2


def test_client_level_central_noise_and_uniform_weights():
    plug = plugs.make_private(tiny(dp="client_level", noise_placement="central", noise_multiplier=2.0, clip=0.5))
    zero = torch.zeros(400_000)
    assert torch.equal(plug.privatize_update(zero, 0, 1), zero)
    assert math.isclose(float(plug.server_noise(zero, 1, 4).std()), 2.0 * 0.5 / 4, rel_tol=0.01)
    assert plug.weight(0, 1000) == plug.weight(1, 10) == 1.0


def test_bad_dp_requests_are_clear_errors():
    with pytest.raises(ValueError, match="use model='dpresnet'"):
        plugs.make_private(tiny(dp="dpsgd", model="resnet9"))
    with pytest.raises(ValueError, match="noise_placement"):
        plugs.make_private(tiny(dp="client_level", noise_placement="local"))


@pytest.mark.parametrize("dp", ["dpsgd", "client_level"])
def test_every_hospital_spends_exactly_the_target_epsilon_by_the_last_round(real_data_root, dp):
    exp = tiny(dp=dp)
    private, aggregator = plugs.make_plugs(exp)
    r = fl.run_federated(exp, root=real_data_root, progress=False, private=private, aggregator=aggregator)
    assert r["rounds"][0]["epsilon"] < 6.0
    assert math.isclose(r["rounds"][-1]["epsilon"], 6.0, rel_tol=0.02)


def test_dpsgd_resume_restores_budget_and_noise_stream(real_data_root, tmp_path, interrupted_run):
    exp = tiny(dp="dpsgd")
    full = fl.run_federated(exp, root=real_data_root, progress=False, private=plugs.make_private(exp))
    interrupted_run(exp, real_data_root, tmp_path / "ck.pt", private=plugs.make_private(exp))
    resumed = fl.run_federated(exp, root=real_data_root, checkpoint=tmp_path / "ck.pt", progress=False,
                               private=plugs.make_private(exp))
    assert [h["test_loss"] for h in resumed["rounds"]] == [h["test_loss"] for h in full["rounds"]]
    assert resumed["rounds"][-1]["epsilon"] == pytest.approx(full["rounds"][-1]["epsilon"], rel=EPS_TOL)
