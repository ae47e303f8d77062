"""The Flower path against the in-process engine: same seeds, same hospitals, same global model."""

import os
import time
import tomllib
from importlib import import_module
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, Metadata, RecordDict
from flwr.clientapp.mod import LocalDpMod

from fedmedlib import fl
from fedmedlib.fl import modes as plugs
from fedmedlib.flower import SecAggSettings, check_secagg, dp_mod_for, make_client_app, run_flower_simulation, wire

# Accountant outputs are compared with a stated tolerance, never exactly: the same ε computed in another
# process (a Flower worker) or another order differs in its last digit (5.995327573578496 vs ...4946).
EPS_TOL = 1e-9


ROOT = Path(__file__).resolve().parent.parent


def tiny(**kw):
    base = dict(n_clients=3, scheme="iid", rounds=2, width=8, train_subset=240, eval_subset=100, seed=1)
    return fl.Experiment(**{**base, **kw})


@pytest.fixture(scope="module", autouse=True)
def flower_home(tmp_path_factory):
    """Flower writes state under FLWR_HOME: keep it out of the user's home during tests."""
    old = os.environ.get("FLWR_HOME")
    os.environ["FLWR_HOME"] = str(tmp_path_factory.mktemp("flwr_home"))
    yield
    os.environ.pop("FLWR_HOME") if old is None else os.environ.__setitem__("FLWR_HOME", old)


def in_process(exp, root, tmp_path, private=None):
    """fl.run_federated's history and final global model, on one thread like a Ray client (num_cpus=1).

    Different thread counts sum convolutions in a different order: the models then differ by ~1e-6 after
    one round, and Adam amplifies that to ~1e-3 after two. One thread on both sides makes them bit-equal.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        history = fl.run_federated(exp, root=root, checkpoint=tmp_path / "ck.pt", progress=False, private=private)
    finally:
        torch.set_num_threads(threads)
    return history, torch.load(tmp_path / "ck.pt", weights_only=False)["global_flat"]


@pytest.fixture(scope="module")
def plain(real_data_root, tmp_path_factory):
    exp = tiny()
    ref, ref_flat = in_process(exp, real_data_root, tmp_path_factory.mktemp("plain"))
    history, flat = run_flower_simulation(exp, root=real_data_root, return_model=True)
    return ref, ref_flat, history, flat


@pytest.fixture(scope="module")
def secure(real_data_root, tmp_path_factory):
    """One SecAgg+ round: after that, Adam amplifies the quantization error and only chaos is compared."""
    exp = tiny(rounds=1)
    ref, ref_flat = in_process(exp, real_data_root, tmp_path_factory.mktemp("secagg"))
    history, flat = run_flower_simulation(exp, secagg=True, num_shares=3, threshold=2, root=real_data_root,
                                          return_model=True)
    return ref, ref_flat, history, flat


@pytest.fixture(scope="module")
def dpsgd(real_data_root, tmp_path_factory):
    exp = tiny(dp="dpsgd")
    ref, ref_flat = in_process(exp, real_data_root, tmp_path_factory.mktemp("dpsgd"), plugs.make_private(exp))
    history, flat = run_flower_simulation(exp, root=real_data_root, return_model=True)
    return ref, ref_flat, history, flat


@pytest.fixture(scope="module")
def client_level(real_data_root, tmp_path_factory):
    """Distributed noise shares; hospital 1 drops out of round 2, so the server tops up its missing share."""
    exp = tiny(dp="client_level", noise_placement="distributed", clip=0.5, dropout_schedule=((2, (1,)),))
    ref, ref_flat = in_process(exp, real_data_root, tmp_path_factory.mktemp("client"), plugs.make_private(exp))
    history, flat = run_flower_simulation(exp, root=real_data_root, return_model=True)
    return ref, ref_flat, history, flat


@pytest.fixture(scope="module")
def secure_client_level(real_data_root, tmp_path_factory):
    """Distributed DP noise under Flower's SecAgg+, one round: uniform weights (num_examples 1, max_weight 1)."""
    exp = tiny(dp="client_level", noise_placement="distributed", clip=0.5, rounds=1)
    ref, ref_flat = in_process(exp, real_data_root, tmp_path_factory.mktemp("secure_dp"), plugs.make_private(exp))
    history, flat = run_flower_simulation(exp, secagg=True, num_shares=3, threshold=2, root=real_data_root,
                                          return_model=True)
    return ref, ref_flat, history, flat


def train_message(exp, start, rnd, root):
    content = RecordDict({wire.ARRAYS: ArrayRecord({wire.FLAT: Array(start)}),
                          wire.CONFIG: ConfigRecord({wire.ROUND: rnd, wire.EXPERIMENT: wire.experiment_to_json(exp),
                                                     wire.DATA_ROOT: str(root)})})
    # Explicit metadata: Message(content, dst_node_id=...) reads the run id of a running ServerApp, which a test
    # that calls the ClientApp directly (no simulation before it) does not have.
    metadata = Metadata(run_id=1, message_id=f"m{rnd}", src_node_id=0, dst_node_id=1, reply_to_message_id="",
                        group_id=str(rnd), created_at=time.time(), ttl=3600.0, message_type=MessageType.TRAIN)
    return Message(content, metadata=metadata)


def hospital_context(partition_id=0):
    return Context(run_id=1, node_id=1, node_config={"partition-id": partition_id, "num-partitions": 3},
                   state=RecordDict(), run_config={})


def test_flower_fedavg_gives_the_in_process_global_model(plain):
    ref, ref_flat, history, flat = plain
    diff = (flat - ref_flat).abs().max().item()
    print(f"max |flower - in-process| after 2 rounds: {diff:.3e}")
    assert diff <= 1e-5
    assert [h["test_loss"] for h in history["rounds"]] == pytest.approx([h["test_loss"] for h in ref["rounds"]],
                                                                       abs=1e-5)


def test_flower_history_has_the_in_process_shape(plain):
    ref, _, history, _ = plain
    assert set(ref) <= set(history) and set(ref["rounds"][0]) <= set(history["rounds"][0])
    assert history["experiment_hash"] == ref["experiment_hash"] and history["hospital_sizes"] == ref["hospital_sizes"]
    assert [h["clients"] for h in history["rounds"]] == [h["clients"] for h in ref["rounds"]]
    best = max(history["rounds"], key=lambda h: h["val_accuracy"])
    assert history["test_accuracy_at_best_val"] == best["test_accuracy"] and history["provenance"]["git_commit"]
    assert history["rounds"][0]["train_loss"] == pytest.approx(ref["rounds"][0]["train_loss"], abs=1e-6)


def test_secagg_plus_round_is_within_its_quantization_tolerance(secure):
    _, ref_flat, history, flat = secure
    record = history["rounds"][0]
    diff = (flat - ref_flat).abs().max().item()
    print(f"max |SecAgg+ - exact| after 1 round: {diff:.3e}, bound {record['tolerance']:.3e}")
    assert record["aggregator"] == "flower-secagg+" and record["aggregated"] == 3
    # bound: n clients x one quantization step 2*8/2^22 / sum of weight ratios; + float32 rounding of the result
    assert 0 < diff <= record["tolerance"] * 1.001 + 1e-7 * ref_flat.abs().max().item()


def test_even_num_shares_below_the_client_count_is_refused_before_flower_crashes():
    with pytest.raises(ValueError, match="IndexError. Use an odd num_shares"):
        run_flower_simulation(tiny(n_clients=5), secagg=True, num_shares=4, threshold=2)


def test_threshold_above_the_client_count_is_refused():
    with pytest.raises(ValueError, match="threshold=4 exceeds the 3 clients"):
        check_secagg(tiny(), SecAggSettings(num_shares=5, threshold=4))


def test_experiment_survives_the_wire_and_the_run_config():
    exp = tiny(dropout_schedule=((2, (0, 1)),), train_subset=None)
    assert wire.experiment_from_json(wire.experiment_to_json(exp)).hash() == exp.hash()
    run_config = {"n-clients": 3, "scheme": "iid", "rounds": 2, "width": 8, "train-subset": 240,
                  "eval-subset": 100, "seed": 1, "secagg": False}
    assert wire.experiment_from_run_config(run_config).hash() == tiny().hash()
    with pytest.raises(ValueError, match="unknown run-config keys"):
        wire.experiment_from_run_config({"n-client": 3})
    # chapter 9's command for the noise split under SecAgg+: secagg=true makes the experiment's aggregator secagg
    should = wire.experiment_from_run_config({"dp": "distributed_dpsgd", "secagg": True, "secagg-threshold": 3,
                                              "n-clients": 5, "batch-size": 256, "lr": 2.0, "clip": 1.0,
                                              "rounds": 6, "eval-every": 3, "schedule": "cosine", "ema": 0.999})
    assert (should.dp, should.aggregator, should.secagg_threshold, should.eval_every) == (
        "distributed_dpsgd", "secagg", 3, 3)


def test_dp_mod_inside_the_client_app_clips_the_update(real_data_root):
    exp = tiny()
    start = fl.get_flat(fl.Federation(exp, root=real_data_root).model).numpy()
    app = make_client_app(dp_mod=LocalDpMod(clipping_norm=0.01, sensitivity=0.0, epsilon=1.0, delta=1e-5))
    reply = app(train_message(exp, start, 1, real_data_root), hospital_context())
    new = reply.content[wire.ARRAYS][wire.FLAT].numpy()
    assert reply.content[wire.METRICS][wire.NUM_EXAMPLES] > 0
    assert np.linalg.norm(new - start) == pytest.approx(0.01, rel=1e-3)  # a real update, clipped to 0.01


def test_pyproject_declares_the_flower_apps():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]
    for ref in tool["app"]["components"].values():
        module, attr = ref.split(":")
        assert hasattr(import_module(module), attr)
    assert wire.experiment_from_run_config(tool["app"]["config"]).n_clients >= 2


@pytest.mark.parametrize("mode", ["dpsgd", "client_level"])
def test_flower_dp_gives_the_in_process_global_model_and_epsilon(mode, request):
    """Same seed, same plug objects, released updates on the wire: bit-equal models and the same ε per round."""
    ref, ref_flat, history, flat = request.getfixturevalue(mode)
    diff = (flat - ref_flat).abs().max().item()
    epsilons = [h["epsilon"] for h in history["rounds"]]
    print(f"{mode}: max |flower - in-process| after 2 rounds: {diff:.3e}; epsilon {epsilons}")
    assert diff <= 1e-5
    assert [h["epsilon"] for h in history["rounds"]] == pytest.approx([h["epsilon"] for h in ref["rounds"]],
                                                                     rel=EPS_TOL)
    assert [h["test_loss"] for h in history["rounds"]] == pytest.approx([h["test_loss"] for h in ref["rounds"]],
                                                                       abs=1e-5)
    assert history["rounds"][-1]["epsilon"] == pytest.approx(6.0, rel=0.02)  # the whole budget, spent by the end


def test_client_level_noise_shares_under_secagg_plus_are_within_its_quantization_tolerance(secure_client_level):
    """Not bit-equal: SecAgg+ quantizes each noised update (stochastic rounding), as for the plain mean above."""
    ref, ref_flat, history, flat = secure_client_level
    record = history["rounds"][0]
    diff = (flat - ref_flat).abs().max().item()
    print(f"client_level + SecAgg+: max |flower - in-process| after 1 round: {diff:.3e}, "
          f"bound {record['tolerance']:.3e}")
    assert record["aggregator"] == "flower-secagg+" and record["max_weight"] == 1.0
    assert 0 < diff <= record["tolerance"] * 1.001 + 1e-7 * ref_flat.abs().max().item()
    assert record["epsilon"] == pytest.approx(ref["rounds"][0]["epsilon"], rel=EPS_TOL)


def test_client_level_round_with_a_dropout_aggregates_the_survivors(client_level):
    ref, _, history, _ = client_level
    assert [h["aggregated"] for h in history["rounds"]] == [h["aggregated"] for h in ref["rounds"]] == [3, 2]


def test_dpsgd_budget_survives_in_context_state_across_fresh_client_apps(real_data_root):
    """A deployed ClientApp is rebuilt per message: the accountant, steps and noise stream live in Context.state."""
    exp = tiny(dp="dpsgd")
    start = fl.get_flat(fl.Federation(exp, root=real_data_root).model).numpy()
    context, epsilons = hospital_context(partition_id=2), []
    for rnd in (1, 2):
        reply = make_client_app()(train_message(exp, start, rnd, real_data_root), context)
        epsilons.append(reply.content[wire.METRICS][wire.EPSILON])
    saved = context.state.config_records[wire.DP_STATE]
    private = plugs.make_private(exp)
    fed = fl.Federation(exp, root=real_data_root, private=private)
    for rnd in (1, 2):
        fed.local_update(fed.hospitals[2], torch.from_numpy(start), rnd)
    assert epsilons[0] < epsilons[1] == pytest.approx(6.0, rel=0.02)  # the second round adds to the first
    assert int(saved["steps"]) == private.state_dict()[2]["steps"]
    assert epsilons[1] == private.spent()


def test_update_ldp_drop_noise_runs_through_the_plug_and_spends_infinite_epsilon(real_data_root):
    """BUG REPRODUCTION (Flower < 1.14): clipped to C, no noise; Flower 1.42's own LocalDpMod cannot do this."""
    exp = tiny(dp="update_ldp", drop_noise=True, clip=0.01)
    start = fl.get_flat(fl.Federation(exp, root=real_data_root).model).numpy()
    reply = make_client_app()(train_message(exp, start, 1, real_data_root), hospital_context())
    update = reply.content[wire.ARRAYS][wire.UPDATE].numpy()
    assert np.linalg.norm(update) == pytest.approx(0.01, rel=1e-4)
    assert reply.content[wire.METRICS][wire.EPSILON] == float("inf")
    with pytest.raises(ValueError, match="without a dp_mod"):
        dp_mod_for(exp)


def test_a_flower_dp_mod_on_top_of_a_dp_mode_is_refused(real_data_root):
    exp = tiny(dp="update_ldp")
    start = fl.get_flat(fl.Federation(exp, root=real_data_root).model).numpy()
    app = make_client_app(dp_mod=dp_mod_for(exp))
    with pytest.raises(ValueError, match="privatized twice. Use make_client_app\\(\\) without dp_mod"):
        app(train_message(exp, start, 1, real_data_root), hospital_context())


def test_dpsgd_on_a_batchnorm_model_is_refused_before_ray_starts():
    with pytest.raises(ValueError, match="use model='dpresnet'"):
        run_flower_simulation(tiny(dp="dpsgd", model="resnet9"))


def test_distributed_dp_on_flower_secagg_is_the_in_process_step_up_to_flowers_quantization(real_data_root):
    from fedmedlib.fl.distributed import FLOWER_GUARANTEE
    from fedmedlib.flower.server_app import secagg_tolerance

    exp = tiny(n_clients=5, rounds=1, dp="distributed_dpsgd", aggregator="secagg", secagg_threshold=3,
               batch_size=64, lr=1.0, clip=1.0, eval_every=1)
    history, flat = run_flower_simulation(exp, num_shares=5, threshold=3, root=real_data_root, return_model=True)
    # In process: the same hospitals' Gaussian shares (the same seeds), summed exactly, and the same server step
    private = plugs.make_private(exp)
    fed = fl.Federation(exp, device="cpu", root=real_data_root)
    private.setup(fed)
    start = fl.get_flat(fed.model).clone()
    total = sum(private.gaussian_share(fed, h.cid, start, 1) for h in fed.hospitals)
    expected = private.server_step_gradient(total, start)
    # Flower's SecAgg+ quantizes each input (2^22 levels over ±8): the mean is off by at most `tolerance`
    settings = SecAggSettings(5, 3, max_weight=1.0)
    bound = exp.lr * 5 * secagg_tolerance(settings, [1.0] * 5, 1.0) + 1e-6
    assert torch.max(torch.abs(flat - expected)) < bound
    assert history["rounds"][0]["aggregated"] == 5 and history["rounds"][0]["guarantee"] == FLOWER_GUARANTEE
    assert history["rounds"][-1]["epsilon"] == pytest.approx(private.plan.epsilon_for(private.plan.mu, 1),
                                                             rel=EPS_TOL)
    assert history["privacy"]["accountant"] == "skellam_rdp"


def test_distributed_dp_on_flower_refuses_the_clear_and_a_low_threshold(real_data_root):
    exp = tiny(n_clients=5, rounds=1, dp="distributed_dpsgd", aggregator="secagg", secagg_threshold=4,
               batch_size=64, lr=1.0, clip=1.0)
    with pytest.raises(ValueError, match="only a secure sum is private|Run it with SecAgg"):
        run_flower_simulation(exp, secagg=False, root=real_data_root)
