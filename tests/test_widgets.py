import math

import pytest

from fedmedlib.privacy import dpsgd
from fedmedlib.experiments import grid, results
from fedmedlib import privacy
from fedmedlib.book import widgets
from fedmedlib.config import CPU

# A small budget that calibrates in about a second: few rounds, so few DP-SGD steps.
SMALL = dict(delta=1e-5, rounds=3, hospitals=5)


def _fake_sweep_result(tmp_path, epsilon, seed, accuracy):
    config = dict(grid.sweep_experiment(CPU, epsilon, 10, "paper", seed).to_dict(), profile="cpu")
    results.save({"config": config, "seed": seed, "provenance": {"git_commit": "x"}, "wall_time_s": 1.0,
                  "test_accuracy_at_best_val": accuracy, "rounds": [dict(round=1, test_accuracy=accuracy,
                                                                         epsilon=epsilon)]},
                 "federated", config, tmp_path)


def test_as_coded_sigma_is_the_papers_formula_and_its_real_epsilon_composes():
    row = widgets.budget(6.0, **SMALL)
    assert row["as_coded_sigma"] == privacy.gaussian_sigma(6.0, 1e-5)
    z = row["as_coded_sigma"] / privacy.PAPER_CLIP
    assert row["as_coded_epsilon_composed"] == pytest.approx(privacy.gaussian_epsilon(z, 1e-5, 3))


def test_dpsgd_noise_multiplier_matches_the_calibration_a_hospital_trains_with():
    row = widgets.budget(6.0, **SMALL)
    hospital = dpsgd.RecordLevelDP(row["records_per_hospital"], rounds=3, local_epochs=CPU.local_epochs,
                                   epsilon=6.0, delta=1e-5, batch_size=CPU.batch_size)
    assert row["dpsgd_noise_multiplier"] == hospital.noise_multiplier


def test_client_level_noise_multiplier_spends_exactly_epsilon():
    row = widgets.budget(6.0, **SMALL)
    assert row["client_level_noise_multiplier"] == privacy.noise_multiplier(6.0, 1e-5, 1.0, 3)
    spent = privacy.gaussian_epsilon(row["client_level_noise_multiplier"], 1e-5, 3)
    assert spent == pytest.approx(6.0, abs=1e-6)


def test_a_smaller_epsilon_needs_more_noise_in_every_reading():
    strict, loose = widgets.budget(1.0, **SMALL), widgets.budget(8.0, **SMALL)
    for key in ("as_coded_noise_multiplier", "dpsgd_noise_multiplier", "client_level_noise_multiplier"):
        assert strict[key] > loose[key], key


@pytest.mark.parametrize("bad, match", [
    (dict(epsilon=0.0), "epsilon must be a finite number > 0"),
    (dict(epsilon=math.inf), "epsilon must be a finite number > 0"),
    (dict(epsilon="6"), "epsilon must be a finite number > 0"),
    (dict(delta=1.5), "delta must lie in"),
    (dict(rounds=0), "rounds must be an integer >= 1"),
    (dict(rounds=2.5), "rounds must be an integer >= 1"),
    (dict(hospitals=0), "hospitals must be an integer in"),
    (dict(hospitals=10_000), "at least one batch"),
])
def test_bad_settings_raise_a_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        widgets.budget(**{**dict(epsilon=6.0, **SMALL), **bad})


def test_accuracy_is_none_until_a_sweep_cell_has_run(tmp_path):
    assert widgets.accuracy(2.0, directory=tmp_path) is None


def test_accuracy_averages_the_seeds_found_in_percent(tmp_path):
    _fake_sweep_result(tmp_path, 2.0, 0, 0.70)
    _fake_sweep_result(tmp_path, 2.0, 1, 0.80)
    acc = widgets.accuracy(2.0, directory=tmp_path, profile=CPU.replace(grid_seeds_elsewhere=(0, 1)))
    assert acc["mean"] == pytest.approx(75.0) and acc["n"] == 2 and acc["seeds"] == [0, 1]
    # The CPU profile's policy runs one seed off the headline row, so only seed 0 is read by default.
    acc = widgets.accuracy(2.0, directory=tmp_path)
    assert acc["mean"] == pytest.approx(70.0) and acc["n"] == 1


def test_missing_accuracy_says_which_command_produces_it():
    assert "--parts sweep" in widgets.missing_note(0.5, 10)
    assert "only ε = 6" in widgets.missing_note(0.5, 20)
    assert "results exist for 20 rounds" in widgets.missing_note(6.0, 10, rounds=3)


def test_frames_change_with_epsilon(tmp_path):
    first, second = widgets.frames((1.0, 8.0), directory=tmp_path, **SMALL)
    assert first[:8] == second[:8] == b"\x89PNG\r\n\x1a\n"
    assert first != second


def test_frames_need_at_least_one_epsilon():
    with pytest.raises(ValueError, match="at least one"):
        widgets.frames(())


def test_static_explorer_links_slider_and_frames_in_the_browser(tmp_path):
    import ipywidgets as w

    panel = widgets.static_explorer((1.0, 8.0), start=8.0, directory=tmp_path, **SMALL)
    slider, stack = panel.children
    assert isinstance(slider, w.SelectionSlider) and len(stack.children) == 2
    assert slider.index == stack.selected_index == 1
    assert panel.link.source == (slider, "index") and panel.link.target == (stack, "selected_index")


def test_static_explorer_frames_are_figures_with_alt_text_and_a_caption(tmp_path):
    panel = widgets.static_explorer((1.0, 8.0), start=8.0, directory=tmp_path, **SMALL)
    frame = panel.children[1].children[0].value
    assert frame.startswith("<figure") and 'src="data:image/png;base64,' in frame
    assert 'alt="Three panels for ε = 1' in frame and "<figcaption" in frame and "explorer at ε = 1 (" in frame


def test_static_explorer_refuses_a_start_off_the_slider():
    with pytest.raises(ValueError, match="must be one of"):
        widgets.static_explorer((1.0, 8.0), start=6.0)


def test_live_panel_recomputes_the_numbers_when_epsilon_moves(tmp_path):
    panel = widgets.explorer(epsilon=6.0, directory=tmp_path, **SMALL)
    before = panel.children[2].value
    panel.controls["epsilon"].value = 1.0
    after = panel.children[2].value
    assert f"σ = {privacy.gaussian_sigma(1.0, 1e-5):.3f}" in after and after != before


def test_live_panel_refuses_an_epsilon_off_its_slider():
    with pytest.raises(ValueError, match="the panel's ε"):
        widgets.explorer(epsilon=6.5)


def _fake_split_noise_result(tmp_path, epsilon, bound, accuracy):
    config = dict(grid.sweep_experiment(CPU, epsilon, 10, "paper", 0, "as_should", bound).to_dict(), profile="cpu")
    results.save({"config": config, "seed": 0, "provenance": {"git_commit": "x"}, "wall_time_s": 1.0,
                  "test_accuracy_at_best_val": accuracy, "rounds": [dict(round=1, test_accuracy=accuracy,
                                                                         epsilon=epsilon)]},
                 "federated", config, tmp_path)


def test_the_split_noise_series_reads_the_tight_bound_runs(tmp_path):
    _fake_split_noise_result(tmp_path, 2.0, "general", 0.235)
    _fake_split_noise_result(tmp_path, 2.0, "tight", 0.766)
    _, row = widgets.figure(2.0, directory=tmp_path)
    assert row["accuracy_split_noise"]["mean"] == pytest.approx(76.6)
    assert [widgets.split_noise_bound(e) for e in widgets.STATIC_EPSILONS] == ["tight"] * 6 + ["general"]


def test_at_epsilon_16_both_subsampling_bounds_calibrate_the_same_noise():
    # Why the explorer may show the general-bound run at ε = 16: it is the same mechanism as a tight-bound one.
    from fedmedlib.fl.distributed import union_plan

    z = {b: union_plan(grid.sweep_experiment(CPU, 16.0, 10, "paper", 0, "as_should", b), 9562, 301976)
         .noise_multiplier for b in ("general", "tight")}
    assert z["tight"] == pytest.approx(z["general"], rel=1e-5) and z["general"] == pytest.approx(0.9314, abs=1e-4)
