"""The search for a tuned DP-SGD recipe (ε = 6, δ = 1.9e-4): its trials, and readers of their cached results.

`scripts/search_dp_recipe.py` runs the trials (in worker processes, under a time budget); this module says
which trials there are and reads what has run, for the book and the tests. Every score that chooses
anything is a validation accuracy; test accuracy is only reported, at the best-validation epoch (or round).

The search: one knob at a time around START (each knob's other values with every other knob at START's),
then the combination of each knob's best value. The refinement (for a search cut short, as on 2026-11-27):
one knob at a time around the best finished search trial, over REFINE_KNOBS. The ablation: from the
winner, one knob at a time back to the naive recipe's value. The federated variants: chapter 6's 10-hospital
"as claimed" cell (the naive one) and variants that move the knobs the FL engine has (batch, clip, step
size, local optimiser, multiplicity, rounds).
"""

from __future__ import annotations

import json

from ..privacy.recipe import DPRecipe, tuned
from .runs import dp_recipe
from .grid import load_cell, summarize
from ..privacy import PAPER_EPSILON

EPSILON = PAPER_EPSILON  # every trial but the curve's spends the paper's ε = 6 at δ = 1.9e-4
NAIVE = DPRecipe("naive")  # what chapter 3 ran: Adam 1e-3, batch 128, 15 epochs, C = 7, no augmentation
START = DPRecipe("start", batch_size=1024, epochs=30, optimizer="sgd", lr=2.0, momentum=0.9, schedule="cosine",
                 clip=1.0, multiplicity=4, ema=0.999)
KNOBS = {  # every knob the DP literature names, with START's value among the candidates
    "optimizer_lr": [("adam", 1e-3), ("adam", 3e-3), ("sgd", 0.5), ("sgd", 1.0), ("sgd", 2.0), ("sgd", 4.0)],
    "clip": [0.5, 1.0, 2.0, 7.0],
    "batch_size": [256, 512, 1024, 2048],
    "epochs": [15, 30, 60],
    "multiplicity": [1, 4, 8],
    "ema": [0.0, 0.99, 0.999],
    "schedule": ["constant", "cosine"],
    "width": [16, 32],
}
# The naive variant is the CPU profile's 10-hospital "as claimed" grid cell itself (20 rounds × 1 local epoch,
# batch 32, Adam 1e-3, C = 7, SecAgg+), so its three seeds are the grid's. The FL engine trains with a fresh
# local optimiser each round (Adam, or momentum SGD), so the schedule and EMA do not carry over; each hospital
# spends (ε, δ).
FEDERATED = {
    "naive": {},
    "b128-c1": dict(batch_size=128, clip=1.0),
    "b128-c1-lr3e-3": dict(batch_size=128, clip=1.0, lr=3e-3),
    "b256-c1-lr3e-3": dict(batch_size=256, clip=1.0, lr=3e-3),
    "b64-c1-lr2e-3": dict(batch_size=64, clip=1.0, lr=2e-3),
    "b128-c1-lr3e-3-k4": dict(batch_size=128, clip=1.0, lr=3e-3, multiplicity=4),
    "b256-c1-lr3e-3-k4": dict(batch_size=256, clip=1.0, lr=3e-3, multiplicity=4),
    "b256-c1-lr3e-3-k4-r40": dict(batch_size=256, clip=1.0, lr=3e-3, multiplicity=4, rounds=40),
    # The centralized search's lesson (SGD with momentum at lr·C ≈ 1–2 beat Adam by 16 points) carried over:
    # each hospital's fresh local optimiser is momentum SGD; no schedule or EMA, which the engine lacks.
    "b256-c1-sgd1": dict(batch_size=256, clip=1.0, local_optimizer="sgd", lr=1.0),
    "b256-c1-sgd0.5": dict(batch_size=256, clip=1.0, local_optimizer="sgd", lr=0.5),
}
CURVE_EPSILONS = (1.0, 2.0, 8.0)  # with ε = 6 from the final stage: the tuned and the naive curves
# What 2 CPU cores can run in about 100 minutes after a cut-short search (a 30-epoch trial: ~20 min per core):
FEDERATED_CPU = ("naive", "b256-c1-lr3e-3", "b128-c1-lr3e-3")
FEDERATED_SGD = ("b256-c1-sgd1", "b256-c1-sgd0.5")  # the second CPU batch (2026-11-27, after the refinement)
ABLATION_CPU = ("ema", "clip", "optimizer_lr")
CURVE_CPU = (2.0, 1.0)
# Around the best finished search trial (no augmentation, ~17 CPU-minutes per trial per core): the clip sweep
# and the step size the cut-short search never reached, and weight standardisation (which the first search
# did not have). lr·C is the largest total move per step, so the two are swept separately, each at the
# other's centre value.
REFINE_KNOBS = {
    "clip": [0.5, 2.0],
    "optimizer_lr": [("sgd", 1.0), ("sgd", 4.0)],
    "weight_standardization": [True],
    "multiplicity": [2],  # the cheapest test of augmentation multiplicity at the centre (2× a trial's compute)
}
SEEDS = (0, 1, 2)


def with_knob(recipe: DPRecipe, knob: str, value) -> DPRecipe:
    if knob == "optimizer_lr":
        return recipe.replace(optimizer=value[0], lr=value[1])
    return recipe.replace(**{knob: value})


def knob_value(recipe: DPRecipe, knob: str):
    return (recipe.optimizer, recipe.lr) if knob == "optimizer_lr" else getattr(recipe, knob)


def search_trials() -> list[DPRecipe]:
    """START, then every other value of every knob with the rest at START's values."""
    return [START] + [with_knob(START, k, v).replace(name=f"search:{k}={v}")
                      for k, values in KNOBS.items() for v in values if v != knob_value(START, k)]


def best_search_trial() -> DPRecipe:
    """The best (by validation) of the search trials that have a result: the refinement's centre."""
    done = [(r["val_accuracy_best"], t) for t in search_trials() if (r := cached(t)) is not None]
    if not done:
        raise FileNotFoundError("no search trial has finished yet: run scripts/search_dp_recipe.py --stage search")
    return max(done, key=lambda d: d[0])[1]


def refine_trials(centre: DPRecipe) -> list[DPRecipe]:
    """Every REFINE_KNOBS value that differs from `centre`'s, one knob at a time."""
    return [with_knob(centre, k, v).replace(name=f"refine:{k}={v}")
            for k, values in REFINE_KNOBS.items() for v in values if v != knob_value(centre, k)]


def ablation_trial(winner: DPRecipe, knob: str) -> DPRecipe:
    """`winner` with `knob` put back to the naive recipe's value."""
    return with_knob(winner, knob, knob_value(NAIVE, knob)).replace(name=f"ablation:{knob}={knob_value(NAIVE, knob)}")


def ablation_knobs(winner: DPRecipe) -> list[str]:
    """The knobs on which `winner` differs from the naive recipe: the ones an ablation can put back."""
    return [k for k in dict.fromkeys([*KNOBS, *REFINE_KNOBS]) if knob_value(NAIVE, k) != knob_value(winner, k)]


def federated_experiment(variant: str, seed: int, tiny: bool = False):
    from .. import fl
    from ..config import CPU

    if variant not in FEDERATED:
        raise ValueError(f"unknown federated variant {variant!r}: choose one of {sorted(FEDERATED)}")
    overrides = dict(FEDERATED[variant])
    if tiny:
        overrides.update(train_subset=400, eval_subset=200, rounds=1)
    return fl.Experiment.from_profile(CPU, n_clients=10, scheme="paper", dp="dpsgd", aggregator="secagg",
                                      seed=seed, **overrides)


def cached(recipe: DPRecipe, seed: int = 0, epsilon: float = EPSILON) -> dict | None:
    """A recipe's result from results/, or None if it has not run."""
    try:
        return dp_recipe(recipe, seed=seed, epsilon=epsilon, allow_run=False)
    except FileNotFoundError:
        return None


def cached_federated(variant: str, seed: int) -> dict | None:
    return load_cell(federated_experiment(variant, seed), "cpu")


def seed_spread(recipe: DPRecipe) -> float:
    """max − min validation accuracy (fraction) of `recipe` over SEEDS that have run (0 with fewer than 2)."""
    vals = [r["val_accuracy_best"] for s in SEEDS if (r := cached(recipe, s)) is not None]
    return max(vals) - min(vals) if len(vals) > 1 else 0.0


def finished_winner() -> DPRecipe:
    """The search's best finished trial (the refinement's centre), renamed 'tuned' — unless a refinement trial
    beats the centre's validation accuracy by more than the centre's own spread over seeds: one seed of a
    30-minute trial cannot tell a gain smaller than that from noise (the best such trial wins then)."""
    centre = best_search_trial()
    bar = cached(centre)["val_accuracy_best"] + seed_spread(centre)
    better = [(r["val_accuracy_best"], t) for t in refine_trials(centre)
              if (r := cached(t)) is not None and r["val_accuracy_best"] > bar]
    return max(better, key=lambda d: d[0])[1].replace(name="tuned") if better else centre.replace(name="tuned")


def verdict(row: dict, target: float) -> str:
    """'meets' or 'misses' `target` (%) by a row's mean, for prose; a row with no seed has not been compared."""
    if not row["n"]:
        return "has not yet run, so it is not yet compared with"
    return "meets" if row["mean"] >= target else "misses"


def search_table() -> list[dict]:
    """Every search trial: the knob it moves, its value, validation accuracy (%) or None if it has not run."""
    rows = []
    for trial in search_trials():
        knob, _, value = trial.name.partition(":")[2].partition("=") if ":" in trial.name else ("", "", "")
        r = cached(trial)
        rows.append(dict(trial=trial.name, knob=knob or "(START)", value=value or "", ran=r is not None,
                         val_accuracy=100 * r["val_accuracy_best"] if r else None,
                         minutes=r["wall_time_s"] / 60 if r else None,
                         device=r["provenance"].get("device") if r else None))
    return rows


def refine_table() -> list[dict]:
    """Every refinement trial around the best finished search trial: knob, value, validation accuracy (%)."""
    centre = best_search_trial()
    base = cached(centre)
    rows = [dict(trial="centre (best search trial)", knob="", value="", ran=True,
                 val_accuracy=100 * base["val_accuracy_best"], change=0.0,
                 minutes=base["wall_time_s"] / 60, device=base["provenance"].get("device"))]
    for trial in refine_trials(centre):
        knob, _, value = trial.name.partition(":")[2].partition("=")
        r = cached(trial)
        rows.append(dict(trial=trial.name, knob=knob, value=value, ran=r is not None,
                         val_accuracy=100 * r["val_accuracy_best"] if r else None,
                         change=100 * (r["val_accuracy_best"] - base["val_accuracy_best"]) if r else None,
                         minutes=r["wall_time_s"] / 60 if r else None,
                         device=r["provenance"].get("device") if r else None))
    return rows


def final_table(seeds=SEEDS) -> list[dict]:
    """Naive against tuned, centralized and federated (10 hospitals, paper split): test accuracy (%) at the
    best-validation epoch or round, mean ± std over the seeds that have run."""
    rows = []
    for label, recipe in (("naive", NAIVE), ("tuned", tuned())):
        found = [r for s in seeds if (r := cached(recipe, s)) is not None]
        rows.append(dict(setting="centralized", recipe=label, seeds=[r["seed"] for r in found],
                         epsilon_spent=max((r["epsilon_spent"] for r in found), default=None),
                         **summarize([r["test_accuracy_at_best_val"] for r in found])))
    best = best_federated_variant()
    for label, variant in (("naive", "naive"), ("tuned", best)):
        found = [r for s in seeds if variant and (r := cached_federated(variant, s)) is not None]
        rows.append(dict(setting="federated, 10 hospitals", recipe=f"{label} ({variant})" if variant else label,
                         seeds=[r["seed"] for r in found],
                         epsilon_spent=max((r["rounds"][-1]["epsilon"] for r in found), default=None),
                         **summarize([r["test_accuracy_at_best_val"] for r in found])))
    return rows


def federated_table(seed: int = 0) -> list[dict]:
    """Every federated variant at `seed`: validation (chooses) and test (reported) accuracy (%)."""
    rows = []
    for variant, overrides in FEDERATED.items():
        r = cached_federated(variant, seed)
        rows.append(dict(variant=variant, settings=overrides or "chapter 6's as-claimed cell", ran=r is not None,
                         val_accuracy=100 * r["val_accuracy_best"] if r else None,
                         test_accuracy=100 * r["test_accuracy_at_best_val"] if r else None))
    return rows


def pick_federated(scores: dict[str, float]) -> str | None:
    """The variant (not 'naive') with the best validation score; a tie goes to the variant that comes first in
    FEDERATED_CPU, then FEDERATED (on 2026-11-27 b256-c1-lr3e-3 and b128-c1-lr3e-3 tied at seed 0)."""
    order = list(dict.fromkeys([*FEDERATED_CPU, *FEDERATED]))
    ran = [v for v in order if v in scores and v != "naive"]
    return max(ran, key=lambda v: (scores[v], -order.index(v))) if ran else None


def best_federated_variant(seed: int = 0) -> str | None:
    """`pick_federated` over the variants that have run at `seed`."""
    return pick_federated({row["variant"]: row["val_accuracy"] for row in federated_table(seed) if row["ran"]})


def ablation_table() -> list[dict]:
    """The tuned recipe with one knob back at the naive value: validation accuracy (%) and the change."""
    base = cached(tuned())
    rows = []
    for knob in ablation_knobs(tuned()):
        r = cached(ablation_trial(tuned(), knob))
        rows.append(dict(knob=knob, tuned=str(knob_value(tuned(), knob)), naive=str(knob_value(NAIVE, knob)),
                         ran=r is not None, val_accuracy=100 * r["val_accuracy_best"] if r else None,
                         change=100 * (r["val_accuracy_best"] - base["val_accuracy_best"]) if r and base else None))
    return rows


def _refine_or_none() -> list[DPRecipe]:
    try:
        return refine_trials(best_search_trial())
    except FileNotFoundError:  # no search trial yet: nothing to refine around
        return []


def search_cost() -> list[dict]:
    """What every stage cost: trials that ran, and their summed wall time in minutes, per stage and device
    (each trial ran in its own single-threaded process; on a shared device several ran at once)."""
    winner = tuned()
    stages = {
        "search": [(t, 0, EPSILON) for t in search_trials()],
        "refine": [(t, 0, EPSILON) for t in _refine_or_none()],
        "ablation": [(ablation_trial(winner, k), 0, EPSILON) for k in ablation_knobs(winner)],
        "final": [(r, s, EPSILON) for r in (winner, NAIVE) for s in SEEDS],
        "curve": [(r, 0, e) for e in CURVE_EPSILONS for r in (winner, NAIVE)],
    }
    rows, seen = [], set()
    for stage, jobs in stages.items():
        found = {}
        for recipe, seed, eps in jobs:
            r = cached(recipe, seed, eps)
            if r is None:
                continue
            key = json.dumps([r["config"], r["seed"]], sort_keys=True, default=str)
            if key in seen:  # a trial shared by two stages counts once, in the first
                continue
            seen.add(key)
            found.setdefault(r["provenance"].get("device", "?"), []).append(r["wall_time_s"])
        rows += [dict(stage=stage, device=d, trials=len(w), minutes=sum(w) / 60) for d, w in found.items()]
    fed = {}
    for variant in FEDERATED:
        for seed in SEEDS:
            if variant == "naive" or (r := cached_federated(variant, seed)) is None:
                continue  # the naive variant is chapter 6's grid cell: the grid paid for it
            fed.setdefault(r["provenance"].get("device", "?"), []).append(r["wall_time_s"])
    rows += [dict(stage="federated", device=d, trials=len(w), minutes=sum(w) / 60) for d, w in fed.items()]
    return rows


def curve(label: str, seeds=SEEDS) -> list[dict]:
    """Privacy–utility points of the 'naive' or 'tuned' recipe: ε, mean ± std test accuracy (%), seeds."""
    recipe = {"naive": NAIVE, "tuned": tuned()}[label]
    points = []
    for eps in sorted({*CURVE_EPSILONS, EPSILON}):
        found = [r for s in seeds if (r := cached(recipe, s, eps)) is not None]
        if found:
            points.append(dict(epsilon=eps, seeds=[r["seed"] for r in found],
                               **summarize([r["test_accuracy_at_best_val"] for r in found])))
    return points

