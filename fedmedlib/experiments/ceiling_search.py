"""The non-private ceilings: cached ceiling runs, a small search chosen on validation only, widths and seeds.

Stages (scripts/run_ceilings.py): `search` — ResNet-9 at width 16, seed 0, one knob at a time around START;
`widths` — the chosen recipe at widths 32 and 64 for ResNet-9 and at 16, 32, 64 for DPResNet (seed 0);
`seeds` — seeds 1 and 2 at the chosen width (ResNet-9 first, then DPResNet). Every choice reads
`val_accuracy_best` only; test accuracy is reported at the best-validation epoch and never chooses.

References:
    Yang et al., "MedMNIST v2", Scientific Data 2023 — BloodMNIST at 28 px: ResNet-18 95.8 %, AutoML Vision 96.6 %.
    Page, "How to train your ResNet" (2018) — the starting recipe's family (SGD Nesterov, one-cycle, smoothing).
"""

from __future__ import annotations

import math

import numpy as np

from ..ceiling import CeilingRecipe, train_ceiling
from . import results
from .runs import with_provenance

MEDMNIST_RESNET18_28PX = 95.8  # MedMNIST v2, BloodMNIST test accuracy, ResNet-18 at 28 px
AUTOML_VISION_28PX = 96.6  # MedMNIST v2, BloodMNIST test accuracy, Google AutoML Vision at 28 px
GOAL = 96.0  # issue 20: ResNet-9 above MedMNIST's ResNet-18, mean of 3 seeds at the chosen setting
WIDTHS = (16, 32, 64)
SEEDS = (0, 1, 2)

START = CeilingRecipe("start", model="resnet9", width=16, epochs=30, batch_size=128, optimizer="sgd", lr=0.1,
                      momentum=0.9, schedule="onecycle", weight_decay=5e-4, label_smoothing=0.1, augment=True,
                      shift=2, precision="fp32")
START_REASONS = {
    "model": "ResNet-9, the standard fast-training network of this book (BatchNorm, max-pooling)",
    "width": "16, the CPU profile's width: the search runs where it is cheap, widths are measured after",
    "epochs": "30: the CPU baseline's validation accuracy plateaus by 15 epochs without augmentation; "
              "augmented data needs longer to fit",
    "batch_size": "128: 94 steps per epoch, fast on 2 cores; the paper's 32 costs 4x the optimizer steps",
    "optimizer": "SGD with Nesterov momentum, the optimiser of fast ResNet-9 training (Page 2018)",
    "lr": "0.1 peak at batch 128, the usual SGD rate for a BatchNorm ResNet (searched: 0.05, 0.2)",
    "momentum": "0.9, the usual value",
    "schedule": "one-cycle (Smith & Topin 2019): warm-up to the peak over 25 % of the steps, cosine down to ~0",
    "weight_decay": "5e-4, the usual L2 for small-image ResNets",
    "label_smoothing": "0.1: softer targets regularise a net that fits 12k images quickly (searched: 0)",
    "augment": "on: a smear image of one cell has no orientation, so flips and quarter turns keep the label",
    "shift": "2 px, reflect-padded: keeps the centred cell in the 28-px frame",
    "precision": "fp32: bf16 would change the results, so it would be a separately cached, labelled recipe",
}
# One knob at a time around START (name, changes): each says what the search learns from it.
SEARCH = (
    ("start", {}),
    ("lr 0.05", dict(lr=0.05)),
    ("lr 0.2", dict(lr=0.2)),
    ("cosine", dict(schedule="cosine")),  # no warm-up, decay from the first step
    ("adamw", dict(optimizer="adam", lr=2e-3, weight_decay=0.05)),  # the paper's optimiser family, decoupled decay
    ("no augmentation", dict(augment=False)),  # what augmentation is worth
    ("no smoothing", dict(label_smoothing=0.0)),
    ("60 epochs", dict(epochs=60)),
)
# Training images per second, plain training at batch 64 in fp32 on this machine's 2 cores: DPResNet as measured in
# issue 20; ResNet-9 = DPResNet x the ratio measured on one thread (1.9 at width 16, 2.6 at 64; 2.2 at 32 is
# interpolated). Evaluation (forward only) is taken as 3x training throughput.
TRAIN_IMAGES_PER_S = {"dpresnet": {16: 240, 32: 74, 64: 25}, "resnet9": {16: 460, 32: 160, 64: 65}}
N_TRAIN, N_EVAL = 11_959, 1_712 + 3_421


def search_recipes() -> list[CeilingRecipe]:
    return [START.replace(name=name, **changes) for name, changes in SEARCH]


def key(recipe: CeilingRecipe, seed: int, train_subset: int | None = None, eval_subset: int | None = None) -> dict:
    """The cache key of a ceiling run: every setting but the recipe's name (a label, not a setting)."""
    settings = {k: v for k, v in recipe.to_dict().items() if k != "name"}
    return dict(kind="ceiling", recipe=settings, seed=seed, train_subset=train_subset, eval_subset=eval_subset)


def ceiling(recipe: CeilingRecipe, seed: int = 0, *, train_subset: int | None = None, eval_subset: int | None = None,
            allow_run: bool = True, save_result: bool = True, directory=None, **run) -> dict:
    """Cached `train_ceiling`: results/ceiling-<hash>.json, or run it (and save it) when allowed."""
    return results.load_or_run(
        "ceiling", key(recipe, seed, train_subset, eval_subset),
        lambda: with_provenance(train_ceiling(recipe, seed=seed, train_subset=train_subset,
                                              eval_subset=eval_subset, **run)),
        directory=directory, allow_run=allow_run, save_result=save_result)


def load(recipe: CeilingRecipe, seed: int = 0, directory=None, **subsets) -> dict | None:
    return results.load("ceiling", key(recipe, seed, **subsets), directory)


def estimated_minutes(recipe: CeilingRecipe, n_train: int = N_TRAIN, n_eval: int = N_EVAL,
                      report: dict | None = None) -> float:
    """Expected minutes of one run on one thread: from the side-by-side benchmark's rates for this model and width
    (`report` defaults to results/benchmarks/ceiling_cost.json; it times batch 128 in fp32), else from
    TRAIN_IMAGES_PER_S (the nearest measured width, scaled per image cost)."""
    report = results.benchmark("ceiling_cost") if report is None else report
    cell = (report or {}).get("cells", {}).get(f"{recipe.model} w{recipe.width}")
    if cell and (recipe.batch_size, recipe.precision) == (128, "fp32"):
        return recipe.epochs * (n_train / cell["train_images_per_cpu_s"] + n_eval / cell["eval_images_per_cpu_s"]) / 60
    rates = TRAIN_IMAGES_PER_S[recipe.model]
    near = min(rates, key=lambda w: abs(math.log(w / recipe.width)))
    rate = rates[near] * (near / recipe.width) ** 2  # cost per image grows about as width squared
    return recipe.epochs * (n_train / rate + n_eval / (3 * rate)) / 60


def chosen(directory=None, **subsets) -> tuple[CeilingRecipe, dict | None]:
    """The search trial with the best validation accuracy among those finished (START while none has)."""
    done = [(r, res) for r in search_recipes() if (res := load(r, 0, directory, **subsets))]
    if not done:
        return START, None
    return max(done, key=lambda d: d[1]["val_accuracy_best"])  # max keeps the first of equals: START first


def chosen_width(directory=None, **subsets) -> int:
    """The ResNet-9 width with the best validation accuracy at seed 0 among those finished (16 while none has)."""
    recipe = chosen(directory, **subsets)[0]
    done = {w: res for w in WIDTHS if (res := load(recipe.replace(width=w), 0, directory, **subsets))}
    return max(done, key=lambda w: done[w]["val_accuracy_best"]) if done else 16


def plan(stage: str, directory=None, **subsets) -> list[tuple[CeilingRecipe, int]]:
    """(recipe, seed) of a stage, in the order it runs; later stages follow what earlier ones have chosen."""
    if stage == "search":
        return [(r, 0) for r in search_recipes()]
    best = chosen(directory, **subsets)[0]
    if stage == "widths":
        return ([(best.replace(width=w), 0) for w in WIDTHS if w != 16]
                + [(best.replace(model="dpresnet", width=w), 0) for w in WIDTHS])
    if stage == "seeds":
        w = chosen_width(directory, **subsets)
        return [(best.replace(model=m, width=w), s) for m in ("resnet9", "dpresnet") for s in SEEDS if s]
    raise ValueError(f"unknown ceiling stage {stage!r}: choose search, widths or seeds")


def search_table(directory=None) -> list[dict]:
    """One row per search trial: what it changes, validation (which chooses) and test (reported), minutes."""
    rows = []
    for (name, changes), recipe in zip(SEARCH, search_recipes()):
        r = load(recipe, 0, directory)
        rows.append(dict(trial=name, changes=", ".join(f"{k}={v}" for k, v in changes.items()) or "—",
                         val=None if r is None else 100 * r["val_accuracy_best"],
                         test=None if r is None else 100 * r["test_accuracy_at_best_val"],
                         minutes=None if r is None else r["wall_time_s"] / 60))
    return rows


def table(directory=None) -> list[dict]:
    """One row per (model, width) at the chosen recipe: test mean ± std (%) over the `n` seeds found (the keys of
    grid.format_cell), the seeds missing, validation, minutes per run and training images/s; a row with no seed
    has None in every measured number."""
    best = chosen(directory)[0]
    rows = []
    for model in ("resnet9", "dpresnet"):
        for w in WIDTHS:
            recipe = best.replace(model=model, width=w)
            found = {s: r for s in SEEDS if (r := load(recipe, s, directory))}
            test = 100 * np.array([r["test_accuracy_at_best_val"] for r in found.values()])
            mean = lambda k: float(np.mean([r[k] for r in found.values()])) if found else None  # noqa: E731
            rows.append(dict(model=model, width=w, recipe=best.name, seeds=sorted(found),
                             missing_seeds=[s for s in SEEDS if s not in found],
                             n=len(found), mean=float(test.mean()) if found else None,
                             test_by_seed={s: 100 * r["test_accuracy_at_best_val"] for s, r in found.items()},
                             val_by_seed={s: 100 * r["val_accuracy_best"] for s, r in found.items()},
                             last_by_seed={s: 100 * r["test_accuracy_last"] for s, r in found.items()
                                           if r.get("test_accuracy_last") is not None},
                             minutes_by_seed={s: r["wall_time_s"] / 60 for s, r in found.items()},
                             std=float(test.std(ddof=1)) if len(found) > 1 else None,
                             val_mean=100 * mean("val_accuracy_best") if found else None,
                             minutes=mean("wall_time_s") / 60 if found else None,
                             images_per_s=mean("train_images_per_second"),
                             estimated_minutes=estimated_minutes(recipe)))
    return rows


def _paired(a: dict | None, b: dict | None) -> dict | None:
    """b against a on the seeds both rows have (like for like: seed-to-seed spread is as large as the effects
    measured here): test points, run-time ratio, and those seeds; None while they share no seed."""
    common = sorted(set(a["seeds"]) & set(b["seeds"])) if a and b else []
    if not common:
        return None
    mean = lambda row, key: float(np.mean([row[key][s] for s in common]))  # noqa: E731
    return dict(points=_mean_gap(a, b, "test_by_seed", common),
                time_ratio=mean(b, "minutes_by_seed") / mean(a, "minutes_by_seed"), seeds=common)


def _mean_gap(a: dict, b: dict, key: str, seeds: list[int]) -> float:
    """Mean over `seeds` of b's per-seed value minus a's (`key` is a table row's `*_by_seed`), in points."""
    return float(np.mean([b[key][s] - a[key][s] for s in seeds]))


def width_cost(rows: list[dict], model: str, width: int, base: int = 16) -> dict | None:
    """What `width` buys over `base` for `model`, on the seeds both have run (`_paired`); None until they share one."""
    by = {r["width"]: r for r in rows if r["model"] == model}
    return _paired(by.get(base), by.get(width))


def model_gap(rows: list[dict], width: int) -> dict | None:
    """DPResNet against ResNet-9 (`_paired`) at `width`, else at the widest width where both have run; with that
    width. None while no width has both."""
    at = {(r["model"], r["width"]): r for r in rows}
    for w in (width, *sorted(WIDTHS, reverse=True)):
        if (gap := _paired(at.get(("resnet9", w)), at.get(("dpresnet", w)))) is not None:
            return dict(gap, width=w)
    return None


READINGS = ("val", "test_at_best_val", "test_last")
# 0.05 points: just under one validation image (100 / 1712 = 0.058); a smaller difference counts for neither side.
NEGLIGIBLE = 0.05
DIRECTION_TEXT = {"gain": "every reading shows a gain", "loss": "no reading shows a gain",
                  "mixed": "the readings disagree in sign, so no gain is measured",
                  "none": "every reading is under one validation image"}


def width_readings(rows: list[dict], model: str, width: int, base: int = 16) -> dict | None:
    """`width` against `base` for `model` read three ways, in points on the seeds both have run: best validation
    accuracy, test at the best-validation epoch (what the tables report) and test at the last epoch. With one seed,
    picking an epoch on validation moves test by as much as the width effects measured here, so a width gain whose
    readings disagree in sign is not a measured gain: `direction` is "gain" or "loss" when every reading that is
    not negligible points that way, "mixed" when they disagree, "none" when all are negligible; `text` says the
    three readings in words. None until both share a seed with all three readings."""
    by = {r["width"]: r for r in rows if r["model"] == model}
    a, b = by.get(base), by.get(width)
    common = sorted(set(a["last_by_seed"]) & set(b["last_by_seed"])) if a and b else []
    if not common:
        return None
    out = dict(model=model, width=width, base=base, seeds=common, val=_mean_gap(a, b, "val_by_seed", common),
               test_at_best_val=_mean_gap(a, b, "test_by_seed", common),
               test_last=_mean_gap(a, b, "last_by_seed", common))
    signs = {math.copysign(1, out[k]) for k in READINGS if abs(out[k]) >= NEGLIGIBLE}
    out["direction"] = {frozenset(): "none", frozenset({1.0}): "gain", frozenset({-1.0}): "loss"}.get(
        frozenset(signs), "mixed")
    out["text"] = (f"validation {out['val']:+.2f}, test at the best-validation epoch {out['test_at_best_val']:+.2f} "
                   f"and test at the last epoch {out['test_last']:+.2f} points")
    return out


def highest(rows: list[dict], model: str | None = None) -> dict | None:
    """The table row with the highest mean test accuracy (any width; `model` alone if given), None before any run."""
    done = [r for r in rows if r["n"] and model in (None, r["model"])]
    return max(done, key=lambda r: r["mean"]) if done else None


def width_choice(rows: list[dict], width: int, base: int = 16) -> dict | None:
    """How clearly validation chose `width` (`chosen_width`, seed 0): its validation accuracy (%) against `base`'s,
    the spread of `base`'s validation accuracy over its seeds, and whether the choice lies within that spread (the
    margin is then no larger than seed-to-seed noise). None before both have run at seed 0, or when `base` is the
    choice."""
    by = {r["width"]: r for r in rows if r["model"] == "resnet9"}
    if width == base or 0 not in by[width]["seeds"] or 0 not in by[base]["seeds"]:
        return None
    spread = list(by[base]["val_by_seed"].values())
    val = by[width]["val_by_seed"][0]
    return dict(width=width, val=val, base=base, base_val=by[base]["val_by_seed"][0], base_low=min(spread),
                base_high=max(spread), base_seeds=by[base]["n"], within_spread=len(spread) > 1 and val <= max(spread))


def epoch_cost_ratio(model: str, width: int, base: tuple[str, int], report: dict | None = None) -> float | None:
    """CPU time of one ceiling epoch of (`model`, `width`) over that of `base` = (model, width), measured side by
    side in one run (benchmarks/ceiling_cost.py; `report` defaults to results/benchmarks/ceiling_cost.json). The
    runs' own wall times come from different sessions, on a machine whose speed varies up to 4x between days, so
    their ratio mixes the day in; None while the benchmark lacks either cell."""
    report = results.benchmark("ceiling_cost") if report is None else report
    cells = (report or {}).get("cells", {})
    a, b = cells.get(f"{base[0]} w{base[1]}"), cells.get(f"{model} w{width}")
    return b["epoch_cpu_s"] / a["epoch_cpu_s"] if a and b else None


def goal_verdict(rows: list[dict], width: int) -> str:
    """Whether ResNet-9 reached GOAL (mean of 3 seeds) at the chosen `width`, for prose; while that width has
    fewer than 3 seeds, also what another width with 3 seeds shows (said as that width's, not the choice's)."""
    r9 = {r["width"]: r for r in rows if r["model"] == "resnet9"}
    reached = lambda r: "reached" if r["mean"] >= GOAL else "not reached"  # noqa: E731
    if r9[width]["n"] >= 3:
        return f"{reached(r9[width])} ({r9[width]['mean']:.1f} %)"
    n = r9[width]["n"]
    text = f"not yet known at width {width} ({n} of 3 seeds {'has' if n == 1 else 'have'} run)"
    others = [w for w in WIDTHS if w != width and r9[w]["n"] >= 3]
    return text + "".join(f"; at width {w}, {reached(r9[w])} ({r9[w]['mean']:.1f} % over 3 seeds)" for w in others)
