"""Wall time of one FedAvg round: fedmedlib's engine vs the tutorial recipe (DataLoader + Opacus), and on Flower.

One round = every hospital's local epoch(s), the weighted mean, and the evaluation of the new global model on
the hospitals' validation splits and the test set. Rows, all on the same partition, weights and σ:
  engine          fedmedlib's engine, sequential, fp32 (the default: what the committed results ran)
  engine-bf16     the same with precision='bf16' (a hashed Experiment option: its results are its own)
  engine-parallel engine='parallel' (hospitals in one vmap-batched computation), fp32
  recipe          DataLoader + Opacus PrivacyEngine.make_private (hooks) per hospital, one after another
  flower-recipe   Flower's simulation (Ray, 1 CPU per client) whose ClientApp runs the recipe
  compute         pure compute: the same forward/backward/Adam steps and evaluation forwards on resident tensors
  compute-bf16    the same under bf16 autocast
Engine rows play round 1 untimed (lazy kernel set-up, the first ε), then time `--repeats` rounds with
`fl.play_round`, the function `run_federated` plays; the Flower row times round 2 of a 2-round simulation
(round 1 and Ray's start-up are reported separately). Noise multipliers are calibrated once before any timing.
In-process rows also record this process's CPU time, steadier than wall time on a machine shared with other
jobs; ratios are taken within one run.

Usage:
    python benchmarks/fl_round.py [--widths 16] [--dp none dpsgd] [--hospitals 10] [--train-subset N]
                                  [--skip-flower] [--rows ...] [--out results/benchmarks/fl_round.json]
    python benchmarks/fl_round.py --smoke      # CI size: 2 hospitals, width 8, 100 images, no Flower
"""

import argparse
import dataclasses
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from fedmedlib import fl
from fedmedlib.fl import modes as plugs
from fedmedlib.experiments import opacus_tutorial
from fedmedlib.models import build_model
from fedmedlib.experiments.provenance import provenance
from fedmedlib.train import autocast

ROWS = ("engine", "engine-bf16", "engine-parallel", "recipe", "flower-recipe", "compute", "compute-bf16")


def experiment(args, width: int, dp: str) -> fl.Experiment:
    return fl.Experiment(n_clients=args.hospitals, scheme="paper", rounds=1 + args.repeats, local_epochs=1, width=width,
                         train_subset=args.train_subset, eval_subset=args.eval_subset, dp=dp, seed=0)


def calibrate(exp: fl.Experiment, fed: fl.Federation) -> dict[int, float]:
    """Each hospital's DP-SGD noise multiplier; also fills the per-process cache the engine reads."""
    plug = plugs.make_private(exp)
    return {h.cid: plug.hospital(h.cid, len(h.train_idx), fed.device).noise_multiplier for h in fed.hospitals}


def _timed(function) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return dict(seconds=time.perf_counter() - wall, cpu_seconds=time.process_time() - cpu)


def _best(runs: list[dict]) -> dict:
    """The fastest repeat (the least disturbed by other jobs), with every repeat kept."""
    return dict(min(runs, key=lambda r: r["seconds"]), repeats=[r["seconds"] for r in runs])


def engine_round(exp: fl.Experiment, root, engine: str, repeats: int, warm_up: bool = True) -> dict:
    """Round 1 warms up (lazy kernels, first ε); rounds 2.. are timed, exactly as `run_federated` plays them."""
    private, aggregator = plugs.make_plugs(exp)
    fed = fl.Federation(exp, root=root, device="cpu", private=private, aggregator=aggregator, engine=engine)
    aggregate = aggregator.aggregate if aggregator is not None else None
    state = {"flat": fl.get_flat(fed.model).clone()}

    def play(rnd):
        state["flat"], _ = fl.play_round(fed, state["flat"], rnd, private=private, aggregate=aggregate)

    if warm_up:
        play(1)
    return _best([_timed(lambda: play(rnd)) for rnd in range(2, 2 + repeats)])


def recipe_round(exp, fed, sigmas, repeats: int) -> dict:
    h = min(fed.hospitals, key=lambda h: len(h.train_idx))  # warm-up: imports, Opacus' first wrap
    opacus_tutorial.opacus_local_update(exp, fl.get_flat(fed.model), fed.x[h.train_idx][:64], fed.y[h.train_idx][:64],
                                noise_multiplier=None if sigmas is None else 1.0)
    start = fl.get_flat(fed.model).clone()
    return _best([_timed(lambda: opacus_tutorial.opacus_round(fed, start, 2, noise_multipliers=sigmas))
                  for _ in range(repeats)])


def flower_round(exp, root, sigmas) -> dict:
    from fedmedlib.flower.recipe_app import make_recipe_client_app
    from fedmedlib.flower.simulation import run_flower_simulation

    t0 = time.perf_counter()
    history = run_flower_simulation(dataclasses.replace(exp, dp="none", rounds=2), root=root,
                                    client_app=make_recipe_client_app(sigmas))
    return dict(seconds=history["rounds"][1]["seconds"], first_round_seconds=history["rounds"][0]["seconds"],
                total_seconds_2_rounds=time.perf_counter() - t0)


def compute_round(exp, fed, repeats: int, precision: str = "fp32", warm_up: bool = True) -> dict:
    """The round's arithmetic alone: its training steps (batch sizes as the engine's) and evaluation forwards."""
    torch.manual_seed(0)
    net = build_model(exp.model, width=exp.width).to(fed.device)
    opt = torch.optim.Adam(net.parameters(), lr=exp.lr)
    sizes = [min(exp.batch_size, len(h.train_idx) - s) for h in fed.hospitals
             for s in range(0, len(h.train_idx), exp.batch_size)] * exp.local_epochs
    n_eval = len(fed.val_idx) + len(fed.x_test)
    x, y = fed.x[:256].clone(), fed.y[:256].clone()

    def run():
        net.train()
        for b in sizes:
            opt.zero_grad(set_to_none=True)
            with autocast(fed.device, precision):
                loss = nn.functional.cross_entropy(net(x[:b]), y[:b])
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad(), autocast(fed.device, precision):
            for s in range(0, n_eval, 256):
                net(x[:min(256, n_eval - s)])

    if warm_up:
        run()
    return dict(_best([_timed(run) for _ in range(repeats)]), train_images=sum(sizes), eval_images=n_eval)


def measure(args, width: int, dp: str) -> list[dict]:
    exp = experiment(args, width, dp)
    fed = fl.Federation(exp, root=args.root, device="cpu")
    sigmas = calibrate(exp, fed) if dp == "dpsgd" else None
    out = []
    for row in args.rows:
        if row == "flower-recipe" and args.skip_flower:
            continue
        if row.startswith("compute"):
            m = compute_round(exp, fed, args.repeats, "bf16" if row == "compute-bf16" else "fp32", not args.smoke)
        elif row == "recipe":
            m = recipe_round(exp, fed, sigmas, args.repeats)
        elif row == "flower-recipe":
            m = flower_round(exp, args.root, sigmas)
        else:
            e = dataclasses.replace(exp, precision="bf16") if row == "engine-bf16" else exp
            m = engine_round(e, args.root, "parallel" if row == "engine-parallel" else "sequential", args.repeats,
                             not args.smoke)
        out.append(dict(width=width, dp=dp, row=row, **m))
        cpu = f"{m['cpu_seconds']:8.2f} s CPU" if "cpu_seconds" in m else ""
        print(f"  w{width:<3} dp={dp:<6} {row:<16} {m['seconds']:8.2f} s {cpu}", flush=True)
    base = {r["row"]: r for r in out}
    for r in out:  # how many times slower than each engine row (> 1: the engine is faster), wall and CPU
        for k in ("engine", "engine-bf16"):
            if k in base:
                r[f"vs_{k}"] = r["seconds"] / base[k]["seconds"]
                if "cpu_seconds" in r:
                    r[f"cpu_vs_{k}"] = r["cpu_seconds"] / base[k]["cpu_seconds"]
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[16])
    parser.add_argument("--dp", nargs="+", default=["none", "dpsgd"], choices=["none", "dpsgd"])
    parser.add_argument("--hospitals", type=int, default=10)
    parser.add_argument("--train-subset", type=int, default=None, help="training images (default: all 11,959)")
    parser.add_argument("--eval-subset", type=int, default=None, help="test images (default: all 3,421)")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--skip-flower", action="store_true")
    parser.add_argument("--repeats", type=int, default=1, help="timed rounds per in-process row (the fastest counts)")
    parser.add_argument("--root", default=None, help="folder of bloodmnist.npz (default: $FEDMED_DATA)")
    parser.add_argument("--smoke", action="store_true", help="CI size: 2 hospitals, width 8, 100 images, no warm-up")
    parser.add_argument("--out", default="results/benchmarks/fl_round.json")
    args = parser.parse_args(argv)
    if args.smoke:
        args.widths, args.hospitals, args.train_subset, args.eval_subset = [8], 2, 100, 50
        args.skip_flower = True
    warnings.filterwarnings("ignore")
    os.environ.setdefault("FEDMED_PROGRESS", "0")
    load_before, rows = os.getloadavg(), []
    for width in args.widths:
        for dp in args.dp:
            rows += measure(args, width, dp)
            result = dict(benchmark="fl_round", hospitals=args.hospitals, train_subset=args.train_subset,
                          eval_subset=args.eval_subset, rows=rows, torch_threads=torch.get_num_threads(),
                          load_average_before=load_before, load_average_after=os.getloadavg(),
                          command=" ".join(["python", "benchmarks/fl_round.py", *(argv or sys.argv[1:])]),
                          provenance=provenance("cpu"))
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=1))  # after every setting: keeps what ran
    return result


if __name__ == "__main__":
    main()
