"""Benchmark: per-round wall time of our SecAgg+ vs Flower's SecAgg+ vs plain aggregation, and bytes per client.

Run:  python benchmarks/secagg.py --out results/benchmarks/secagg.json
      python benchmarks/secagg.py --clients 5 --lengths 10000 --skip-flower   # quick smoke run

Every time is float updates in -> float weighted mean out, all clients simulated on this machine.
Flower's rounds are timed from configure_fit to aggregate_fit, after a first round that absorbs
Ray's start-up. References: Bonawitz et al. CCS 2017; Bell et al. CCS 2020.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from importlib.metadata import version

import numpy as np

from fedmedlib.secagg import SecAggAggregator, secure_mean
from fedmedlib.secagg.flower_reference import flower_round_times, synthetic_update
from fedmedlib.secagg.keys import KEY_BYTES, NONCE_BYTES
from fedmedlib.secagg.shamir import Share

THRESHOLD = 4  # the paper's reconstruction threshold
NEIGHBOURS = 4  # = Flower's num_shares=5 (4 neighbours + itself), the paper's setting
SHARE = len(Share(1, 0).to_bytes())
GCM_TAG = 16


def timings(function, repeats: int) -> list[float]:
    function()  # warm-up: first-touch memory, imports
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def cpu_seconds(function, repeats: int) -> float:
    """Median CPU time of this process: what a round costs when other jobs share the cores."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        function()
        times.append(time.process_time() - start)
    return statistics.median(times)


def predicted_bytes(k: int, d: int) -> dict:
    """Bell et al.'s O(k + d) per client, with this implementation's constants (ids: 4 bytes)."""
    ciphertext = 4 + NONCE_BYTES + 2 * SHARE + GCM_TAG
    return {
        "setup": {"sent": 0, "received": 4 * k + 12},
        "advertise_keys": {"sent": 2 * KEY_BYTES, "received": k * (4 + 2 * KEY_BYTES)},
        "share_keys": {"sent": k * ciphertext, "received": k * ciphertext},
        "masked_input": {"sent": 4 * (d + 1), "received": 0},
        "unmask": {"sent": (k + 1) * (4 + SHARE), "received": 4 * (k + 1)},
    }


def run_case(n: int, d: int, args) -> dict:
    updates = [synthetic_update(u, d) for u in range(n)]
    weights = np.random.default_rng(n).integers(100, 1000, n).tolist()  # num_examples <= max_weight
    result = {"clients": n, "length": d, "load_average_before": os.getloadavg()}
    w = np.asarray(weights, np.float32)
    ours = {  # label -> one aggregation round; each aggregator keeps its buffers between rounds
        "ours_s": SecAggAggregator(threshold=THRESHOLD, num_neighbours=NEIGHBOURS, workers=1, seed=0),
        "ours_2_threads_s": SecAggAggregator(threshold=THRESHOLD, num_neighbours=NEIGHBOURS, workers=2, seed=0),
        "ours_default_k_s": SecAggAggregator(threshold=THRESHOLD, workers=1, seed=0),
        "ours_classic_secagg_s": SecAggAggregator(threshold=THRESHOLD, num_neighbours=n - 1, workers=1, seed=0),
    }
    runs = {label: (lambda a=aggregator: a.aggregate(updates, weights)) for label, aggregator in ours.items()}
    runs["plain_numpy_s"] = lambda: np.tensordot(w / w.sum(), np.stack(updates), 1)
    # Half the repetitions before Flower runs and half after, so slow drifts in machine load
    # hit both sides alike; each entry is the median of all of them.
    samples = {label: timings(run, args.repeats) for label, run in runs.items()}

    mean, info = secure_mean(updates, weights, threshold=THRESHOLD, num_neighbours=NEIGHBOURS, seed=0,
                             return_view=True)
    result["bytes_per_client"] = info.view.bytes_per_client()
    result["bytes_predicted"] = predicted_bytes(NEIGHBOURS, d)
    exact = sum(wi * u.astype(np.float64) for wi, u in zip(weights, updates)) / sum(weights)
    result["ours_max_error"] = float(np.abs(mean - exact).max())
    result["ours_error_bound"] = info.error_bound
    del mean, exact

    if not args.skip_flower:
        flower_mean, times = flower_round_times(n, d, weights, rounds=args.flower_rounds, num_shares=NEIGHBOURS + 1,
                                                reconstruction_threshold=THRESHOLD, max_weight=1000.0)
        result["flower_secagg_s"] = statistics.median(times[1:])
        result["flower_secagg_rounds_s"] = times
        exact = sum(wi * synthetic_update(u, d).astype(np.float64) for u, wi in enumerate(weights)) / sum(weights)
        result["flower_max_error"] = float(np.abs(flower_mean - exact).max())
        _, times = flower_round_times(n, d, weights, rounds=args.flower_rounds, secagg=False)
        result["flower_plain_s"] = statistics.median(times[1:])
        result["flower_plain_rounds_s"] = times
    for label, run in runs.items():
        samples[label] += timings(run, args.repeats)
        result[label] = statistics.median(samples[label])
        result[label[: -len("_s")] + "_samples"] = samples[label]
    result["ours_cpu_s"] = cpu_seconds(runs["ours_s"], args.repeats)
    if "flower_secagg_s" in result:
        result["speedup_vs_flower_secagg"] = result["flower_secagg_s"] / result["ours_s"]
        result["speedup_2_threads_vs_flower_secagg"] = result["flower_secagg_s"] / result["ours_2_threads_s"]
    result["load_average_after"] = os.getloadavg()
    return result


def provenance(args) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", None
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": commit,
        "git_uncommitted_changes": dirty,
        "device": {"cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform()},
        "versions": {"python": platform.python_version(),
                     **{p: version(p) for p in ("numpy", "cryptography", "flwr", "ray")}},
        "settings": {"threshold": THRESHOLD, "num_neighbours": NEIGHBOURS, "flower_num_shares": NEIGHBOURS + 1,
                     "clip_range": 8.0, "ours_quant_bits": 16, "ours_modulus_bits": 32,
                     "flower_quantization_range": 2**22, "flower_modulus_range": 2**32,
                     "repeats": 2 * args.repeats, "flower_rounds": args.flower_rounds},
    }


def print_table(results: list[dict]) -> None:
    header = (f"{'n':>3} {'d':>9} | {'ours':>6} {'ours 2thr':>9} {'classic':>7} {'Flower+':>7} "
              f"{'plain np':>8} {'Fl plain':>8} | {'Flower+/ours':>12} {'(2 thr)':>7} {'ours/plain np':>13}")
    print(header + "\n" + "-" * len(header))
    for r in results:
        flower = r.get("flower_secagg_s", float("nan"))
        print(f"{r['clients']:>3} {r['length']:>9,} | {r['ours_s']:6.3f} {r['ours_2_threads_s']:9.3f} "
              f"{r['ours_classic_secagg_s']:7.3f} {flower:7.3f} {r['plain_numpy_s']:8.3f} "
              f"{r.get('flower_plain_s', float('nan')):8.3f} | {flower / r['ours_s']:11.1f}x "
              f"{flower / r['ours_2_threads_s']:6.1f}x {r['ours_s'] / r['plain_numpy_s']:12.1f}x")
    print("median seconds per round, float updates in, weighted mean out. ours = our SecAgg+ (k=4, t=4, "
          "1 thread);\nclassic = ours with k=n-1; Flower+ = SecAggPlusWorkflow(num_shares=5, "
          "reconstruction_threshold=4);\nplain np = numpy weighted mean; Fl plain = a Flower round without "
          "SecAgg+ (its messaging floor).")
    r = results[-1]
    print(f"\nbytes per client at n={r['clients']}, d={r['length']:,} (measured / predicted O(k + d)):")
    for stage, sizes in r["bytes_per_client"].items():
        predicted = r["bytes_predicted"][stage]
        print(f"  {stage:<15} sent {sizes['sent']:>12,.0f} / {predicted['sent']:>12,}   "
              f"received {sizes['received']:>8,.0f} / {predicted['received']:>8,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1_000_000, 4_800_000])
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed repetitions of ours before and again after Flower's (median of all)")
    parser.add_argument("--flower-rounds", type=int, default=4, help="Flower rounds; the first is not timed")
    parser.add_argument("--skip-flower", action="store_true")
    parser.add_argument("--out", help="write the JSON here")
    args = parser.parse_args()
    report = provenance(args)
    report["results"] = []
    for d in args.lengths:
        for n in args.clients:
            report["results"].append(run_case(n, d, args))
            latest = report["results"][-1]
            print(json.dumps({k: round(v, 4) for k, v in latest.items() if isinstance(v, float)}), flush=True)
    print_table(report["results"])
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=1)


if __name__ == "__main__":
    main()
