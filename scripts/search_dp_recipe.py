"""Search a DP-SGD recipe for DPResNet on BloodMNIST at (ε = 6, δ = 1.9e-4), on validation accuracy only.

Stages (every trial is one cached JSON — results/dp_recipe-<hash>.json or results/federated-<hash>.json — so
any stage resumes where it stopped, and a later stage re-reads the earlier ones for free):
  search     one knob at a time around START (each knob's candidates with every other knob at START's value),
             then the combination of each knob's best value; the winner is the best validation accuracy of
             all of these trials
  ablation   from the winner, put each knob back to the naive recipe's value, one at a time
  final      the winner and the naive recipe over --seeds (test accuracy is read only here, at the
             best-validation epoch)
  federated  10 hospitals, paper split, record-level DP-SGD at the same (ε, δ) per hospital: the naive
             settings (chapter 6's "as claimed") and FEDERATED variants that carry the centralized lessons
             over (clip, batch, step size, multiplicity, rounds) at seed 0; the variant with the best validation
             accuracy and the naive one then run over --seeds
  all        search, then final + ablation + federated
  curve      the winner (of the finished trials) and the naive recipe at CURVE_EPSILONS, seed 0
  refine     one knob at a time around the best finished search trial, over REFINE_KNOBS (the clip sweep and
             step sizes a cut-short search never reached, weight standardisation, 2 augmented copies); a
             refinement trial replaces that centre only if it beats it by more than the centre's spread over
             seeds (`finished_winner`)
  federated-sgd
             FEDERATED_SGD (each hospital's local optimiser is momentum SGD) at seed 0; then, if one of them is
             the best federated variant so far by validation (`best_federated_variant`), its other --seeds
  complete   everything the book's tables show for the current winner that is not cached yet: its final
             seeds, every ablation knob, both curves at every CURVE_EPSILONS (seed 0)
  continue   the plan after a search cut short by its budget (what happened on 2026-11-27: a 15-minute H200 loan
             finished 3 of the search's 20 trials, and START itself was not among them): the winner is the best
             trial that did finish (`finished_winner`); then final seeds, the federated variants (FEDERATED_CPU),
             the ablation knobs of ABLATION_CPU and the curve points of CURVE_CPU, in that order of priority:
             what 2 CPU cores can run in about 100 minutes

    python scripts/search_dp_recipe.py --stage all [--device cuda] [--jobs 12] [--budget-minutes 8]
    python scripts/search_dp_recipe.py --stage final --seeds 0 1 2 --scale tiny     # pipeline check only

Trials run in --jobs worker processes (one torch thread each): on a GPU many small trials share the card, on
2 CPU cores use --jobs 2. --budget-minutes stops submitting new trials after that many minutes (those running
finish). The search never looks at test accuracy: a trial's score is `val_accuracy_best`. `--scale tiny`
(400 training images, 1 epoch or round) only checks that the pipeline runs; its numbers mean nothing and
are not saved.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from fedmedlib.privacy.recipe import DPRecipe
from fedmedlib.experiments.recipe_search import (ABLATION_CPU, CURVE_CPU, CURVE_EPSILONS, EPSILON, FEDERATED,
                                                 FEDERATED_CPU, FEDERATED_SGD, KNOBS, NAIVE, START, ablation_knobs,
                                                 ablation_trial, best_federated_variant, best_search_trial, cached,
                                                 federated_experiment, knob_value, pick_federated, refine_trials,
                                                 search_trials, with_knob)
from fedmedlib.experiments.recipe_search import finished_winner as _finished_winner


def _job(kind: str, spec: dict, device: str, tiny: bool) -> dict:
    """One trial in a worker process: a centralized recipe or a federated variant; returns its summary line."""
    import torch

    torch.set_num_threads(1)  # many workers share the cores; each one's hot loop is a single thread
    t0 = time.time()
    if kind == "recipe":
        from fedmedlib.experiments.runs import dp_recipe

        recipe, scale = DPRecipe(**spec["recipe"]), {}
        if tiny:
            recipe = recipe.replace(epochs=1, batch_size=min(recipe.batch_size, 100))
            scale = dict(train_subset=400, eval_subset=200)
        r = dp_recipe(recipe, seed=spec["seed"], device=device, progress=False, save_result=not tiny,
                      epsilon=spec.get("epsilon", EPSILON), **scale)
        line = dict(kind=kind, name=recipe.name, seed=spec["seed"], target=spec.get("epsilon", EPSILON),
                    val=r["val_accuracy_best"],
                    test=r["test_accuracy_at_best_val"], eps=r["epsilon_spent"], z=r["noise_multiplier"])
    else:
        from fedmedlib.experiments.runs import federated

        exp = federated_experiment(spec["variant"], spec["seed"], tiny)
        r = federated(exp, profile="quick" if tiny else "cpu", device=device, progress=False, engine="auto")
        line = dict(kind=kind, name=spec["variant"], seed=spec["seed"], val=r["val_accuracy_best"],
                    test=r["test_accuracy_at_best_val"], eps=r["rounds"][-1].get("epsilon"),
                    engine=r.get("engine"), hash=exp.hash())
    line["seconds"] = round(time.time() - t0, 1)
    return line


class Pool:
    """Runs batches of trials in worker processes; stops submitting once the time budget is spent."""

    def __init__(self, args):
        import multiprocessing

        self.args, self.started, self.lines = args, time.time(), []
        # 'spawn': CUDA cannot be re-initialised in a forked child
        self.executor = ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"))

    def over_budget(self) -> bool:
        return bool(self.args.budget_minutes) and (time.time() - self.started) / 60 > self.args.budget_minutes

    def run(self, jobs: list[tuple[str, dict]]) -> list[dict | None]:
        """Each job's summary line (None where the budget stopped it from starting), in the order given."""
        out: list[dict | None] = [None] * len(jobs)
        pending, queue = {}, list(enumerate(jobs))
        while queue or pending:
            while queue and len(pending) < self.args.jobs and not self.over_budget():
                i, (kind, spec) = queue.pop(0)
                pending[self.executor.submit(_job, kind, spec, self.args.device, self.args.scale == "tiny")] = i
            if not pending:
                print(f"budget of {self.args.budget_minutes} min spent: {len(queue)} trials not started",
                      flush=True)
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                i = pending.pop(future)
                try:
                    out[i] = future.result()
                except Exception as error:  # one broken trial must not take the others down with it
                    print(f"TRIAL FAILED {jobs[i]}: {type(error).__name__}: {error}", flush=True)
                    continue
                self.lines.append(out[i])
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out[i].items()}),
                      flush=True)
        return out


def recipe_job(recipe: DPRecipe, seed: int = 0, epsilon: float | None = None) -> tuple[str, dict]:
    return "recipe", dict(recipe=recipe.to_dict(), seed=seed, epsilon=EPSILON if epsilon is None else epsilon)


def search(pool: Pool, lines: list[dict | None] | None = None) -> DPRecipe | None:
    """One-knob-at-a-time trials around START (their summary `lines` if already run), then their combination;
    None if the budget cut it short."""
    trials = search_trials()
    lines = lines if lines is not None else pool.run([recipe_job(t) for t in trials])
    if any(line is None for line in lines):
        return None
    val = {t.name: line["val"] for t, line in zip(trials, lines)}
    combined = START.replace(name="search:combined")
    for knob, values in KNOBS.items():
        # a knob moves from START's value only for a strictly better validation accuracy (ties keep START's)
        best_val, best_value = val["start"], knob_value(START, knob)
        for v in values:
            if v != knob_value(START, knob) and val[f"search:{knob}={v}"] > best_val:
                best_val, best_value = val[f"search:{knob}={v}"], v
        combined = with_knob(combined, knob, best_value)
    if all(combined.replace(name=t.name) != t for t in trials):
        (line,) = pool.run([recipe_job(combined)])
        if line is None:
            return None
        trials, val = trials + [combined], dict(val, **{combined.name: line["val"]})
    best = max(trials, key=lambda t: val[t.name])
    print("WINNER", json.dumps(best.to_dict()), round(val[best.name], 4), flush=True)
    return best.replace(name="tuned")


def finished_winner() -> DPRecipe:
    try:
        winner = _finished_winner()
    except FileNotFoundError as error:
        raise SystemExit(str(error)) from error
    print(f"WINNER of the finished search trials: {winner.to_dict()}", flush=True)
    return winner


def later_jobs(winner: DPRecipe, stages: set, seeds: list[int]) -> list[tuple[str, dict]]:
    jobs = []
    if "final" in stages:
        jobs += [recipe_job(r, s) for s in seeds for r in (winner, NAIVE)]
    if "ablation" in stages:
        jobs += [recipe_job(ablation_trial(winner, k)) for k in ablation_knobs(winner)]
    return jobs


def federated_jobs(pool: Pool, seeds: list[int], first: list[dict | None] | None = None) -> list:
    """Seed 0 of every variant; then the best one (by validation) and the naive one over the other seeds."""
    lines = first if first is not None else pool.run([("federated", dict(variant=v, seed=0)) for v in FEDERATED])
    if any(line is None for line in lines):
        return []
    best = pick_federated({line["name"]: line["val"] for line in lines})
    print("FEDERATED WINNER", best, flush=True)
    variants = ("naive",) if best is None else (best, "naive")
    return [("federated", dict(variant=v, seed=s)) for s in seeds if s != 0 for v in variants]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=["search", "ablation", "final", "federated", "all", "continue", "curve",
                                                "refine", "complete", "federated-sgd"],
                        required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--scale", choices=["full", "tiny"], default="full")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--budget-minutes", type=float, default=None, help="submit no new trial after this")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    pool = Pool(args)
    stages = {"search", "final", "ablation", "federated"} if args.stage == "all" else {args.stage}
    try:
        if args.stage == "continue":
            winner = finished_winner()
            fed = [("federated", dict(variant=v, seed=0)) for v in FEDERATED_CPU]
            first = pool.run([recipe_job(r, s) for s in args.seeds if s != 0 for r in (winner,)]
                             + [recipe_job(NAIVE, s) for s in args.seeds] + fed)
            ablation = [recipe_job(ablation_trial(winner, k)) for k in ABLATION_CPU]
            curve = [recipe_job(r, 0, e) for e in CURVE_CPU for r in (winner, NAIVE)]
            pool.run(federated_jobs(pool, args.seeds, first[-len(fed):]) + ablation + curve)
            return
        if args.stage == "refine":
            pool.run([recipe_job(t) for t in refine_trials(best_search_trial())])
            finished_winner()
            return
        if args.stage == "federated-sgd":
            pool.run([("federated", dict(variant=v, seed=0)) for v in FEDERATED_SGD])
            best = best_federated_variant()
            print("FEDERATED WINNER", best, flush=True)
            if best in FEDERATED_SGD:
                pool.run([("federated", dict(variant=best, seed=s)) for s in args.seeds if s != 0])
            return
        if args.stage == "complete":
            winner = finished_winner()
            jobs = ([recipe_job(r, s) for s in args.seeds for r in (winner, NAIVE)]
                    + [recipe_job(ablation_trial(winner, k)) for k in ablation_knobs(winner)]
                    + [recipe_job(r, 0, e) for e in CURVE_EPSILONS for r in (winner, NAIVE)])
            pool.run([(kind, spec) for kind, spec in jobs if cached(DPRecipe(**spec["recipe"]), spec["seed"],
                                                                    spec["epsilon"]) is None])
            return
        if args.stage == "curve":
            winner = finished_winner()
            pool.run([recipe_job(r, 0, e) for e in CURVE_EPSILONS for r in (winner, NAIVE)])
            return
        if stages == {"federated"}:
            pool.run(federated_jobs(pool, args.seeds))
            return
        # The search and the federated variants' seed 0 share the first batch: neither depends on the other.
        fed_first = [("federated", dict(variant=v, seed=0)) for v in FEDERATED] if "federated" in stages else []
        trials = search_trials()
        first = pool.run([recipe_job(t) for t in trials] + fed_first)
        winner = search(pool, first[:len(trials)])
        later = federated_jobs(pool, args.seeds, first[len(trials):]) if fed_first else []
        if winner is not None:
            later = later_jobs(winner, stages, args.seeds) + later
        elif stages - {"search", "federated"}:
            print("the search did not finish within the budget: final and ablation wait for it", flush=True)
        pool.run(later)
    finally:
        pool.executor.shutdown(wait=True)
        print(f"total {(time.time() - pool.started) / 60:.1f} min, {len(pool.lines)} trials", flush=True)


if __name__ == "__main__":
    main()
