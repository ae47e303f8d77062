"""The Flower path against the in-process engine: same seeds, same hospitals, same global model."""

import os
import tomllib
from importlib import import_module
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp.mod import LocalDpMod

from fedmedlib import fl
from fedmedlib.flower import SecAggSettings, check_secagg, make_client_app, run_flower_simulation, wire

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


def in_process(exp, root, tmp_path):
    """fl.run_federated's history and final global model, on one thread like a Ray client (num_cpus=1).

    Different thread counts sum convolutions in a different order: the models then differ by ~1e-6 after
    one round, and Adam amplifies that to ~1e-3 after two. One thread on both sides makes them bit-equal.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        history = fl.run_federated(exp, root=root, checkpoint=tmp_path / "ck.pt", progress=False)
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


def test_dp_mod_inside_the_client_app_clips_the_update(real_data_root):
    exp = tiny()
    start = fl.get_flat(fl.Federation(exp, root=real_data_root).model).numpy()
    app = make_client_app(dp_mod=LocalDpMod(clipping_norm=0.01, sensitivity=0.0, epsilon=1.0, delta=1e-5))
    content = RecordDict({wire.ARRAYS: ArrayRecord({wire.FLAT: Array(start)}),
                          wire.CONFIG: ConfigRecord({wire.ROUND: 1, wire.EXPERIMENT: wire.experiment_to_json(exp),
                                                     wire.DATA_ROOT: str(real_data_root)})})
    msg = Message(content, dst_node_id=1, message_type=MessageType.TRAIN)
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 0, "num-partitions": 3}, state=RecordDict(),
                      run_config={})
    reply = app(msg, context)
    new = reply.content[wire.ARRAYS][wire.FLAT].numpy()
    assert reply.content[wire.METRICS][wire.NUM_EXAMPLES] > 0
    assert np.linalg.norm(new - start) == pytest.approx(0.01, rel=1e-3)  # a real update, clipped to 0.01


def test_pyproject_declares_the_flower_apps():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]
    for ref in tool["app"]["components"].values():
        module, attr = ref.split(":")
        assert hasattr(import_module(module), attr)
    assert wire.experiment_from_run_config(tool["app"]["config"]).n_clients >= 2
