"""Run the 'as it should be done' column's short search (fedmedlib.experiments.distributed_search), resumable.

Usage:
    python scripts/search_distributed.py [--profile cpu] [--variants centre lr1 rounds400] [--list]

Each finished variant is written to results/ (federated-<hash>.json); several workers may run at once.
"""

import argparse
import time

from fedmedlib.experiments import distributed_search
from fedmedlib.config import get_profile
from fedmedlib.experiments.runs import federated
from fedmedlib.experiments.results import claim, result_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--variants", nargs="+", default=list(distributed_search.VARIANTS),
                        choices=list(distributed_search.VARIANTS))
    parser.add_argument("--checkpoint-dir", default="results/_checkpoints")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    profile = get_profile(args.profile)
    for name in args.variants:
        exp = distributed_search.variant_experiment(profile, name)
        path = result_path("federated", dict(exp.to_dict(), profile=profile.name))
        if args.list:
            print(f"{'done' if path.is_file() else 'todo'}  {name:10s} {path.name}")
            continue
        with claim(path.stem, args.checkpoint_dir) as mine:
            if not mine or path.is_file():
                continue
            t0 = time.time()
            r = federated(exp, profile=profile.name, device=args.device, progress=False,
                          checkpoint_dir=args.checkpoint_dir)
        print(f"{name}: val {r['val_accuracy_best']:.4f} test@best-val {r['test_accuracy_at_best_val']:.4f} "
              f"(round {r['best_round']}), {time.time() - t0:.0f} s -> {path.name}", flush=True)
    if not args.list:
        print("winner on validation:", distributed_search.winner(profile))


if __name__ == "__main__":
    main()
