"""Run the privacy-attack experiments of chapter 8 under a profile; one cached JSON per finished run.

Resumable: runs whose result file exists are skipped.  Usage:
    python scripts/run_attacks.py --profile cpu [--parts membership inversion] [--threads 1]
"""

import argparse
import time

import torch

from fedmedlib.attacks import experiments as ex
from fedmedlib.config import get_profile
from fedmedlib.experiments.results import result_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", choices=["cpu"])
    parser.add_argument("--parts", nargs="+", default=["inversion", "membership"], choices=["membership", "inversion"])
    parser.add_argument("--seed", type=int, default=0)
    # One thread: on a shared 2-core machine two threads spend their time waiting for each other.
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    profile = get_profile(args.profile)
    started = time.time()
    if "inversion" in args.parts:
        for batch_size in sorted(ex.INVERSION[profile.name]["plan"]):
            t0 = time.time()
            r = ex.inversion_demo(profile, batch_size, args.seed)
            summary = ", ".join(f"{d} PSNR {min(m['psnr'] for m in v['matches']):.1f}-"
                                f"{max(m['psnr'] for m in v['matches']):.1f} dB" for d, v in r["defences"].items())
            print(f"inversion batch {batch_size}: {summary}; {time.time() - t0:.0f} s -> "
                  f"{result_path('attack_inversion', ex.inversion_config(profile.name, batch_size, args.seed)).name}",
                  flush=True)
    if "membership" in args.parts:
        for defence in ex.DEFENCE_PLAN[profile.name]:
            t0 = time.time()
            r = ex.membership_audit(profile, defence, args.seed, progress=True)
            lira = r["attacks"]["lira_offline"]
            print(f"membership {defence.label}: test acc {r['test_accuracy']:.3f}, LiRA AUC {lira['auc']:.3f}, "
                  f"TPR@1%FPR {lira['tpr_at_1pct_fpr']:.3f}, ε_lb {lira['audit']['epsilon_lb']:.2f} vs accounted "
                  f"{r['accounted_epsilon']:.3g}; {time.time() - t0:.0f} s -> "
                  f"{result_path('attack_membership', ex.membership_config(profile.name, defence, args.seed)).name}",
                  flush=True)
    print(f"all done in {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
