"""Run the missing cells of a profile's reproduction grid, one JSON per finished cell (resumable).

Usage:
    python scripts/run_grid.py --profile cpu [--device cuda] [--parts table sweep rq3 paper-rounds] [--hospitals 10 20]
                               [--schemes paper dirichlet] [--columns dp-sa- as_claimed] [--seeds 0 1 2]
                               [--engine auto|sequential|parallel] [--list]

Cells already in results/ are skipped; an interrupted cell resumes from results/_checkpoints. Several workers
may run the same command at once (e.g. two one-thread workers on a 2-core machine): each claims a cell in the
checkpoint folder before running it, and skips cells another live worker has claimed.
"""

import argparse
import time

from fedmedlib.experiments import grid
from fedmedlib.config import get_profile
from fedmedlib.models import MODELS
from fedmedlib.experiments.runs import federated
from fedmedlib.experiments.results import claim, result_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--engine", default="auto", choices=["auto", "sequential", "parallel"],
                        help="hospitals one after another or all at once (fedmedlib.fl.parallel); "
                             "auto: parallel on a GPU")
    parser.add_argument("--parts", nargs="+", default=["table"], choices=list(grid.PARTS))
    parser.add_argument("--hospitals", type=int, nargs="+", default=None)
    parser.add_argument("--schemes", nargs="+", default=list(grid.SPLITS), choices=list(grid.SPLITS))
    parser.add_argument("--columns", nargs="+", default=None, choices=list(grid.COLUMN))
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--models", nargs="+", default=None, choices=list(MODELS),
                        help="only cells of these models (e.g. a second worker on the cheaper ResNet-9 cells)")
    parser.add_argument("--checkpoint-dir", default="results/_checkpoints")
    parser.add_argument("--list", action="store_true", help="only list the cells and whether each is done")
    args = parser.parse_args()
    profile = get_profile(args.profile)
    todo = list(grid.cells(profile, parts=args.parts, hospitals=args.hospitals, schemes=args.schemes,
                           seeds=args.seeds, columns=args.columns, models=args.models))
    for part, exp in todo:
        path = result_path("federated", dict(exp.to_dict(), profile=profile.name))
        name = (f"{part:5s} {exp.n_clients:2d} hospitals {exp.rounds}x{exp.local_epochs} {exp.scheme:9s} {exp.model:8s} dp {exp.dp:12s}"
                f"{' drop_noise' if exp.drop_noise else ''} eps {exp.epsilon:g} {exp.aggregator:6s} seed {exp.seed}")
        if args.list:
            print(f"{'done' if path.is_file() else 'todo'}  {name}  {path.name}")
            continue
        with claim(path.stem, args.checkpoint_dir) as mine:
            if not mine or path.is_file():  # another worker has it, or finished it since we listed the cells
                continue
            t0 = time.time()
            r = federated(exp, profile=profile.name, device=args.device, progress=False,
                          checkpoint_dir=args.checkpoint_dir, engine=args.engine)
        print(f"{name}: test@best-val {r['test_accuracy_at_best_val']:.4f} (round {r['best_round']}), "
              f"{r['seconds_per_round']:.1f} s/round, {time.time() - t0:.0f} s -> {path.name}", flush=True)


if __name__ == "__main__":
    main()
