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


@pytest.fixture
def installed(monkeypatch, tmp_path):
    """fedmedlib as installed from a wheel: no clone around it, the committed results packaged, a fresh home."""
    packaged = tmp_path / "site-packages" / "fedmedlib" / "_results"
    packaged.mkdir(parents=True)
    monkeypatch.setattr(results, "repo_results", lambda: None)
    monkeypatch.setattr(results, "PACKAGED", packaged)
    monkeypatch.delenv("FEDMED_RESULTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return packaged


def test_results_dir_order_argument_env_clone_then_packaged(installed, monkeypatch, tmp_path):
    assert results.results_dir() == installed
    monkeypatch.setenv("FEDMED_RESULTS", str(tmp_path / "env"))
    assert results.results_dir() == tmp_path / "env" and results.write_dir() == tmp_path / "env"
    assert results.results_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.setattr(results, "repo_results", lambda: tmp_path / "clone")
    monkeypatch.delenv("FEDMED_RESULTS")
    assert results.results_dir() == tmp_path / "clone"


def test_installed_library_reads_the_packaged_results(installed):
    results.save(_result({"x": 1}), "demo", {"x": 1}, installed)  # as committed
    assert results.load("demo", {"x": 1})["value"] == 42
    assert results.find("demo", {"x": 1}) == installed / results.result_path("demo", {"x": 1}).name


def test_installed_library_writes_new_results_to_the_users_folder_and_reads_both(installed, tmp_path):
    results.save(_result({"x": 1}), "demo", {"x": 1}, installed)
    path = results.save(dict(_result({"x": 2}), value=7), "demo", {"x": 2})
    assert path.parent == tmp_path / "home" / ".fedmed" / "results"
    assert sorted(p.name for p in installed.iterdir()) == [results.result_path("demo", {"x": 1}).name]
    assert {r["config"]["x"] for r in results.load_all("demo")} == {1, 2}
    results.save(dict(_result({"x": 1}), value=8), "demo", {"x": 1})  # the user's own rerun of a committed one
    assert results.load("demo", {"x": 1})["value"] == 8  # the user's folder first


def test_a_missing_result_says_which_command_produces_it(installed):
    with pytest.raises(FileNotFoundError, match="scripts/run_grid.py"):
        results.load_or_run("federated", {"x": 3}, lambda: {}, allow_run=False)


def test_lookups_are_logged_when_asked(installed, monkeypatch, tmp_path):
    log = tmp_path / "lookups.jsonl"
    monkeypatch.setenv("FEDMED_RESULTS_LOG", str(log))
    results.save(_result({"x": 1}), "demo", {"x": 1}, installed)
    results.load("demo", {"x": 1}), results.load("demo", {"x": 2})
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["found"] is not None for line in lines] == [True, False]
