"""Run the centralized baselines of a profile (DPResNet and ResNet-9, every seed), one JSON per finished run.

Resumable: a run whose result file exists is skipped.  Usage:
    python scripts/run_baselines.py --profile cpu [--device cuda]
"""

import argparse
import time

from fedmedlib.config import get_profile
from fedmedlib.models import MODELS
from fedmedlib.experiments.results import result_path
from fedmedlib.experiments.runs import centralized_baseline, centralized_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    profile = get_profile(args.profile)
    for seed in profile.seeds:
        for model in args.models:
            path = result_path("centralized", centralized_config(profile, model, seed))
            t0 = time.time()
            r = centralized_baseline(profile, model, seed, device=args.device, progress=False)
            print(f"{model:9s} seed {seed}: test@best-val {r['test_accuracy_at_best_val']:.4f} "
                  f"(epoch {r['best_epoch']}), last {r['test_accuracy_last']:.4f}, {time.time() - t0:.0f} s -> {path}",
                  flush=True)


if __name__ == "__main__":
    main()
