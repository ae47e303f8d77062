import math

import pytest

from fedmedlib.experiments import grid, results
from fedmedlib.config import CPU, PAPER, QUICK
from fedmedlib.fl import Experiment
from fedmedlib.experiments.runs import federated


def test_grid_cells_keep_the_hashes_of_results_committed_before_the_grid_existed():
    # These files were written by earlier runs; the grid must name the same experiments.
    exp = grid.experiment(CPU, "dp-sa-", 10, "paper", 0)
    assert results.result_path("federated", dict(exp.to_dict(), profile="cpu")).name == "federated-7ebcf4b15b.json"
    exp = grid.experiment(CPU, "as_published", 10, "paper", 0)
    assert exp.drop_noise and exp.dp == "update_ldp" and exp.aggregator == "secagg"
    assert results.result_path("federated", dict(exp.to_dict(), profile="cpu")).name == "federated-dbd02634ed.json"


def test_columns_map_to_the_dp_modes_they_name():
    modes = {c.key: (c.dp, c.aggregator, c.drop_noise) for c in grid.COLUMNS}
    assert modes == {"dp-sa-": ("none", "plain", False), "dp-sa+": ("none", "secagg", False),
                     "as_published": ("update_ldp", "secagg", True), "as_coded": ("update_ldp", "secagg", False),
                     "as_claimed": ("dpsgd", "secagg", False), "client_level": ("client_level", "secagg", False),
                     "as_should": ("distributed_dpsgd", "secagg", False)}


def test_cells_cover_the_grid_once_each_with_shared_sweep_points():
    todo = list(grid.cells(CPU, parts=("table", "sweep", "rq3"), seeds=(0,)))
    hashes = [e.hash() for _, e in todo]
    assert len(hashes) == len(set(hashes))
    # 3 hospital counts x 7 columns x 2 splits + (8 sweep points - 2 shared with the table) x 2 + 1 RQ3 x 2
    assert len(todo) == 42 + 12 + 2
    assert todo[0][1].n_clients == 10  # the paper's headline row first
    assert grid.sweep_experiment(CPU, 6.0, 10, "paper", 0) == grid.experiment(CPU, "as_claimed", 10, "paper", 0)
    assert grid.sweep_experiment(CPU, math.inf, 10, "paper", 0) == grid.experiment(CPU, "dp-sa+", 10, "paper", 0)


def test_cpu_profile_runs_three_seeds_in_the_headline_row_and_one_elsewhere():
    assert grid.seeds_for(CPU, "table", 10, "paper") == (0, 1, 2)
    for part, n, scheme in [("table", 20, "paper"), ("table", 10, "dirichlet"), ("sweep", 10, "paper"),
                            ("rq3", 10, "paper")]:
        assert grid.seeds_for(CPU, part, n, scheme) == (0,)
    todo = list(grid.cells(CPU, parts=("table", "sweep", "rq3")))
    assert len({e.hash() for _, e in todo}) == len(todo) == 56 + 2 * 7  # seed 0 of everything + 2 seeds x 7 columns
    extra = [e for _, e in todo if e.seed != 0]
    assert {(e.n_clients, e.scheme) for e in extra} == {(10, "paper")} and {e.seed for e in extra} == {1, 2}
    assert [e.seed for _, e in todo][:56] == [0] * 56  # seed 0 of every cell before any second seed


def test_paper_profile_runs_every_cell_with_every_seed():
    assert PAPER.grid_seeds_elsewhere is None
    assert len(list(grid.cells(PAPER, parts=("table", "sweep", "rq3")))) == 3 * 56
    assert grid.seeds_for(PAPER, "sweep", 10, "dirichlet") == PAPER.seeds


def test_table_counts_missing_seeds_by_the_policy(tmp_path):
    rows = grid.table(CPU, directory=tmp_path)
    by = {(r["split"], r["hospitals"], r["column"]): r for r in rows}
    assert by[("paper", 10, "as_claimed")]["missing_seeds"] == [0, 1, 2]
    assert by[("dirichlet", 5, "dp-sa-")]["missing_seeds"] == [0]
    assert all(r["n"] == 0 for r in grid.rq3(CPU, directory=tmp_path))


def test_bad_grid_requests_are_refused():
    with pytest.raises(ValueError, match="unknown grid column"):
        grid.experiment(CPU, "dp+", 10, "paper", 0)
    with pytest.raises(ValueError, match="splits"):
        grid.experiment(CPU, "dp-sa-", 10, "iid", 0)
    with pytest.raises(ValueError, match="unknown grid parts"):
        list(grid.cells(CPU, parts=("tabel",)))
    with pytest.raises(ValueError, match="epsilon must be positive"):
        grid.sweep_experiment(CPU, 0.0, 10, "paper", 0)
    with pytest.raises(ValueError, match="unknown metric"):
        grid.table(CPU, metric="accuracy")


def test_paper_numbers_only_where_the_paper_reports_them():
    assert grid.paper_number(10, "dp-sa-") == 98.76
    assert grid.paper_number(20, "as_claimed") == grid.paper_number(20, "as_coded") == 96.89
    assert grid.paper_number(5, "dp-sa-") is None
    assert grid.paper_number(10, "dp-sa-", "dirichlet") is None


def _fake(exp, acc_by_round, profile="cpu"):
    rounds = [dict(round=i + 1, test_accuracy=a, val_accuracy=a) for i, a in enumerate(acc_by_round)]
    return dict(config=exp.to_dict(), seed=exp.seed, provenance={}, wall_time_s=1.0, rounds=rounds,
                test_accuracy_at_best_val=acc_by_round[-2], test_accuracy_last=acc_by_round[-1],
                seconds_per_round=2.0, profile=profile)


def test_table_reports_mean_std_over_the_seeds_found_and_names_the_missing(tmp_path):
    for seed, accs in ((0, [0.5, 0.8, 0.7]), (1, [0.6, 0.9, 0.6])):
        exp = grid.experiment(CPU, "dp-sa-", 10, "paper", seed)
        results.save(_fake(exp, accs), "federated", dict(exp.to_dict(), profile="cpu"), tmp_path)
    row = next(r for r in grid.table(CPU, directory=tmp_path) if r["column"] == "dp-sa-" and r["hospitals"] == 10
               and r["split"] == "paper")
    assert row["n"] == 2 and row["seeds"] == [0, 1] and row["missing_seeds"] == [2]
    assert row["mean"] == pytest.approx(85.0) and row["std"] == pytest.approx(math.sqrt(50))
    assert grid.format_cell(row) == "85.0 ± 7.1 (2)"
    best = next(r for r in grid.table(CPU, directory=tmp_path, metric="test_accuracy_best_round")
                if r["column"] == "dp-sa-" and r["hospitals"] == 10 and r["split"] == "paper")
    assert best["mean"] == pytest.approx(85.0)
    empty = next(r for r in grid.table(CPU, directory=tmp_path) if r["column"] == "as_coded")
    assert empty["n"] == 0 and grid.format_cell(empty) == "—"


def test_a_tiny_grid_cell_runs_end_to_end_and_is_then_read_from_the_cache(tmp_path, monkeypatch, real_data_root):
    monkeypatch.setenv("FEDMED_RESULTS", str(tmp_path))
    exp = grid.experiment(QUICK.replace(train_subset=300, eval_subset=100, rounds=2), "as_claimed", 5, "paper", 0)
    first = federated(exp, profile="cpu-test", root=real_data_root, progress=False)
    path = results.result_path("federated", dict(exp.to_dict(), profile="cpu-test"))
    assert path.is_file() and len(first["rounds"]) == 2 and 0 < first["rounds"][-1]["epsilon"] <= 6.0 + 1e-9
    for field in ("git_commit", "device", "versions"):
        assert field in first["provenance"]
    assert first["config"]["dp"] == "dpsgd" and first["config"]["aggregator"] == "secagg"
    again = federated(exp, profile="cpu-test", allow_run=False, root=real_data_root)
    assert again["wall_time_s"] == first["wall_time_s"]  # read back, not re-run


def test_the_should_be_done_column_uses_the_distributed_recipe_and_its_own_sweep():
    from fedmedlib.config import DP_DISTRIBUTED

    exp = grid.experiment(CPU, "as_should", 10, "paper", 0)
    assert (exp.dp, exp.aggregator, exp.local_epochs) == ("distributed_dpsgd", "secagg", 1)
    assert {k: getattr(exp, k) for k in DP_DISTRIBUTED} == DP_DISTRIBUTED
    # noise calibrated for any 60 % of the hospitals: the SecAgg+ threshold is the same number
    assert [grid.experiment(CPU, "as_should", n, "paper", 0).secagg_threshold for n in (5, 10, 20)] == [3, 6, 12]
    assert grid.experiment(PAPER, "as_should", 10, "paper", 0).local_epochs == 1  # one DP-SGD step per round
    sweep = [e for part, e in grid.cells(CPU, parts=("sweep-should",)) if part == "sweep-should"]
    assert sorted(e.epsilon for e in sweep) == [0.5, 1, 2, 4, 6, 8, 16]
    assert {(e.dp, e.n_clients, e.scheme, e.seed) for e in sweep} == {("distributed_dpsgd", 10, "paper", 0)}
    assert grid.sweep_experiment(CPU, 6.0, 10, "paper", 0, "as_should") == exp
    with pytest.raises(ValueError, match="sweep runs in one of the columns"):
        grid.sweep_experiment(CPU, 6.0, 10, "paper", 0, "as_coded")


def test_the_distributed_preset_is_the_searchs_winner_on_validation():
    from fedmedlib.config import DP_DISTRIBUTED
    from fedmedlib.experiments import distributed_search

    rows = {r["variant"]: r for r in distributed_search.table(CPU)}
    assert {"centre", "lr1", "lr0.5", "rounds400"} <= {v for v, r in rows.items() if r["done"]}
    best = distributed_search.winner(CPU)
    assert best == max((r for r in rows.values() if r["done"]), key=lambda r: r["val"])["variant"]
    assert DP_DISTRIBUTED == distributed_search.settings(best)
    # the winner's cell is the grid's headline cell of the column (the same experiment, the same file)
    assert distributed_search.variant_experiment(CPU, best) == grid.experiment(CPU, "as_should", 10, "paper", 0)


def test_the_tight_sweep_is_the_split_noise_sweep_with_only_the_bound_changed():
    from fedmedlib.config import CPU

    for eps in grid.TIGHT_SWEEP_EPSILONS:
        general = grid.sweep_experiment(CPU, eps, 10, "paper", 0, "as_should")
        tight = grid.sweep_experiment(CPU, eps, 10, "paper", 0, "as_should", "tight")
        assert tight.subsampling_bound == "tight" and general.subsampling_bound == "general"
        assert {k: v for k, v in tight.to_dict().items() if k != "subsampling_bound"} == general.to_dict()
    parts = [p for p, _ in grid.cells(CPU, parts=("sweep-should-tight",), seeds=(0,))]
    assert parts == ["sweep-should-tight"] * len(grid.TIGHT_SWEEP_EPSILONS)
    with pytest.raises(ValueError, match="applies to the 'as_should' column at a finite ε only"):
        grid.sweep_experiment(CPU, 6.0, 10, "paper", 0, "as_claimed", "tight")


def test_run_grid_lists_only_the_models_asked_for(monkeypatch, capsys):
    import importlib.util
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "run_grid", Path(__file__).resolve().parents[1] / "scripts" / "run_grid.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(sys, "argv", ["run_grid.py", "--parts", "paper-rounds", "rq3", "--list"])
    script.main()
    both = capsys.readouterr().out.splitlines()
    monkeypatch.setattr(sys, "argv", ["run_grid.py", "--parts", "paper-rounds", "rq3", "--models", "resnet9", "--list"])
    script.main()
    only = capsys.readouterr().out.splitlines()
    assert only == [line for line in both if " resnet9 " in line] and len(only) == 3 < len(both)


def test_cells_keep_only_the_models_asked_for_and_refuse_unknown_ones():
    every = list(grid.cells(CPU, parts=("paper-rounds", "rq3"), seeds=(0,)))
    only = list(grid.cells(CPU, parts=("paper-rounds", "rq3"), seeds=(0,), models=("resnet9",)))
    assert only == [(p, e) for p, e in every if e.model == "resnet9"] and len(only) == 3
    with pytest.raises(ValueError, match="unknown models \\['resnet18'\\]"):
        list(grid.cells(CPU, models=("resnet18",)))
