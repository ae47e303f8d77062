"""What one epoch of a ceiling run costs, per model and width, measured side by side in one run.

The ceiling runs (scripts/run_ceilings.py) ran in different sessions, on a machine whose speed varies up to 4x
between days, so the ratio of their wall times mixes width and model with the day. This benchmark times the
same work for every (model, width) in one run: the ceiling recipe's own training step (`train_one_epoch`: SGD
with Nesterov momentum, augmentation, label smoothing, batch 128) and its evaluation forward passes, each cell
in a fresh one-thread process (as the runs used), the cells interleaved over `--repeats` rounds so that a
change of machine load touches every cell alike. Rates are images per CPU-second of that process (steadier than
wall time when other jobs share the cores; wall-clock rates are recorded too), medians over the repeats. One
epoch of a full run = N_TRAIN training images + N_EVAL evaluated ones (validation and test). Usage:
    python benchmarks/ceiling_cost.py [--repeats 3] [--out results/benchmarks/ceiling_cost.json]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODELS = ("resnet9", "dpresnet")
WIDTHS = (16, 32, 64)
BUDGET_S = 3.0  # about this much training per measurement, from the forecast throughputs


def run_cell(model: str, width: int, train_images: int, eval_images: int) -> dict:
    import torch

    from fedmedlib.ceiling import make_optimizer, train_one_epoch
    from fedmedlib.experiments.ceiling_search import START
    from fedmedlib.models import build_model
    from fedmedlib.train import evaluate

    torch.set_num_threads(1)
    torch.manual_seed(0)
    recipe = START.replace(model=model, width=width)
    net = build_model(model, width=width)
    optimizer = make_optimizer(recipe, net.parameters())
    generator = torch.Generator().manual_seed(0)
    x, y = torch.rand(train_images, 3, 28, 28), torch.randint(0, 8, (train_images,))
    x_eval, y_eval = torch.rand(eval_images, 3, 28, 28), torch.randint(0, 8, (eval_images,))
    train_one_epoch(net, optimizer, None, x[:2 * recipe.batch_size], y[:2 * recipe.batch_size], recipe,
                    generator)  # warm-up: allocator, lazy kernels
    evaluate(net, x_eval[:256], y_eval[:256])
    out = dict(model=model, width=width, batch=recipe.batch_size, train_images=train_images,
               eval_images=eval_images, n_parameters=sum(p.numel() for p in net.parameters()))
    for part, work, n in (("train", lambda: train_one_epoch(net, optimizer, None, x, y, recipe, generator),
                           train_images),
                          ("eval", lambda: evaluate(net, x_eval, y_eval), eval_images)):
        t0, cpu0 = time.perf_counter(), time.process_time()
        work()
        out[f"{part}_images_per_s"] = n / (time.perf_counter() - t0)
        out[f"{part}_images_per_cpu_s"] = n / (time.process_time() - cpu0)
    return out


def _spawn(model, width, train_images, eval_images) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, __file__, "--cell", model, str(width), str(train_images),
                          str(eval_images)], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarise(rows: list[dict], n_train: int, n_eval: int) -> dict:
    """Per (model, width): median rates over the repeats, CPU-seconds of one full epoch, and that epoch's cost
    against the same model at width 16 and against ResNet-9 at the same width."""
    cells = {}
    for model in MODELS:
        for width in WIDTHS:
            mine = [r for r in rows if (r["model"], r["width"]) == (model, width)]
            if not mine:
                continue
            med = {k: statistics.median(r[k] for r in mine) for k in
                   ("train_images_per_cpu_s", "eval_images_per_cpu_s", "train_images_per_s", "eval_images_per_s")}
            epoch = n_train / med["train_images_per_cpu_s"] + n_eval / med["eval_images_per_cpu_s"]
            cells[f"{model} w{width}"] = dict(model=model, width=width, repeats=len(mine), **med,
                                              epoch_cpu_s=epoch)
    for cell in cells.values():
        base = cells.get(f"{cell['model']} w16")
        ref = cells.get(f"resnet9 w{cell['width']}")
        cell["vs_width_16"] = cell["epoch_cpu_s"] / base["epoch_cpu_s"] if base else None
        cell["vs_resnet9"] = cell["epoch_cpu_s"] / ref["epoch_cpu_s"] if ref else None
    return cells


def main(argv=None) -> dict:
    from fedmedlib.experiments.ceiling_search import N_EVAL, N_TRAIN, TRAIN_IMAGES_PER_S

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS), choices=WIDTHS)
    parser.add_argument("--budget-s", type=float, default=BUDGET_S,
                        help="seconds of training per measurement, at the forecast throughputs")
    parser.add_argument("--out", default="results/benchmarks/ceiling_cost.json")
    parser.add_argument("--cell", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cell:
        print(json.dumps(run_cell(args.cell[0], int(args.cell[1]), int(args.cell[2]), int(args.cell[3]))))
        return {}
    if args.repeats < 1 or args.budget_s <= 0:
        parser.error(f"need --repeats >= 1 and --budget-s > 0, got {args.repeats} and {args.budget_s}")
    rows, load_before, t0 = [], os.getloadavg(), time.perf_counter()
    print(f"{'repeat':>6} {'model':<9} {'width':>5} {'train img/cpu-s':>15} {'eval img/cpu-s':>14}")
    for repeat in range(args.repeats):
        for model in args.models:
            for width in args.widths:
                batches = max(2, round(args.budget_s * TRAIN_IMAGES_PER_S[model][width] / 128))
                row = dict(_spawn(model, width, 128 * batches, 3 * 128 * batches), repeat=repeat)
                rows.append(row)
                print(f"{repeat:>6} {model:<9} {width:>5} {row['train_images_per_cpu_s']:15.1f} "
                      f"{row['eval_images_per_cpu_s']:14.1f}", flush=True)
                _write(args, rows, load_before, time.perf_counter() - t0, N_TRAIN, N_EVAL)
    return _write(args, rows, load_before, time.perf_counter() - t0, N_TRAIN, N_EVAL)


def _write(args, rows, load_before, seconds, n_train, n_eval) -> dict:
    """After every cell: an interrupted run keeps what it measured."""
    from fedmedlib.experiments.provenance import provenance

    result = dict(benchmark="ceiling_cost", n_train=n_train, n_eval=n_eval, threads=1,
                  rate_measure="images per CPU-second of a fresh one-thread process; medians over repeats",
                  cells=summarise(rows, n_train, n_eval), rows=rows, wall_time_s=seconds,
                  load_average_before=load_before, load_average_after=os.getloadavg(),
                  command=" ".join(["python", "benchmarks/ceiling_cost.py", *sys.argv[1:]]),
                  provenance=provenance("cpu"))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
