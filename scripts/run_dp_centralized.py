"""Run centralized DP-SGD (record-level, ε = 6, δ = 1.9e-4, C = 7) under a profile; one cached JSON per seed.

Resumable: a run whose result file exists is skipped.  Usage:
    python scripts/run_dp_centralized.py --profile cpu [--seeds 0] [--batch-size 128] [--device cuda]
"""

import argparse
import time

from fedmedlib.config import get_profile
from fedmedlib.experiments.runs import DP_BATCH_SIZE, dp_centralized, dp_centralized_config
from fedmedlib.experiments.results import result_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--batch-size", type=int, default=DP_BATCH_SIZE)
    parser.add_argument("--epsilon", type=float, default=6.0)
    args = parser.parse_args()
    profile = get_profile(args.profile)
    for seed in args.seeds if args.seeds is not None else profile.seeds:
        dp = dict(batch_size=args.batch_size, epsilon=args.epsilon)
        path = result_path("dp_centralized", dp_centralized_config(profile, seed, **dp))
        t0 = time.time()
        r = dp_centralized(profile, seed, device=args.device, progress=False, **dp)
        print(f"DP-SGD seed {seed}: ε spent {r['epsilon_spent']:.3f} (σ {r['noise_multiplier']:.3f}, C {r['clip']}, "
              f"q {r['sample_rate']:.4f}, {r['steps']} steps); test@best-val {r['test_accuracy_at_best_val']:.4f} "
              f"(epoch {r['best_epoch']}), last {r['test_accuracy_last']:.4f}, {time.time() - t0:.0f} s -> {path}",
              flush=True)


if __name__ == "__main__":
    main()
