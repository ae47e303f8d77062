"""Run the PAPER profile's grid on one GPU: preflight, an engine probe, then the cells, one JSON per finished cell.

Usage (on the GPU machine; offline is fine, see scripts/gpu_paper_grid.sh for the carried wheels):
    python scripts/gpu_paper_grid.py [--hospitals 10] [--schemes paper dirichlet] [--seeds 0]
                                     [--columns dp-sa- as_claimed ...] [--engine probe|auto|sequential|parallel]
                                     [--budget-minutes 15] [--probe-only]

1. Preflight: a CUDA device, opacus and medmnist importable, the verified bloodmnist.npz.
2. Probe (engine 'probe', the default): first fastdp's DP-SGD step under each per-sample strategy, with cuDNN's
   autotuner on and off, on Poisson-drawn batch sizes (the fastest setting is kept for the run); then one timed
   round of each engine (sequential, parallel) without DP and with record-level DP at width 64 on a 3,000-image
   subset; each DP mode of the grid then runs on the faster
   engine (the engines agree up to float rounding, so the choice is not part of a result's hash). The probe
   also prints an estimate of the minutes the requested cells will take.
3. The cells of `fedmedlib.experiments.grid` (table part), PAPER profile, most informative first. A finished cell is
   results/federated-<hash>.json, exactly as scripts/run_grid.py writes it, plus one line (minutes, images/s,
   engine, device) in results/benchmarks/gpu_paper_grid.json. Cells already in results/ are skipped and an
   interrupted cell resumes from results/_checkpoints, so re-running continues where it stopped.
"""

import argparse
import functools
import json
import time
from pathlib import Path

LOG = "results/benchmarks/gpu_paper_grid.json"


def preflight(device: str) -> dict:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible: this script is the GPU plan; on a CPU use scripts/run_grid.py")
    missing = []
    for module in ("opacus", "medmnist", "scipy", "tqdm", "cryptography"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise SystemExit(f"missing Python packages {missing}: install the carried wheels "
                         "(bash scripts/gpu_paper_grid.sh does) or pip install them")
    from fedmedlib import data

    path = data.ensure_file(download=False)  # verifies the md5; explains where to put the file otherwise
    torch.backends.cudnn.benchmark = True  # fixed shapes per step: let cuDNN pick its fastest kernels
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    return dict(device=name, torch=torch.__version__, data=str(path))


def _images(exp) -> tuple[int, int]:
    """(training images per round, evaluation images per round) of an experiment."""
    return _count(exp.n_clients, exp.scheme, exp.seed, exp.train_subset, exp.eval_subset, exp.local_epochs)


@functools.lru_cache(maxsize=None)
def _count(n_clients, scheme, seed, train_subset, eval_subset, local_epochs) -> tuple[int, int]:
    from fedmedlib import fl

    exp = fl.Experiment(n_clients=n_clients, scheme=scheme, seed=seed, train_subset=train_subset,
                        eval_subset=eval_subset, local_epochs=local_epochs)
    n = fl.images_per_round(exp, _labels())
    return n["trained"], n["evaluated"]


@functools.lru_cache(maxsize=None)
def _labels() -> dict:
    from fedmedlib.data import load_bloodmnist

    return {split: load_bloodmnist(split)[1] for split in ("train", "test")}


def probe(profile, hospitals: int, images: int, device: str, log: str | None = None, info: dict | None = None) -> dict:
    """Seconds per training+evaluation image of each (dp mode, engine), from round 2 of a 2-round run.

    Each measurement is appended to `log` as soon as it is taken: a time limit that cuts the probe short
    (as one did on 2026-11-27, in the DP-SGD parallel run) then still leaves the ones it finished on record."""
    from fedmedlib import fl
    from fedmedlib.fl import modes as plugs

    out = {}
    for dp in ("none", "dpsgd"):
        exp = fl.Experiment.from_profile(profile, n_clients=hospitals, scheme="paper", rounds=2, local_epochs=1,
                                         train_subset=images, eval_subset=images // 3, dp=dp)
        train, evaluated = _images(exp)
        for engine in ("sequential", "parallel"):
            private, aggregator = plugs.make_plugs(exp)
            r = fl.run_federated(exp, device=device, progress=False, private=private, aggregator=aggregator,
                                 engine=engine)
            seconds = r["rounds"][1]["seconds"]
            out[f"{dp}/{engine}"] = dict(seconds_per_round=seconds, images_per_s=(train + evaluated) / seconds)
            if log:
                from fedmedlib.experiments.provenance import provenance

                _record(log, dict(kind="probe_row", **(info or {}), profile=profile.name, dp=dp, engine=engine,
                                  hospitals=hospitals, train_subset=images, eval_subset=images // 3,
                                  images_per_round=train + evaluated, **out[f"{dp}/{engine}"],
                                  provenance=provenance(device)))
            print(f"probe dp={dp:<6} {engine:<10} {seconds:7.2f} s/round  {(train + evaluated) / seconds:8.0f} "
                  "images/s", flush=True)
    return out


def dp_step_probe(width: int, device: str, *, batch: int = 32, steps: int = 12, log: str | None = None,
                  info: dict | None = None) -> dict:
    """Milliseconds per fastdp clipped-sum step for each strategy, with cuDNN's autotuner on and off, on batch
    sizes drawn as Poisson sampling draws them (a new size almost every step) and on one fixed size.

    Why: on the H200 (2026-11-27) DP-SGD ran 17× slower than plain training, against 1.35× on a CPU. Two
    suspects, both untested then: cuDNN re-tuning for every new batch size (cudnn.benchmark), and the grouped
    per-sample convolution (groups = batch) that 'auto' picks because it is fastest on a CPU. The fastest
    setting on the Poisson sizes is applied to the rest of this run (FEDMED_FASTDP_STRATEGY, cudnn.benchmark);
    every strategy gives the same clipped sum, so results do not depend on the choice."""
    import os

    import numpy as np
    import torch

    from fedmedlib.privacy import fastdp
    from fedmedlib.models import build_model

    torch.manual_seed(0)
    net = build_model("dpresnet", width=width).to(device)
    tape = fastdp.LayerTape(net)
    poisson = np.random.default_rng(0).binomial(1200, batch / 1200, size=steps + 2).tolist()
    x = torch.randn(max(poisson + [batch]), 3, 28, 28, device=device)
    y = torch.randint(0, 8, (len(x),), device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rows, poisson_ms = {}, {}
    for autotune in (False, True):
        torch.backends.cudnn.benchmark = autotune
        for strategy in fastdp.STRATEGIES:
            for sizes_name, sizes in (("poisson", poisson), ("fixed", [batch] * (steps + 2))):
                for n in sizes[:2]:  # warm-up
                    fastdp.clipped_gradient_sum(net, tape, x[:n], y[:n], 1.0, strategy=strategy)
                sync()
                t = time.perf_counter()
                for n in sizes[2:]:
                    fastdp.clipped_gradient_sum(net, tape, x[:n], y[:n], 1.0, strategy=strategy)
                sync()
                ms = 1000 * (time.perf_counter() - t) / steps
                rows[f"{strategy}/cudnn.benchmark={autotune}/{sizes_name}"] = ms
                if sizes_name == "poisson":
                    poisson_ms[strategy, autotune] = ms
                print(f"dp step  {strategy:<11} cudnn.benchmark={autotune!s:<5} {sizes_name:<7} {ms:8.1f} ms/step",
                      flush=True)
    tape.close()
    strategy, autotune = min(poisson_ms, key=poisson_ms.get)
    os.environ["FEDMED_FASTDP_STRATEGY"] = strategy
    torch.backends.cudnn.benchmark = autotune
    out = dict(width=width, batch=batch, steps=steps, ms_per_step=rows, chosen=dict(strategy=strategy,
                                                                                  cudnn_benchmark=autotune))
    if log:
        from fedmedlib.experiments.provenance import provenance

        _record(log, dict(kind="dp_step_probe", **(info or {}), **out, provenance=provenance(device)))
    print(f"dp step: using strategy {strategy!r} with cudnn.benchmark={autotune} for the rest of this run", flush=True)
    return out


def _record(path: str, entry: dict) -> None:
    path = Path(path)
    log = json.loads(path.read_text()) if path.is_file() else dict(benchmark="gpu_paper_grid", entries=[])
    log["entries"].append(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".tmp").write_text(json.dumps(log, indent=1))
    path.with_suffix(".tmp").replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hospitals", type=int, nargs="+", default=[10])
    parser.add_argument("--schemes", nargs="+", default=["paper", "dirichlet"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--columns", nargs="+", default=None)
    parser.add_argument("--engine", default="probe", choices=["probe", "auto", "sequential", "parallel"])
    parser.add_argument("--budget-minutes", type=float, default=None, help="start no new cell after this")
    parser.add_argument("--probe-only", action="store_true")
    parser.add_argument("--checkpoint-dir", default="results/_checkpoints")
    parser.add_argument("--probe-images", type=int, default=3000, help="training images of the probe rounds")
    parser.add_argument("--device", default="cuda", help="'cpu' with --profile quick: a dry run of this script")
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--log", default=LOG, help="where each probe and finished cell is appended")
    args = parser.parse_args()
    started = time.time()
    info = preflight(args.device)
    print(json.dumps(info), flush=True)
    from fedmedlib.experiments import grid
    from fedmedlib.config import get_profile
    from fedmedlib.experiments.runs import federated
    from fedmedlib.experiments.provenance import provenance
    from fedmedlib.experiments.results import result_path

    profile = get_profile(args.profile)
    cells = [exp for _, exp in grid.cells(profile, parts=("table",), hospitals=args.hospitals, schemes=args.schemes,
                                          seeds=args.seeds, columns=args.columns)]
    todo = [e for e in cells if not result_path("federated", dict(e.to_dict(), profile=profile.name)).is_file()]
    engines = {"none": args.engine, "dpsgd": args.engine}
    if args.engine == "probe":
        dp_step_probe(profile.width, args.device, batch=profile.batch_size, log=args.log, info=info)
        measured = probe(profile, max(args.hospitals), args.probe_images, args.device, args.log, info)
        engines = {dp: max(("sequential", "parallel"), key=lambda e: measured[f"{dp}/{e}"]["images_per_s"])
                   for dp in ("none", "dpsgd")}
        per_image = {dp: 1 / measured[f"{dp}/{engines[dp]}"]["images_per_s"] for dp in engines}
        estimate = sum(e.rounds * sum(_images(e))
                       * per_image["dpsgd" if e.dp == "dpsgd" else "none"] for e in todo) / 60
        print(f"engines {engines}; ESTIMATE for the {len(todo)} cells to run: {estimate:.1f} min "
              "(probe throughput × images; σ calibration and SecAgg+ not included)", flush=True)
        _record(args.log, dict(kind="probe", **info, profile=profile.name, measured=measured, engines=engines,
                               cells=len(todo), estimate_minutes=estimate, provenance=provenance(args.device)))
    if args.probe_only:
        return
    for exp in todo:
        if args.budget_minutes and (time.time() - started) / 60 > args.budget_minutes:
            print(f"budget of {args.budget_minutes} min spent: stopping before the next cell", flush=True)
            break
        engine = engines["dpsgd" if exp.dp == "dpsgd" else "none"]
        train, evaluated = _images(exp)
        resumed = (Path(args.checkpoint_dir) / f"{exp.hash()}.pt").is_file()  # then images/s is too high
        t0 = time.time()
        r = federated(exp, profile=profile.name, device=args.device, progress=False,
                      checkpoint_dir=args.checkpoint_dir, engine=engine)
        seconds = time.time() - t0
        entry = dict(kind="cell", profile=profile.name, hash=exp.hash(), n_clients=exp.n_clients,
                     scheme=exp.scheme, dp=exp.dp, aggregator=exp.aggregator, drop_noise=exp.drop_noise,
                     seed=exp.seed, engine=engine, resumed=resumed,
                     minutes=seconds / 60, images_per_s=exp.rounds * (train + evaluated) / seconds,
                     seconds_per_round=r["seconds_per_round"], test_accuracy=r["test_accuracy_at_best_val"],
                     device=info["device"])
        _record(args.log, entry)
        print(f"{exp.n_clients} hospitals {exp.scheme:9s} dp {exp.dp:10s} {exp.aggregator:6s} seed {exp.seed} "
              f"[{engine}]: {entry['minutes']:.1f} min, {entry['images_per_s']:.0f} images/s, "
              f"test@best-val {entry['test_accuracy']:.4f}", flush=True)
    print(f"total {(time.time() - started) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
