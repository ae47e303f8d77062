"""Throughput and peak memory of plain vs DP-SGD training of DPResNet: Opacus' grad-sample modes and fedmedlib's fast path.

Each (width, mode) cell runs in a fresh process: a warm-up step, then timed Adam steps on a fixed random batch
(DP: per-sample clipping to C = 7, noise multiplier 1), timed by wall clock and by this process's CPU time
(images per CPU-second: steadier than wall time when other jobs share the cores). Peak memory = the process's peak RSS (ru_maxrss) minus
its RSS just before the first step. A plain cell is re-measured before every DP cell and the ratio uses that
neighbour, so a machine shared with other jobs distorts ratios less than absolute numbers. Usage:
    python benchmarks/dp_overhead.py [--widths 16 32 64] [--batch 64] [--out results/benchmarks/dp_overhead.json]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

MODES = ("fast", "opacus-hooks", "opacus-ew", "opacus-functorch", "opacus-ghost")
STEPS = {16: 12, 32: 6, 64: 3}  # about the same images/s budget per cell


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def run_cell(width: int, mode: str, batch: int, steps: int) -> dict:
    import torch
    from torch import nn

    from fedmedlib.privacy import fastdp
    from fedmedlib.models import build_model

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    net = build_model("dpresnet", width=width)
    x, y = torch.randn(batch * (steps + 1), 3, 28, 28), torch.randint(0, 8, (batch * (steps + 1),))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    if mode == "plain":
        batches = [(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]) for i in range(steps + 1)]

        def step(xb, yb):
            optimizer.zero_grad(set_to_none=True)
            criterion(net(xb), yb).backward()
            optimizer.step()
    elif mode == "fast":
        batches = [(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]) for i in range(steps + 1)]
        tape, gen = fastdp.LayerTape(net), torch.Generator().manual_seed(0)

        def step(xb, yb):
            optimizer.zero_grad(set_to_none=True)
            sums, _, _ = fastdp.clipped_gradient_sum(net, tape, xb, yb, 7.0)
            fastdp.noisy_gradient(net, sums, noise_std=7.0, expected_batch_size=len(xb), generator=gen)
            optimizer.step()
    else:
        from opacus import PrivacyEngine

        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)
        made = PrivacyEngine().make_private(module=net, optimizer=optimizer, data_loader=loader, noise_multiplier=1.0,
                                            max_grad_norm=7.0, poisson_sampling=False, criterion=criterion,
                                            grad_sample_mode=mode.split("-")[1])
        model, dp_opt, loss_fn = made[0], made[1], made[2] if mode == "opacus-ghost" else criterion
        batches = list(made[-1])

        def step(xb, yb):
            dp_opt.zero_grad(set_to_none=True)
            loss_fn(model(xb), yb).backward()
            dp_opt.step()
    before = _rss_mb()
    step(*batches[0])  # warm-up: allocator, hooks, lazy kernels
    t0, cpu0 = time.perf_counter(), time.process_time()
    for xb, yb in batches[1:]:
        step(xb, yb)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(width=width, mode=mode, batch=batch, steps=steps, images_per_s=batch * steps / seconds,
                images_per_cpu_s=batch * steps / cpu_seconds,
                peak_rss_delta_mb=peak - before, n_parameters=sum(p.numel() for p in net.parameters()))


def _spawn(width, mode, batch, steps) -> dict:
    out = subprocess.run([sys.executable, __file__, "--cell", str(width), mode, str(batch), str(steps)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--modes", nargs="+", default=list(MODES))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per cell (default: by width)")
    parser.add_argument("--out", default="results/benchmarks/dp_overhead.json")
    parser.add_argument("--cell", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        print(json.dumps(run_cell(int(args.cell[0]), args.cell[1], int(args.cell[2]), int(args.cell[3]))))
        return
    rows, load_before = [], os.getloadavg()
    print(f"{'width':>5} {'mode':<17} {'img/s':>8} {'plain img/s':>11} {'DP/plain':>8} {'peak MB':>8} {'plain MB':>8}")
    for width in args.widths:
        for mode in args.modes:
            steps = args.steps or STEPS.get(width, 3)
            plain, dp = _spawn(width, "plain", args.batch, steps), _spawn(width, mode, args.batch, steps)
            dp.update(plain_images_per_s=plain["images_per_s"], plain_peak_rss_delta_mb=plain["peak_rss_delta_mb"],
                      ratio=dp["images_per_s"] / plain["images_per_s"],
                      cpu_ratio=dp["images_per_cpu_s"] / plain["images_per_cpu_s"],
                      memory_ratio=dp["peak_rss_delta_mb"] / max(plain["peak_rss_delta_mb"], 1.0))
            rows.append(dp)
            print(f"{width:>5} {mode:<17} {dp['images_per_s']:8.1f} {plain['images_per_s']:11.1f} {dp['ratio']:8.3f} "
                  f"{dp['peak_rss_delta_mb']:8.0f} {plain['peak_rss_delta_mb']:8.0f}", flush=True)
            _write(args, rows, load_before)  # after every cell: an interrupted run keeps what it measured


def _write(args, rows, load_before) -> None:
    from fedmedlib.experiments.provenance import provenance

    result = dict(benchmark="dp_overhead", batch=args.batch, clip=7.0, noise_multiplier=1.0, rows=rows,
                  memory_measure="peak RSS (ru_maxrss) minus RSS before the first step, one fresh process per cell",
                  load_average_before=load_before, load_average_after=os.getloadavg(),
                  command=" ".join(["python", "benchmarks/dp_overhead.py", *sys.argv[1:]]), provenance=provenance("cpu"))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
