"""The non-private ceiling (fedmedlib.ceiling, experiments.ceiling_search, scripts/run_ceilings.py): the recipe refuses
bad input, augmentation keeps labels and permutes pixels exactly, the cache key is stable, the script's quick mode
writes results with provenance, and a checkpointed run resumes."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from fedmedlib.augment import augment
from fedmedlib.ceiling import CeilingRecipe, train_ceiling
from fedmedlib.experiments import ceiling_search, results

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "run_ceilings.py"
TINY = CeilingRecipe("tiny", width=8, epochs=1, batch_size=32)


@pytest.mark.parametrize("changes, match", [
    (dict(model="vgg"), "model"), (dict(width=12), "multiple of 8"), (dict(optimizer="rmsprop"), "optimizer"),
    (dict(schedule="step"), "schedule"), (dict(precision="fp16"), "precision"), (dict(augment="yes"), "augment"),
    (dict(epochs=0), "epochs"), (dict(batch_size=1), "BatchNorm"), (dict(lr=0), "lr > 0"),
    (dict(label_smoothing=1.0), "label_smoothing"), (dict(shift=9), "shift")])
def test_recipe_refuses_bad_settings_with_a_clear_error(changes, match):
    with pytest.raises(ValueError, match=match):
        CeilingRecipe(**changes)


def test_flips_and_quarter_turns_are_exact_pixel_permutations_per_image():
    x = torch.rand(16, 3, 28, 28)
    out = augment(x, 1, generator=torch.Generator().manual_seed(0), shift=0)
    assert out.shape == x.shape
    for a, b in zip(x, out):  # each copy holds exactly its own image's pixels, rearranged
        assert torch.equal(a.flatten(1).sort(dim=1).values, b.flatten(1).sort(dim=1).values)
        turns = [torch.rot90(f, t, dims=(-2, -1)) for f in (a, a.flip(-1)) for t in range(4)]
        assert any(torch.equal(b, t) for t in turns)


def test_shifts_stay_inside_the_reflect_padded_frame():
    x = torch.rand(8, 3, 28, 28)
    out = augment(x, 1, generator=torch.Generator().manual_seed(1), shift=2)
    centre_rows = out[..., 2:-2, 2:-2]  # a 24x24 window every ≤2-px shift keeps from the (turned) original
    assert all(any(torch.equal(c, torch.rot90(f, t, (-2, -1))[..., dy:dy + 24, dx:dx + 24])
                   for f in (a, a.flip(-1)) for t in range(4) for dy in range(5) for dx in range(5))
               for a, c in zip(x, centre_rows))


def test_cache_key_ignores_the_name_and_records_every_setting():
    a, b = ceiling_search.START, ceiling_search.START.replace(name="renamed")
    assert ceiling_search.key(a, 0) == ceiling_search.key(b, 0)
    assert results.config_hash(ceiling_search.key(a, 0)) == "3463d282b9"  # pinned: result file names depend on it
    assert ceiling_search.key(a.replace(precision="bf16"), 0) != ceiling_search.key(a, 0)  # bf16 is cached apart
    assert set(ceiling_search.key(a, 0)["recipe"]) == set(a.to_dict()) - {"name"}


def test_every_start_value_has_a_reason_and_the_search_moves_one_knob_at_a_time():
    assert set(ceiling_search.START_REASONS) == set(ceiling_search.START.to_dict()) - {"name"}
    for (name, changes), recipe in zip(ceiling_search.SEARCH, ceiling_search.search_recipes()):
        assert recipe.replace(name="start", **{k: getattr(ceiling_search.START, k) for k in changes}) \
            == ceiling_search.START


def test_the_chosen_recipe_is_the_best_validation_trial_found(tmp_path):
    recipes = ceiling_search.search_recipes()
    for recipe, val, test in ((recipes[0], 0.90, 0.99), (recipes[3], 0.95, 0.80)):
        results.save(dict(config={}, seed=0, provenance={}, wall_time_s=1.0, val_accuracy_best=val,
                          test_accuracy_at_best_val=test), "ceiling", ceiling_search.key(recipe, 0), tmp_path)
    assert ceiling_search.chosen(tmp_path)[0] == recipes[3]  # by validation, though its test is lower
    assert ceiling_search.chosen(tmp_path / "empty")[0] == ceiling_search.START
    assert [s for _, s in ceiling_search.plan("seeds", tmp_path)] == [1, 2, 1, 2]


def test_estimated_cost_follows_the_measured_throughputs():
    r = ceiling_search.START
    assert ceiling_search.estimated_minutes(r.replace(width=64)) > 5 * ceiling_search.estimated_minutes(r)
    assert ceiling_search.estimated_minutes(r.replace(model="dpresnet")) > ceiling_search.estimated_minutes(r)


def test_estimated_cost_uses_the_side_by_side_benchmark_where_it_has_the_cell():
    report = dict(cells={"resnet9 w16": dict(train_images_per_cpu_s=100.0, eval_images_per_cpu_s=300.0)})
    r = ceiling_search.START  # 30 epochs, batch 128, fp32: what the benchmark times
    assert ceiling_search.estimated_minutes(r, 1000, 300, report) == pytest.approx(30 * (10 + 1) / 60)
    by_constants = ceiling_search.estimated_minutes(r, 1000, 300, {})
    assert by_constants == pytest.approx(30 * (1000 / 460 + 300 / (3 * 460)) / 60)
    assert ceiling_search.estimated_minutes(r.replace(batch_size=32), 1000, 300, report) == by_constants


def test_table_shows_missing_rows_as_none(tmp_path):
    rows = ceiling_search.table(tmp_path)
    assert len(rows) == 6 and all(r["n"] == 0 and r["mean"] is None and r["missing_seeds"] == [0, 1, 2] for r in rows)
    assert ceiling_search.width_cost(rows, "resnet9", 64) is None


def test_quick_mode_writes_results_with_provenance_and_lists_them_done(tmp_path, real_data_root, capsys, monkeypatch):
    monkeypatch.setenv("FEDMED_PROGRESS", "0")
    spec = importlib.util.spec_from_file_location("run_ceilings", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--stage", "search", "--quick", "--results-dir", str(tmp_path), "--limit", "1", "--device", "cpu"])
    [path] = tmp_path.glob("ceiling-*.json")
    saved = json.loads(path.read_text())
    assert saved["kind"] == "ceiling" and saved["provenance"]["device"].startswith("cpu")
    assert {"git_commit", "versions", "finished_utc"} <= set(saved["provenance"])
    assert saved["config"]["recipe"]["width"] == 8 and saved["n_train"] == 300 and len(saved["history"]) == 1
    capsys.readouterr()
    script.main(["--stage", "search", "--quick", "--results-dir", str(tmp_path), "--list"])
    assert capsys.readouterr().out.splitlines()[0].startswith("done")


def test_list_filters_runs_by_model_and_full_scale_width(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("run_ceilings", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--stage", "widths", "--results-dir", str(tmp_path), "--list", "--models", "dpresnet",
                 "--widths", "16", "32"])
    listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("todo  ", "done  "))]
    assert len(listed) == 2 and all(" dpresnet " in line for line in listed)
    assert [line.split()[4] for line in listed] == ["w16", "w32"]
    # --quick halves the width, but the filter names the full-scale run: width 16 still selects the w16 run
    script.main(["--stage", "widths", "--results-dir", str(tmp_path), "--list", "--quick", "--models", "dpresnet",
                 "--widths", "16"])
    listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("todo  ", "done  "))]
    assert len(listed) == 1 and listed[0].split()[4] == "w8"


def test_quick_mode_refuses_to_write_into_the_repository(monkeypatch):
    monkeypatch.delenv("FEDMED_RESULTS", raising=False)
    spec = importlib.util.spec_from_file_location("run_ceilings", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with pytest.raises(SystemExit):
        script.main(["--quick"])


def _interrupt_in_epoch_2(recipe, ckpt, kw, monkeypatch):
    """Run `recipe` with checkpoints until epoch 2's validation raises, as a killed worker would stop."""
    import fedmedlib.ceiling as ceiling_module

    original, calls = ceiling_module.evaluate, {"n": 0}

    def crash_in_epoch_2(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # epoch 2's validation
            raise KeyboardInterrupt
        return original(*a, **k)

    monkeypatch.setattr(ceiling_module, "evaluate", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_ceiling(recipe, checkpoint=ckpt, **kw)
    monkeypatch.setattr(ceiling_module, "evaluate", original)


def test_an_interrupted_run_resumes_from_its_checkpoint_to_the_same_result(tmp_path, real_data_root, monkeypatch):
    recipe, kw = TINY.replace(epochs=2), dict(seed=0, train_subset=200, eval_subset=100, device="cpu", progress=False)
    whole = train_ceiling(recipe, **kw)
    ckpt = tmp_path / "run.pt"
    _interrupt_in_epoch_2(recipe, ckpt, kw, monkeypatch)
    resumed = train_ceiling(recipe, checkpoint=ckpt, **kw)
    assert resumed["resumed_from_epoch"] == 1 and not ckpt.exists()
    assert [h["val_accuracy"] for h in resumed["history"]] == [h["val_accuracy"] for h in whole["history"]]


def test_a_resumed_run_records_per_epoch_the_threads_each_chunk_ran_on(tmp_path, real_data_root, monkeypatch):
    recipe, kw = TINY.replace(epochs=2), dict(seed=0, train_subset=200, eval_subset=100, device="cpu", progress=False)
    ckpt, before = tmp_path / "run.pt", torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _interrupt_in_epoch_2(recipe, ckpt, kw, monkeypatch)
        torch.set_num_threads(2)
        resumed = train_ceiling(recipe, checkpoint=ckpt, **kw)
    finally:
        torch.set_num_threads(before)
    assert [h["threads"] for h in resumed["history"]] == [1, 2]


def test_width_cost_is_the_test_gain_and_time_ratio_over_width_16(tmp_path):
    for width, test, seconds in ((16, 0.95, 600.0), (64, 0.97, 6000.0)):
        recipe = ceiling_search.START.replace(width=width)
        results.save(dict(config={}, seed=0, provenance={}, wall_time_s=seconds, val_accuracy_best=test,
                          test_accuracy_at_best_val=test, train_images_per_second=1.0),
                     "ceiling", ceiling_search.key(recipe, 0), tmp_path)
    rows = ceiling_search.table(tmp_path)
    cost = ceiling_search.width_cost(rows, "resnet9", 64)
    assert cost["points"] == pytest.approx(2.0) and cost["time_ratio"] == pytest.approx(10.0)
    assert ceiling_search.chosen_width(tmp_path) == 64  # the better validation accuracy


def _save_ceiling(directory, model, width, seed, val, test, seconds=600.0, last=None):
    recipe = ceiling_search.START.replace(model=model, width=width)
    results.save(dict(config={}, seed=seed, provenance={}, wall_time_s=seconds, val_accuracy_best=val,
                      test_accuracy_at_best_val=test, train_images_per_second=1.0,
                      **({} if last is None else dict(test_accuracy_last=last))),
                 "ceiling", ceiling_search.key(recipe, seed), directory)


def test_width_cost_and_model_gap_pair_the_seeds_both_rows_have(tmp_path):
    for seed, (val, test) in enumerate(((0.980, 0.970), (0.985, 0.980), (0.990, 0.990))):
        _save_ceiling(tmp_path, "resnet9", 16, seed, val, test)
    _save_ceiling(tmp_path, "resnet9", 32, 0, 0.984, 0.975, seconds=3000.0)
    _save_ceiling(tmp_path, "dpresnet", 16, 0, 0.979, 0.960, seconds=4200.0)
    rows = ceiling_search.table(tmp_path)
    cost = ceiling_search.width_cost(rows, "resnet9", 32)  # against seed 0's 97.0 %, not the mean 98.0 %
    assert cost["points"] == pytest.approx(0.5) and cost["time_ratio"] == pytest.approx(5.0) and cost["seeds"] == [0]
    assert ceiling_search.chosen_width(tmp_path) == 32
    gap = ceiling_search.model_gap(rows, 32)  # DPResNet has not run at 32: the widest width with both is 16
    assert gap["width"] == 16 and gap["points"] == pytest.approx(-1.0) and gap["time_ratio"] == pytest.approx(7.0)
    choice = ceiling_search.width_choice(rows, ceiling_search.chosen_width(tmp_path))
    assert (choice["width"], choice["base_seeds"], choice["within_spread"]) == (32, 3, True)
    assert (choice["val"], choice["base_low"], choice["base_high"]) == pytest.approx((98.4, 98.0, 99.0))


def test_goal_verdict_waits_for_three_seeds_at_the_chosen_width_and_says_what_another_width_shows(tmp_path):
    for seed in (0, 1, 2):
        _save_ceiling(tmp_path, "resnet9", 16, seed, 0.98, 0.97)
    _save_ceiling(tmp_path, "resnet9", 32, 0, 0.99, 0.95)
    rows = ceiling_search.table(tmp_path)
    assert ceiling_search.goal_verdict(rows, 32) == ("not yet known at width 32 (1 of 3 seeds has run); "
                                                     "at width 16, reached (97.0 % over 3 seeds)")
    assert ceiling_search.goal_verdict(rows, 16) == "reached (97.0 %)"
    _save_ceiling(tmp_path, "resnet9", 32, 1, 0.99, 0.95)
    _save_ceiling(tmp_path, "resnet9", 32, 2, 0.99, 0.95)
    assert ceiling_search.goal_verdict(ceiling_search.table(tmp_path), 32) == "not reached (95.0 %)"
    assert ceiling_search.model_gap(rows, 32) is None  # DPResNet has run nowhere


def test_epoch_cost_ratio_reads_the_side_by_side_benchmark_and_waits_for_both_cells():
    report = dict(cells={"resnet9 w16": dict(epoch_cpu_s=20.0), "resnet9 w32": dict(epoch_cpu_s=60.0),
                         "dpresnet w32": dict(epoch_cpu_s=120.0)})
    assert ceiling_search.epoch_cost_ratio("resnet9", 32, ("resnet9", 16), report) == pytest.approx(3.0)
    assert ceiling_search.epoch_cost_ratio("dpresnet", 32, ("resnet9", 32), report) == pytest.approx(2.0)
    assert ceiling_search.epoch_cost_ratio("dpresnet", 32, ("dpresnet", 16), report) is None
    assert ceiling_search.epoch_cost_ratio("resnet9", 64, ("resnet9", 16), {}) is None


def test_width_readings_compare_validation_best_val_test_and_last_epoch_on_shared_seeds(tmp_path):
    _save_ceiling(tmp_path, "dpresnet", 16, 0, 0.980, 0.976, last=0.9766)
    _save_ceiling(tmp_path, "dpresnet", 64, 0, 0.979, 0.968, last=0.9763)  # every reading lower or negligible
    _save_ceiling(tmp_path, "resnet9", 16, 0, 0.983, 0.977, last=0.978)
    _save_ceiling(tmp_path, "resnet9", 64, 0, 0.988, 0.975, last=0.981)  # best-val test lower, the others higher
    _save_ceiling(tmp_path, "resnet9", 32, 0, 0.990, 0.990)  # an older result with no last-epoch test
    rows = ceiling_search.table(tmp_path)
    dp = ceiling_search.width_readings(rows, "dpresnet", 64)
    assert (dp["val"], dp["test_at_best_val"], dp["test_last"]) == pytest.approx((-0.1, -0.8, -0.03))
    assert dp["seeds"] == [0] and dp["direction"] == "loss"  # -0.03 is under one validation image: it does not count
    assert dp["text"] == ("validation -0.10, test at the best-validation epoch -0.80 and test at the last epoch "
                          "-0.03 points")
    assert ceiling_search.width_readings(rows, "resnet9", 64)["direction"] == "mixed"
    assert ceiling_search.width_readings(rows, "resnet9", 32) is None  # no last-epoch reading to compare
    assert ceiling_search.width_readings(rows, "dpresnet", 32) is None  # not run
    top = ceiling_search.highest(rows)
    assert (top["model"], top["width"], top["mean"]) == ("resnet9", 32, pytest.approx(99.0))
    assert ceiling_search.highest(rows, "dpresnet")["width"] == 16
    assert ceiling_search.highest(ceiling_search.table(tmp_path / "empty")) is None
