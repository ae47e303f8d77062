"""benchmarks/fl_round.py and benchmarks/grid_floor.py at CI size (--smoke): every row runs, the JSON holds the
ratios, and the grid floor adds up the engine's own workload."""

import importlib.util
import json
from pathlib import Path

import pytest

from fedmedlib.privacy import accounting

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "fl_round.py"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH.parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fl_round_smoke_writes_every_row_with_ratios(real_data_root, tmp_path, monkeypatch):
    # The plumbing is under test, not the calibration (≈5-10 s per hospital with PRV): any σ will do.
    monkeypatch.setattr(accounting, "noise_multiplier", lambda *args, **kwargs: 1.0)
    spec = importlib.util.spec_from_file_location("fl_round", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "fl_round.json"
    bench.main(["--smoke", "--root", str(real_data_root), "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    expected = {(dp, row) for dp in ("none", "dpsgd") for row in bench.ROWS if row != "flower-recipe"}
    assert {(r["dp"], r["row"]) for r in rows} == expected
    assert all(r["seconds"] > 0 and r["vs_engine"] > 0 for r in rows)


def test_images_per_round_are_the_images_the_engine_trains_and_evaluates(real_data_root):
    from fedmedlib import fl
    from fedmedlib.experiments import grid
    from fedmedlib.config import QUICK
    from fedmedlib.data import load_bloodmnist

    labels = {s: load_bloodmnist(s, real_data_root)[1] for s in ("train", "test")}
    for n_clients, scheme in ((5, "paper"), (5, "dirichlet")):
        exp = grid.experiment(QUICK, "dp-sa-", n_clients, scheme, seed=1, local_epochs=2)
        fed = fl.Federation(exp, root=real_data_root)
        counted = fl.images_per_round(exp, labels)
        assert counted["trained"] == 2 * sum(len(h.train_idx) for h in fed.hospitals)
        assert counted["evaluated"] == len(fed.val_idx) + len(fed.y_test)


def test_grid_floor_smoke_adds_up_rounds_over_rates(real_data_root, tmp_path, monkeypatch):
    floor = _load("grid_floor")
    monkeypatch.setattr(floor, "rates", lambda *args: {"train": 100.0, "evaluate": 1000.0})
    out = tmp_path / "floor.json"
    result = floor.main(["--smoke", "--cores", "2", "--root", str(real_data_root), "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    images = result["images"]
    assert result["cells"] == 1 and images["trained"] > 0 and images["evaluated"] > 0
    expected = (images["trained"] / 100.0 + images["evaluated"] / 1000.0) / 2 / 3600
    assert result["floor_hours"] == {"fp32": pytest.approx(expected), "bf16": pytest.approx(expected)}
    trained_only = images["trained"] / 100.0 / 2 / 3600
    assert result["floor_hours_training_only"] == {"fp32": pytest.approx(trained_only),
                                                   "bf16": pytest.approx(trained_only)}
    plain = result["per_image_flops"]["dpresnet w16 plain"]
    assert plain["train"] > 2 * plain["evaluate"] > 0  # backward costs about twice the forward


def test_grid_floor_rejects_zero_cores():
    floor = _load("grid_floor")
    with pytest.raises(SystemExit):
        floor.main(["--smoke", "--cores", "0"])


def test_gpu_plan_dp_step_probe_times_every_strategy_and_keeps_the_fastest(tmp_path, monkeypatch):
    import os

    import torch

    spec = importlib.util.spec_from_file_location("gpu_paper_grid", BENCH.parents[1] / "scripts" / "gpu_paper_grid.py")
    plan = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plan)
    from fedmedlib.privacy import fastdp

    monkeypatch.delenv("FEDMED_FASTDP_STRATEGY", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)  # restored after
    log = tmp_path / "gpu.json"
    out = plan.dp_step_probe(8, "cpu", batch=4, steps=1, log=str(log), info=dict(device="cpu"))
    assert set(out["ms_per_step"]) == {f"{s}/cudnn.benchmark={a}/{n}" for s in fastdp.STRATEGIES
                                       for a in (False, True) for n in ("poisson", "fixed")}
    chosen = out["chosen"]
    key = f"{chosen['strategy']}/cudnn.benchmark={chosen['cudnn_benchmark']}/poisson"
    assert out["ms_per_step"][key] == min(v for k, v in out["ms_per_step"].items() if k.endswith("/poisson"))
    assert os.environ["FEDMED_FASTDP_STRATEGY"] == chosen["strategy"]
    assert torch.backends.cudnn.benchmark == chosen["cudnn_benchmark"]
    assert json.loads(log.read_text())["entries"][0]["kind"] == "dp_step_probe"


def test_grid_floor_counts_dp_sgd_flops_without_the_grouped_convolution_overcount():
    floor = _load("grid_floor")
    plain, dp = floor.per_image_flops("dpresnet", 16, False), floor.per_image_flops("dpresnet", 16, True)
    # per-sample weight gradients and the clipped sum: one more weight-gradient pass, not B more
    assert plain["train"] < dp["train"] < 2 * plain["train"] and dp["evaluate"] == plain["evaluate"]


def test_ceiling_cost_summary_is_the_median_epoch_over_repeats_against_width_16_and_resnet9():
    cost = _load("ceiling_cost")
    rate = dict(train_images_per_s=1.0, eval_images_per_s=1.0)
    rows = [dict(model="resnet9", width=16, train_images_per_cpu_s=t, eval_images_per_cpu_s=3 * t, **rate)
            for t in (90.0, 100.0, 500.0)]  # median 100: one fast outlier does not move it
    rows += [dict(model="resnet9", width=32, train_images_per_cpu_s=25.0, eval_images_per_cpu_s=75.0, **rate),
             dict(model="dpresnet", width=32, train_images_per_cpu_s=12.5, eval_images_per_cpu_s=37.5, **rate)]
    cells = cost.summarise(rows, n_train=1000, n_eval=300)
    assert cells["resnet9 w16"]["epoch_cpu_s"] == pytest.approx(1000 / 100 + 300 / 300)
    assert cells["resnet9 w16"]["repeats"] == 3
    assert cells["resnet9 w32"]["vs_width_16"] == pytest.approx(4.0)
    assert cells["dpresnet w32"]["vs_resnet9"] == pytest.approx(2.0)
    assert cells["dpresnet w32"]["vs_width_16"] is None  # DPResNet at width 16 was not measured


def test_ceiling_cost_smoke_times_the_ceiling_step_in_a_fresh_process(tmp_path):
    cost = _load("ceiling_cost")
    out = tmp_path / "cost.json"
    result = cost.main(["--models", "resnet9", "--widths", "16", "--repeats", "1", "--budget-s", "0.01",
                        "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    (row,) = result["rows"]
    assert row["train_images"] == 256 and row["eval_images"] == 768  # the 2-batch floor
    assert row["train_images_per_cpu_s"] > 0 and result["cells"]["resnet9 w16"]["vs_width_16"] == 1.0
    with pytest.raises(SystemExit):
        cost.main(["--repeats", "0", "--out", str(out)])
