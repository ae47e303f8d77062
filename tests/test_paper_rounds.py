"""The paper-rounds cells (fedmedlib.experiments.paper_rounds) have the paper's settings at the CPU profile's width,
run through the grid's 'paper-rounds' part, leave every committed hash alone, and the width-64 estimate is the
documented sum of measured factors (None while one is missing)."""

import pytest

from fedmedlib.config import CPU, PAPER
from fedmedlib.experiments import grid, paper_rounds, results


def test_the_three_cells_run_the_papers_rounds_epochs_batch_and_optimiser_at_width_16():
    cells = paper_rounds.cells(CPU)
    assert [(e.dp, e.aggregator, e.drop_noise, e.model) for e in cells] == [
        ("none", "plain", False, "dpresnet"), ("update_ldp", "secagg", True, "dpresnet"),
        ("none", "plain", False, "resnet9")]
    for e in cells:
        assert (e.rounds, e.local_epochs, e.batch_size, e.lr, e.local_optimizer) == (50, 3, 32, 1e-3, "adam")
        assert (e.width, e.n_clients, e.scheme, e.seed, e.train_subset) == (16, 10, "paper", 0, None)


def test_the_grid_part_lists_them_once_with_seed_0_and_other_parts_are_unchanged():
    listed = [exp for part, exp in grid.cells(CPU, parts=("paper-rounds",))]
    assert [e.hash() for e in listed] == [e.hash() for e in paper_rounds.cells(CPU)]
    table = [e.hash() for _, e in grid.cells(CPU, parts=("table", "rq3"))]
    assert not set(table) & {e.hash() for e in listed}  # new cells, new files: no committed result is renamed


def test_at_the_paper_profile_the_cells_are_the_grids_own_headline_cells():
    assert {e.hash() for e in paper_rounds.cells(PAPER)} <= {e.hash() for _, e in grid.cells(PAPER, parts=("table", "rq3"))}


def test_rows_show_both_schedules_and_none_where_not_yet_run(tmp_path):
    rows = paper_rounds.rows(CPU, directory=tmp_path)
    assert [r["schedule"] for r in rows] == ["20 × 1", "50 × 3"] * 3
    assert all(r["at_best_val"] is None and r["best_on_test"] is None for r in rows)


def test_rows_read_a_finished_cell_at_best_validation_and_labelled_best_on_test(tmp_path):
    exp = paper_rounds.cells(CPU)[0]
    rounds = [dict(round=1, val_accuracy=0.5, test_accuracy=0.6), dict(round=2, val_accuracy=0.4, test_accuracy=0.7)]
    results.save(dict(config={}, seed=0, provenance={}, wall_time_s=3600.0, rounds=rounds, best_round=1,
                      test_accuracy_at_best_val=0.6), "federated", dict(exp.to_dict(), profile="cpu"), tmp_path)
    row = paper_rounds.rows(CPU, directory=tmp_path)[1]
    assert (row["at_best_val"], row["best_on_test"], row["hours"]) == (pytest.approx(60), pytest.approx(70), 1.0)


def test_estimate_adds_the_centralized_width_gain_to_the_paper_rounds_cell():
    est = paper_rounds.width64_estimate(86.0, 90.0, 94.0, 96.5)
    assert est["estimate"] == pytest.approx(92.5)
    assert (est["width_gain"], est["rounds_gain"]) == (pytest.approx(2.5), pytest.approx(4.0))
    assert "estimate" in est["label"] and "width 64" in est["formula"]


def test_estimate_is_capped_at_100_and_none_while_an_input_is_missing():
    assert paper_rounds.width64_estimate(97.0, 99.5, 90.0, 95.0)["estimate"] == 100.0
    assert paper_rounds.width64_estimate(86.0, None, 94.0, 96.5) is None
    assert paper_rounds.width64_estimate(86.0, 90.0, 94.0, None) is None


def test_estimate_refuses_accuracies_outside_0_to_100():
    with pytest.raises(ValueError, match="percentages"):
        paper_rounds.width64_estimate(86.0, 90.0, 94.0, 160.0)


def test_estimates_are_none_for_every_cell_until_their_inputs_exist(tmp_path):
    assert [e["estimate"] for e in paper_rounds.estimates(CPU, directory=tmp_path)] == [None, None, None]


def test_only_dpresnet_cells_carry_the_papers_number():
    # The paper's Table 1 is DPResNet's: a ResNet-9 cell beside 98.76 % would compare it with another model.
    assert paper_rounds.paper_number("dp-sa-", "dpresnet") == 98.76
    assert paper_rounds.paper_number("as_published", "dpresnet") == 97.78
    assert paper_rounds.paper_number("dp-sa-", "resnet9") is None
    assert [r["paper"] for r in paper_rounds.rows(CPU) if r["model"] == "resnet9"] == [None, None]
