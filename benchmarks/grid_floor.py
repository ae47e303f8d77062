"""The compute floor under a profile's reproduction grid: can any engine run it within a time limit here?

The grid's experiments fix what must be computed: per cell, rounds × (local epochs × every hospital's
training images through a training step at batch size B, then the validation and test images through a
forward pass). This script times those steps alone, on tensors already in memory, one thread per process
(the grid runs one cell per core): plain training (forward, backward, Adam), DP-SGD training (fastdp's
clipped sum, the noise, Adam) and evaluation, per model the grid trains, in fp32 and bf16. The grid's pure
compute time on all cores is then

  floor = Σ_cells rounds · (trained / training rate + evaluated / evaluation rate) / cores

with the cells shared perfectly between the cores. An engine adds data movement, aggregation, SecAgg+ and
accounting on top; it cannot go below this floor without changing what is computed (bf16 changes the
numbers, so its floor is reported beside fp32's, not in its place). FLOPs are counted too (FlopCounterMode,
matmuls and convolutions at their direct-algorithm count) to give the rates in GFLOP/s; a rate above the
core's direct-convolution peak means the library used a cheaper algorithm (e.g. Winograd), not an error.

    python benchmarks/grid_floor.py --profile cpu --out results/benchmarks/grid_floor_cpu.json
    python benchmarks/grid_floor.py --smoke      # CI size: one quick-profile cell, a few steps per rate
"""

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fedmedlib.privacy import fastdp
from fedmedlib import fl
from fedmedlib.experiments import grid
from fedmedlib.config import get_profile
from fedmedlib.data import load_bloodmnist
from fedmedlib.models import build_model
from fedmedlib.experiments.provenance import provenance


def _flops(function) -> int:
    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def per_image_flops(model_name: str, width: int, dp: bool, batch: int = 32) -> dict:
    """FLOPs per image of one training step (forward + backward, or fastdp's clipped sum) and of evaluation."""
    torch.manual_seed(0)
    net = build_model(model_name, width=width)
    x, y = torch.randn(batch, 3, 28, 28), torch.randint(0, 8, (batch,))
    if dp:
        tape = fastdp.LayerTape(net)
        # Counted on the 'materialise' strategy: FlopCounterMode's formula for a grouped convolution's weight
        # gradient ignores the groups, so it counts the 'grouped' strategy (groups = batch) B times too high
        # (checked: one grouped conv2d_weight with B = 8 counts exactly 8× its 2·B·Cout·Cin·9·H·W).
        train = _flops(lambda: fastdp.clipped_gradient_sum(net, tape, x, y, 1.0, strategy="materialise"))
        tape.close()
    else:
        train = _flops(lambda: nn.functional.cross_entropy(net(x), y).backward())
    with torch.no_grad():
        net.eval()
        forward = _flops(lambda: net(x))
    return dict(train=train / batch, evaluate=forward / batch)


def rates(model_name: str, width: int, dp: bool, precision: str, batch: int, steps: int) -> dict:
    """Images/s of training steps and of evaluation forwards (batch 256) on resident tensors, this thread."""
    from fedmedlib.train import autocast

    torch.manual_seed(0)
    net = build_model(model_name, width=width)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = torch.randn(batch, 3, 28, 28), torch.randint(0, 8, (batch,))
    cpu = torch.device("cpu")
    tape = fastdp.LayerTape(net) if dp else None
    noise = torch.Generator().manual_seed(0)

    def train_step():
        opt.zero_grad(set_to_none=True)
        if dp:
            sums, _, _ = fastdp.clipped_gradient_sum(net, tape, x, y, 1.0, precision=precision)
            fastdp.noisy_gradient(net, sums, noise_std=1.0, expected_batch_size=batch, generator=noise)
        else:
            with autocast(cpu, precision):
                loss = nn.functional.cross_entropy(net(x), y)
            loss.backward()
        opt.step()

    x_eval = torch.randn(256, 3, 28, 28)

    def eval_step():
        with torch.no_grad(), autocast(cpu, precision):
            net(x_eval)

    out = {}
    for name, step, n in (("train", train_step, batch), ("evaluate", eval_step, 256)):
        net.train(name == "train")
        for _ in range(2):  # warm-up: kernel choice, allocator
            step()
        t = time.perf_counter()
        for _ in range(steps):
            step()
        out[name] = steps * n / (time.perf_counter() - t)
    if tape:
        tape.close()
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--parts", nargs="+", default=["table", "sweep", "rq3"])
    parser.add_argument("--limit-hours", type=float, default=1.0, help="the time goal the floor is compared with")
    parser.add_argument("--cores", type=int, default=None, help="cores the grid shares (default: all)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--results", default=None, help="results folder to compare with (default: FEDMED_RESULTS)")
    parser.add_argument("--root", default=None, help="folder holding bloodmnist.npz (default: FEDMED_DATA)")
    parser.add_argument("--smoke", action="store_true", help="CI size: one quick-profile cell, a few steps per rate")
    args = parser.parse_args(argv)
    if args.cores is not None and args.cores < 1:
        parser.error(f"--cores must be >= 1, got {args.cores}")
    started = time.perf_counter()
    profile = get_profile("quick" if args.smoke else args.profile)
    cells = list(grid.cells(profile, parts=("table",) if args.smoke else tuple(args.parts)))[:1 if args.smoke else None]
    labels = {s: load_bloodmnist(s, args.root)[1] for s in ("train", "test")}

    counts = [fl.images_per_round(exp, labels) for _, exp in cells]
    flops_cache, total, by_kind, images = {}, 0.0, Counter(), Counter()
    for (part, exp), n in zip(cells, counts):
        kind = (exp.model, exp.width, exp.dp == "dpsgd")
        if kind not in flops_cache:
            flops_cache[kind] = per_image_flops(*kind, batch=exp.batch_size)
        f = flops_cache[kind]
        cell = exp.rounds * (n["trained"] * f["train"] + n["evaluated"] * f["evaluate"])
        total += cell
        by_kind["dpsgd" if kind[2] else "plain training"] += cell
        images.update(trained=exp.rounds * n["trained"], evaluated=exp.rounds * n["evaluated"])

    torch.set_num_threads(1)  # the grid runs one single-threaded cell per core
    cores = args.cores or os.cpu_count() or 1
    steps = 2 if args.smoke else 40
    measured, floors, training_only = {}, {}, {}
    for precision in ("fp32", "bf16"):
        seconds = train_seconds = 0.0
        for (part, exp), n in zip(cells, counts):
            kind = (exp.model, exp.width, exp.dp == "dpsgd")
            key = f"{kind[0]} w{kind[1]} {'dpsgd' if kind[2] else 'plain'} {precision} batch {exp.batch_size}"
            if key not in measured:
                measured[key] = rates(*kind, precision, exp.batch_size, steps)
                f = flops_cache[kind]
                measured[key].update(train_gflops=measured[key]["train"] * f["train"] / 1e9,
                                     evaluate_gflops=measured[key]["evaluate"] * f["evaluate"] / 1e9)
            r = measured[key]
            train_seconds += exp.rounds * n["trained"] / r["train"]
            seconds += exp.rounds * (n["trained"] / r["train"] + n["evaluated"] / r["evaluate"])
        floors[precision], training_only[precision] = seconds / cores / 3600, train_seconds / cores / 3600
    # What the committed results of these cells took (each ran as a one-thread process, two at a time).
    ran = [r["wall_time_s"] for _, exp in cells if (r := grid.load_cell(exp, profile.name, args.results))]
    result = dict(
        kind="grid_floor", profile=profile.name, parts=args.parts, smoke=args.smoke, cells=len(cells),
        cores=cores, threads_per_process=1, total_flops=total, flops_by_kind=dict(by_kind), images=dict(images),
        per_image_flops={f"{m} w{w} {'dpsgd' if dp else 'plain'}": v for (m, w, dp), v in flops_cache.items()},
        rates_images_per_s_one_thread=measured, floor_hours=floors, floor_hours_training_only=training_only,
        committed=dict(cells=len(ran), hours_on_all_cores=sum(ran) / cores / 3600) if ran else None,
        limit_hours=args.limit_hours,
        limit_reachable={k: h <= args.limit_hours for k, h in floors.items()},
        duration_s=time.perf_counter() - started, provenance=provenance(torch.device("cpu")),
    )
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
