"""The paper's own rounds and epochs (50 × 3) at the CPU profile's width, beside the 20 × 1 cells, and an estimate.

The PAPER profile (width 64, 50 rounds × 3 local epochs) costs ≈ 75x a CPU-profile cell, hours per cell on 2
cores. So the scale question is split into its two factors, each measured where it is affordable: rounds and
epochs (these cells, federated, width 16) and width (the centralized ceilings, fedmedlib.experiments.ceiling_search).
`width64_estimate` combines them into a number that is labelled an estimate wherever it is shown.

References:
    Fares & Saad, arXiv 2412.00687 (2024), and their code: 50 rounds, 3 local epochs, batch 32, Adam 1e-3.
"""

from __future__ import annotations

from ..config import PAPER
from . import grid

# What the paper's protocol sets that the CPU profile reduces: its rounds and local epochs (the PAPER profile's
# values, so one definition). Batch and optimiser are the paper's in every profile already.
PAPER_ROUNDS = dict(rounds=PAPER.rounds, local_epochs=PAPER.local_epochs)
# (column, model) of the three cells issue 20 names: plain FedAvg, the paper's DP+ as published, RQ3's ResNet-9.
CELLS = (("dp-sa-", "dpresnet"), ("as_published", "dpresnet"), ("dp-sa-", "resnet9"))
HOSPITALS, SCHEME = grid.HEADLINE
ESTIMATE_FORMULA = ("estimate(width 64, 50 × 3) = federated(width 16, 50 × 3) + [centralized ceiling(width 64) − "
                    "centralized ceiling(width 16)], same model and recipe, seed 0, in accuracy points")


def experiment(profile, column: str, model: str, seed: int = 0, paper_rounds: bool = True):
    """A headline-row cell (10 hospitals, paper split) at the paper's rounds and epochs, or at the profile's own."""
    return grid.experiment(profile, column, HOSPITALS, SCHEME, seed, model=model,
                           **(PAPER_ROUNDS if paper_rounds else {}))


def cells(profile, seeds=(0,)):
    """The paper-rounds Experiments, seed by seed (scripts/run_grid.py --parts paper-rounds)."""
    return [experiment(profile, col, model, seed) for seed in seeds for col, model in CELLS]


def paper_number(column: str, model: str) -> float | None:
    """The paper's Table 1 entry for a cell: its table is DPResNet's, so a ResNet-9 cell has none (RQ3 reports
    no ResNet-9 accuracy we could trace)."""
    return grid.paper_number(HOSPITALS, column, SCHEME) if model == "dpresnet" else None


def _accuracy(result, metric):
    return None if result is None else 100 * grid.metric_value(result, metric)


def rows(profile, seed: int = 0, directory=None) -> list[dict]:
    """Per cell: the profile's own rounds (e.g. 20 × 1) and the paper's 50 × 3, at width `profile.width`, seed
    `seed`: test at the best-validation round and, labelled, best test over rounds; None where not yet run."""
    out = []
    for col, model in CELLS:
        for paper in (False, True):
            exp = experiment(profile, col, model, seed, paper)
            r = grid.load_cell(exp, profile.name, directory)
            out.append(dict(column=col, model=model, label=f"{grid.COLUMN[col].label} ({model})",
                            schedule=f"{exp.rounds} × {exp.local_epochs}", rounds=exp.rounds,
                            local_epochs=exp.local_epochs, width=exp.width, seed=seed,
                            at_best_val=_accuracy(r, "test_accuracy_at_best_val"),
                            best_on_test=_accuracy(r, "test_accuracy_best_round"),
                            best_round=None if r is None else r["best_round"],
                            hours=None if r is None else r["wall_time_s"] / 3600,
                            paper=paper_number(col, model)))
    return out


def width64_estimate(federated_reduced: float | None, federated_paper_rounds: float | None,
                     central_w16: float | None, central_w64: float | None) -> dict | None:
    """The paper's protocol at width 64, estimated from two measured factors (accuracies in %):

    rounds gain = federated_paper_rounds − federated_reduced (width 16, 50 × 3 against 20 × 1);
    width gain  = central_w64 − central_w16 (the centralized ceiling, same model and recipe);
    estimate    = federated_paper_rounds + width gain, capped at 100.

    It assumes the two factors add: that width buys a federation what it buys pooled training. None while any
    input is missing (shown as 'not yet run').
    """
    inputs = (federated_reduced, federated_paper_rounds, central_w16, central_w64)
    if any(v is None for v in inputs):
        return None
    if any(not 0 <= v <= 100 for v in inputs):
        raise ValueError(f"accuracies are percentages in [0, 100], got {inputs}")
    width_gain = central_w64 - central_w16
    return dict(estimate=min(100.0, federated_paper_rounds + width_gain), width_gain=width_gain,
                rounds_gain=federated_paper_rounds - federated_reduced, formula=ESTIMATE_FORMULA,
                label="estimate from measured factors, not a measurement")


def estimates(profile, seed: int = 0, directory=None) -> list[dict]:
    """`width64_estimate` for each cell from results/: the model's own centralized ceiling (the chosen recipe,
    seed 0) gives the width gain, the cell's test at the best-validation round the federated inputs."""
    from . import ceiling_search

    best = ceiling_search.chosen(directory)[0]
    by = {(r["column"], r["model"], r["rounds"]): r for r in rows(profile, seed, directory)}
    out = []
    for col, model in CELLS:
        central = {w: ceiling_search.load(best.replace(model=model, width=w), 0, directory) for w in (16, 64)}
        est = width64_estimate(by[col, model, profile.rounds]["at_best_val"],
                               by[col, model, PAPER_ROUNDS["rounds"]]["at_best_val"],
                               *(None if central[w] is None else 100 * central[w]["test_accuracy_at_best_val"]
                                 for w in (16, 64)))
        out.append(dict(column=col, model=model, label=f"{grid.COLUMN[col].label} ({model})",
                        paper=paper_number(col, model), estimate=est))
    return out
