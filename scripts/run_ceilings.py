"""Run the non-private centralized ceilings (issue 20), stage by stage, one JSON per finished run (resumable).

Stages (fedmedlib.experiments.ceiling_search; each chooses on validation accuracy only):
  search   ResNet-9, width 16, seed 0: START and one knob at a time around it
  widths   the chosen recipe at widths 32, 64 (ResNet-9) and 16, 32, 64 (DPResNet), seed 0
  seeds    seeds 1 and 2 at the chosen width, ResNet-9 then DPResNet
  all      the three in order (a later stage reads what the earlier ones chose)

    python scripts/run_ceilings.py --list                      # every run, done or todo, with its estimated cost
    python scripts/run_ceilings.py --stage search [--device cuda]
    python scripts/run_ceilings.py --stage widths --models dpresnet --widths 16   # one worker's share
    python scripts/run_ceilings.py --stage all --quick --results-dir /tmp/ceil --limit 2   # pipeline check only

Runs already in results/ are skipped; an interrupted run resumes from its checkpoint after the last finished epoch.
Several workers may share a stage (e.g. two one-thread workers on 2 cores): each claims a run before starting it.
`--quick` (half width, 1 epoch, 300 training and 200 evaluation images) only checks the pipeline: its numbers mean
nothing, and it writes only to an explicit --results-dir (or FEDMED_RESULTS), never into the repository's results/.
"""

from __future__ import annotations

import argparse
import os
import time

from fedmedlib.experiments import ceiling_search
from fedmedlib.experiments.results import claim, result_path, results_dir
from fedmedlib.models import MODELS

STAGES = ("search", "widths", "seeds")
QUICK_SUBSETS = dict(train_subset=300, eval_subset=200)


def quick(recipe):
    return recipe.replace(epochs=1, width=max(8, recipe.width // 2))


def todo(stage: str, directory, is_quick: bool, models=None, widths=None):
    subsets = QUICK_SUBSETS if is_quick else {}
    for recipe, seed in ceiling_search.plan(stage, directory, **subsets):
        if (models and recipe.model not in models) or (widths and recipe.width not in widths):
            continue  # filtered on the full-scale recipe, before --quick halves its width
        yield (quick(recipe) if is_quick else recipe), seed, subsets


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="all", choices=[*STAGES, "all"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--results-dir", default=None, help="default: FEDMED_RESULTS, else results/")
    parser.add_argument("--checkpoint-dir", default=None, help="default: <results dir>/_checkpoints")
    parser.add_argument("--models", nargs="+", default=None, choices=list(MODELS),
                        help="only runs of these models (e.g. to give two workers different runs)")
    parser.add_argument("--widths", type=int, nargs="+", default=None, help="only runs at these widths")
    parser.add_argument("--limit", type=int, default=None, help="run at most this many runs, then stop")
    parser.add_argument("--quick", action="store_true", help="pipeline check at tiny scale (see above)")
    parser.add_argument("--list", action="store_true", help="only list the runs, whether each is done, and cost")
    args = parser.parse_args(argv)
    if args.quick and args.results_dir is None and not os.environ.get("FEDMED_RESULTS"):
        parser.error("--quick writes throw-away results: pass --results-dir (or set FEDMED_RESULTS)")
    directory = results_dir(args.results_dir)
    checkpoints = args.checkpoint_dir or directory / "_checkpoints"
    ran, hours_left = 0, 0.0
    for stage in STAGES if args.stage == "all" else (args.stage,):
        for recipe, seed, subsets in todo(stage, directory, args.quick, args.models, args.widths):
            config = ceiling_search.key(recipe, seed, **subsets)
            path = result_path("ceiling", config, directory)
            name = (f"{stage:6s} {recipe.name:15s} {recipe.model:8s} w{recipe.width:<2d} {recipe.epochs:2d} epochs "
                    f"seed {seed}")
            if args.list:
                minutes = ceiling_search.estimated_minutes(recipe)
                hours_left += 0 if path.is_file() else minutes / 60
                print(f"{'done' if path.is_file() else 'todo'}  {name}  ~{minutes:5.0f} min  {path.name}")
                continue
            if args.limit is not None and ran >= args.limit:
                return
            with claim(path.stem, checkpoints) as mine:
                if not mine or path.is_file():  # another worker has it, or finished it since
                    continue
                t0 = time.time()
                r = ceiling_search.ceiling(recipe, seed, directory=directory, device=args.device, progress=False,
                                           checkpoint=checkpoints / f"{path.stem}.pt", **subsets)
            ran += 1
            print(f"{name}: val {r['val_accuracy_best']:.4f} test@best-val {r['test_accuracy_at_best_val']:.4f} "
                  f"(epoch {r['best_epoch']}), {r['train_images_per_second']:.0f} img/s, {time.time() - t0:.0f} s "
                  f"-> {path.name}", flush=True)
    if args.list:
        print(f"todo: ~{hours_left:.1f} h of one worker at the measured CPU throughputs (later stages follow what "
              "the search has chosen so far, so their list can change)")


if __name__ == "__main__":
    main()
