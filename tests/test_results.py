import json

import pytest

from fedmedlib.experiments import results
from fedmedlib.config import CPU, QUICK
from fedmedlib.experiments.runs import centralized_config


def _result(config):
    return {"config": config, "seed": 0, "provenance": {"git_commit": "x"}, "wall_time_s": 1.0, "value": 42}


def test_config_hash_is_stable_and_key_order_free():
    assert results.config_hash({"a": 1, "b": 2}) == results.config_hash({"b": 2, "a": 1})
    assert results.config_hash({"a": 1}) != results.config_hash({"a": 2})
    assert len(results.config_hash({})) == 10


def test_load_or_run_runs_once_then_reads_the_file(tmp_path):
    config, calls = {"x": 1}, []
    run = lambda: calls.append(1) or _result(config)  # noqa: E731
    first = results.load_or_run("demo", config, run, directory=tmp_path)
    second = results.load_or_run("demo", config, run, directory=tmp_path)
    assert calls == [1] and first["value"] == second["value"] == 42
    saved = json.loads(results.result_path("demo", config, tmp_path).read_text())
    assert saved["name"] == "demo" and saved["config_hash"] == results.config_hash(config)


def test_missing_result_without_permission_to_run_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no cached result"):
        results.load_or_run("demo", {"x": 2}, lambda: {}, directory=tmp_path, allow_run=False)


def test_a_result_without_provenance_cannot_be_saved(tmp_path):
    with pytest.raises(ValueError, match="provenance"):
        results.save({"config": {}, "seed": 0, "wall_time_s": 1}, "demo", {}, tmp_path)


def test_bad_names_are_refused(tmp_path):
    with pytest.raises(ValueError):
        results.result_path("a/b", {}, tmp_path)


def test_committed_cpu_baselines_exist_and_carry_provenance():
    for model in ("dpresnet", "resnet9"):
        for seed in CPU.seeds:
            r = results.load("centralized", centralized_config(CPU, model, seed))
            assert r is not None, f"missing CPU baseline {model} seed {seed}: run scripts/run_baselines.py"
            assert r["seed"] == seed and r["config"]["model"] == model and r["n_train"] == 11959
            assert r["provenance"]["git_commit"] != "unknown" and r["provenance"]["versions"]["torch"]
            assert len(r["history"]) == CPU.centralized_epochs


def test_quick_profile_configs_differ_from_cpu():
    assert results.config_hash(centralized_config(QUICK, "dpresnet", 0)) != \
        results.config_hash(centralized_config(CPU, "dpresnet", 0))


def test_a_claim_is_exclusive_and_released(tmp_path):
    with results.claim("federated-abc", tmp_path) as mine:
        assert mine and (tmp_path / "federated-abc.claim").is_file()
        with results.claim("federated-abc", tmp_path) as second:
            assert not second  # this process is alive, so its claim stands
    assert not (tmp_path / "federated-abc.claim").exists()
    with results.claim("federated-abc", tmp_path) as again:
        assert again


def test_a_claim_left_by_a_dead_worker_is_taken_over(tmp_path):
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "cell.claim").write_text(f"{socket.gethostname()} {int(dead.stdout)}")
    with results.claim("cell", tmp_path) as mine:
        assert mine
    (tmp_path / "cell.claim").write_text("another-host 1")  # cannot be checked from here: respected
    with results.claim("cell", tmp_path) as mine:
        assert not mine
    with pytest.raises(ValueError, match="claim key"):
        with results.claim("a/b", tmp_path):
            pass
