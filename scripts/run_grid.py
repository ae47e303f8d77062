"""Run the missing cells of a profile's federated grid, one JSON per finished cell (resumable).

Usage:
    python scripts/run_grid.py --profile cpu [--device cuda] [--hospitals 10] [--schemes paper dirichlet]
                               [--dp none dpsgd update_ldp client_level] [--secagg]
"""

import argparse
import time

from fedmedlib.config import get_profile
from fedmedlib.fl import Experiment, federated
from fedmedlib.results import result_path


def cells(profile, hospitals, schemes, seeds, dps=("none",), secagg=False):
    for seed in seeds:
        for n in hospitals:
            for scheme in schemes:
                for dp in dps:
                    yield Experiment.from_profile(profile, n_clients=n, scheme=scheme, seed=seed, dp=dp,
                                                  aggregator="secagg" if secagg else "plain")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--hospitals", type=int, nargs="+", default=None)
    parser.add_argument("--schemes", nargs="+", default=["paper", "dirichlet"])
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--dp", nargs="+", default=["none"], choices=["none", "dpsgd", "update_ldp", "client_level"])
    parser.add_argument("--secagg", action="store_true", help="aggregate with fedmedlib.secagg's SecAgg+")
    parser.add_argument("--checkpoint-dir", default="results/_checkpoints")
    args = parser.parse_args()
    profile = get_profile(args.profile)
    for exp in cells(profile, args.hospitals or profile.hospitals, args.schemes, args.seeds or profile.seeds,
                     args.dp, args.secagg):
        t0 = time.time()
        r = federated(exp, profile=profile.name, device=args.device, progress=False,
                      checkpoint_dir=args.checkpoint_dir)
        path = result_path("federated", dict(exp.to_dict(), profile=profile.name))
        print(f"{exp.n_clients:2d} hospitals {exp.scheme:10s} dp {exp.dp:12s} {exp.aggregator:6s} seed {exp.seed}: "
              f"test@best-val "
              f"{r['test_accuracy_at_best_val']:.4f} (round {r['best_round']}), "
              f"{r['seconds_per_round']:.1f} s/round, {time.time() - t0:.0f} s -> {path.name}", flush=True)


if __name__ == "__main__":
    main()
