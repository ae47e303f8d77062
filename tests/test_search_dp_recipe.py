"""The DP-recipe search's logic (scripts/search_dp_recipe.py) on a fake pool: no training, exact bookkeeping."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "search_dp_recipe.py"


@pytest.fixture()
def search():
    spec = importlib.util.spec_from_file_location("search_dp_recipe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakePool:
    """Scores a recipe job by a rule instead of training; records what it was asked to run."""

    def __init__(self, score, budget_after=None):
        self.score, self.asked, self.budget_after = score, [], budget_after

    def run(self, jobs):
        out = []
        for kind, spec in jobs:
            if self.budget_after is not None and len(self.asked) >= self.budget_after:
                out.append(None)
                continue
            self.asked.append(spec)
            out.append(dict(kind=kind, name=spec["recipe"]["name"], val=self.score(spec["recipe"])))
        return out


def test_search_tries_each_knob_around_start_then_combines_each_knobs_best(search):
    # validation rewards clip 0.5 and 60 epochs, independently: the combination must carry both
    score = lambda r: 0.5 + 0.1 * (r["clip"] == 0.5) + 0.2 * (r["epochs"] == 60)  # noqa: E731
    pool = FakePool(score)
    winner = search.search(pool)
    one_at_a_time = 1 + sum(len(v) - 1 for v in search.KNOBS.values())  # START + every other value of each knob
    assert len(pool.asked) == one_at_a_time + 1  # then the combination
    assert pool.asked[-1]["recipe"]["name"] == "search:combined"
    assert (winner.clip, winner.epochs, winner.name) == (0.5, 60, "tuned")
    assert winner.replace(clip=1.0, epochs=30) == search.START.replace(name="tuned")  # other knobs untouched


def test_search_reports_no_winner_when_the_budget_stops_it(search):
    assert search.search(FakePool(lambda r: 0.5, budget_after=5)) is None


def test_a_combination_equal_to_a_tried_recipe_is_not_run_twice(search):
    pool = FakePool(lambda r: 0.9 if r["clip"] == 2.0 else 0.5)
    winner = search.search(pool)
    assert winner.clip == 2.0 and [s["recipe"]["name"] for s in pool.asked].count("search:combined") == 0


def test_finished_winner_is_the_best_validation_among_cached_trials(search, tmp_path, monkeypatch):
    monkeypatch.setenv("FEDMED_RESULTS", str(tmp_path))
    with pytest.raises(SystemExit, match="no search trial has finished"):
        search.finished_winner()
    trials = search.search_trials()
    for trial, val in ((trials[0], 0.7), (trials[3], 0.9), (trials[7], 0.8)):
        _cache(trial, val)
    assert search.finished_winner() == trials[3].replace(name="tuned")
    assert json.loads(next(tmp_path.glob("dp_recipe-*.json")).read_text())["seed"] == 0


def _cache(trial, val, seed=0):
    from fedmedlib.privacy import recipe as dprecipe
    from fedmedlib.experiments import results
    from fedmedlib.privacy import PAPER_DELTA, PAPER_EPSILON

    settings = {k: v for k, v in trial.to_dict().items()
                if k != "name" and dprecipe.LATER_FIELDS.get(k, object()) != v}
    key = dict(kind="dp_recipe", recipe=settings, seed=seed, epsilon=PAPER_EPSILON, delta=PAPER_DELTA,
               train_subset=None, eval_subset=None)
    results.save(dict(config=key, seed=seed, provenance={"device": "cpu"}, wall_time_s=60.0, val_accuracy_best=val),
                 "dp_recipe", key)


def test_refinement_moves_one_knob_around_the_best_search_trial_and_can_replace_it(tmp_path, monkeypatch):
    from fedmedlib.experiments import recipe_search as rs

    monkeypatch.setenv("FEDMED_RESULTS", str(tmp_path))
    trials = rs.search_trials()
    _cache(trials[0], 0.7)
    _cache(trials[5], 0.8)
    centre = rs.best_search_trial()
    assert centre == trials[5]
    refine = rs.refine_trials(centre)
    # one knob moved per trial, to each REFINE_KNOBS value other than the centre's
    assert len(refine) == sum(sum(v != rs.knob_value(centre, k) for v in vs) for k, vs in rs.REFINE_KNOBS.items())
    for t in refine:
        knob = t.name.split(":")[1].split("=")[0]
        assert t.replace(name="x") == rs.with_knob(centre, knob, rs.knob_value(t, knob)).replace(name="x")
    assert rs.finished_winner() == centre.replace(name="tuned")  # no refinement has run
    _cache(refine[0], 0.8)  # a tie keeps the centre
    assert rs.finished_winner() == centre.replace(name="tuned")
    _cache(refine[-1], 0.85)  # one seed of the centre: any gain moves the preset
    assert rs.finished_winner() == refine[-1].replace(name="tuned")
    rows = rs.refine_table()
    assert [r["ran"] for r in rows] == [True, True] + [False] * (len(refine) - 2) + [True]
    assert rows[-1]["change"] == pytest.approx(5.0) and rows[1]["change"] == pytest.approx(0.0)
    _cache(centre, 0.74, seed=1)  # the centre's seeds span 0.06: a +0.05 single-seed gain is not evidence
    assert rs.seed_spread(centre) == pytest.approx(0.06)
    assert rs.finished_winner() == centre.replace(name="tuned")
    _cache(refine[1], 0.87)  # +0.07 clears the spread
    assert rs.finished_winner() == refine[1].replace(name="tuned")
    # the cost table: each cached trial once, under the stage that asked for it first (60 s each here)
    cost = {r["stage"]: r for r in rs.search_cost()}
    assert (cost["search"]["trials"], cost["search"]["minutes"]) == (2, pytest.approx(2.0))
    assert (cost["refine"]["trials"], cost["refine"]["device"]) == (3, "cpu")


def test_federated_naive_variant_is_the_grids_as_claimed_cell(search):
    from fedmedlib.experiments import grid
    from fedmedlib.config import CPU

    (cell,) = [e for _, e in grid.cells(CPU, parts=("table",), hospitals=[10], schemes=["paper"],
                                        columns=["as_claimed"], seeds=[1])]
    assert search.federated_experiment("naive", 1).hash() == cell.hash()
    assert search.federated_experiment("b128-c1-lr3e-3-k4", 0).multiplicity == 4


def test_the_preset_is_the_winner_of_the_committed_search_trials():
    from fedmedlib.privacy import recipe as dprecipe
    from fedmedlib.experiments import recipe_search

    assert recipe_search.finished_winner() == dprecipe.tuned()
    rows = recipe_search.search_table()
    assert len(rows) == len(recipe_search.search_trials()) == 20
    ran = [r for r in rows if r["ran"]]
    assert len(ran) >= 3 and all(0 < r["val_accuracy"] <= 100 and r["minutes"] > 0 for r in ran)
    best = max(ran, key=lambda r: r["val_accuracy"])
    assert (best["knob"], best["value"]) == ("multiplicity", "1")
    # DP_TUNED_REASONS' claims about the refinement hold for the committed trials
    refine = {(r["knob"], r["value"]): r for r in recipe_search.refine_table()[1:] if r["ran"]}
    assert {("clip", "0.5"), ("clip", "2.0"), ("weight_standardization", "True")} <= set(refine)
    assert all(refine[k]["change"] < 0 for k in [("clip", "0.5"), ("clip", "2.0"), ("weight_standardization", "True"),
                                                 ("optimizer_lr", "('sgd', 1.0)"), ("optimizer_lr", "('sgd', 4.0)"),
                                                 ("multiplicity", "2")])
    spread = 100 * recipe_search.seed_spread(dprecipe.tuned())
    assert spread > 1 and -refine["weight_standardization", "True"]["change"] < spread
    assert all(r["change"] <= spread for r in refine.values())  # why the centre stays the preset


def test_readers_report_what_ran_and_leave_the_rest_empty(tmp_path, monkeypatch):
    from fedmedlib.experiments import recipe_search

    monkeypatch.setenv("FEDMED_RESULTS", str(tmp_path))  # nothing has run here
    assert recipe_search.curve("tuned") == [] and recipe_search.best_federated_variant() is None
    assert recipe_search.search_cost() == []
    assert all(not r["ran"] for r in recipe_search.search_table() + recipe_search.federated_table())
    assert [(r["setting"], r["n"]) for r in recipe_search.final_table()] == [
        ("centralized", 0), ("centralized", 0), ("federated, 10 hospitals", 0), ("federated, 10 hospitals", 0)]
    with pytest.raises(ValueError, match="unknown federated variant"):
        recipe_search.federated_experiment("b999", 0)


def test_the_best_federated_variant_is_chosen_on_validation_with_one_tie_rule():
    from fedmedlib.experiments.recipe_search import pick_federated

    assert pick_federated({"naive": 0.9, "b64-c1-lr2e-3": 0.5}) == "b64-c1-lr2e-3"  # naive is the baseline
    assert pick_federated({"naive": 0.6}) is None
    tie = {"b128-c1-lr3e-3": 0.63, "b256-c1-lr3e-3": 0.63, "b128-c1": 0.61}
    assert pick_federated(tie) == "b256-c1-lr3e-3"  # first in FEDERATED_CPU
    assert pick_federated(dict(tie, **{"b128-c1": 0.64})) == "b128-c1"
