"""The `fedmed` command: partitions and centralized training from the shell, JSON on request.

References:
    fedmedlib.partition, fedmedlib.train.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def _partition(args) -> dict:
    from .data import class_names, load_bloodmnist
    from .partition import partition, partition_stats

    _, labels = load_bloodmnist("train", args.data)
    parts = partition(labels, args.clients, args.scheme, seed=args.seed, alpha=args.alpha,
                      classes_per_client=args.classes_per_client, min_size=args.min_size)
    counts = partition_stats(labels, parts, num_classes=8)
    return {"scheme": args.scheme, "clients": args.clients, "seed": args.seed, "alpha": args.alpha,
            "classes_per_client": args.classes_per_client, "classes": class_names(),
            "sizes": [int(len(p)) for p in parts], "counts": counts.tolist()}


def _train(args) -> dict:
    from .experiments.runs import with_provenance
    from .train import train_centralized

    return with_provenance(train_centralized(
        model=args.model, width=args.width, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, train_subset=args.subset, eval_subset=args.eval_subset, device=args.device, root=args.data,
        progress=not args.json))


def _data(args) -> dict:
    from .data import ensure_file, info

    path = ensure_file(args.data)
    return {"path": str(path), "md5": info()["MD5"], "verified": True, "n_samples": info()["n_samples"]}


def _run(args) -> dict:
    from .config import get_profile
    from .fl import Experiment, run_federated

    profile = get_profile(args.profile)
    overrides = {k: v for k, v in dict(
        n_clients=args.clients, scheme=args.scheme, alpha=args.alpha, rounds=args.rounds,
        local_epochs=args.local_epochs, fraction_fit=args.fraction, dropout_prob=args.dropout, model=args.model,
        width=args.width, dp=args.dp, epsilon=args.epsilon, delta=args.delta, clip=args.clip,
        drop_noise=args.drop_noise, aggregator="secagg" if args.secagg else "plain",
        secagg_threshold=args.threshold, secagg_neighbours=args.neighbours, seed=args.seed,
        train_subset=args.subset, eval_subset=args.eval_subset).items() if v is not None}
    if args.dp == "distributed_dpsgd":  # the book's recipe for this mode, under any explicit flag
        from .experiments.grid import distributed_settings

        overrides = {**distributed_settings(profile, overrides.get("n_clients", 10)), **overrides}
    exp = Experiment.from_profile(profile, **overrides)
    from .fl.modes import make_plugs

    private, aggregator = make_plugs(exp)
    from .experiments.runs import with_provenance

    result = with_provenance(dict(run_federated(exp, device=args.device, root=args.data, checkpoint=args.checkpoint,
                                                progress=not args.json, private=private, aggregator=aggregator),
                                  profile=profile.name))
    if args.out:
        from pathlib import Path

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


def _print_run(out: dict) -> None:
    for h in out["rounds"]:
        if "val_accuracy" not in h:  # a round between evaluations (eval_every > 1)
            continue
        print(f"  round {h['round']:3d}  aggregated {h['aggregated']:2d}  val acc {h['val_accuracy']:.4f}  "
              f"test acc {h['test_accuracy']:.4f}  {h['seconds']:.1f} s")
    print(f"test accuracy at best-val round {out['best_round']}: {out['test_accuracy_at_best_val']:.4f} "
          f"(last round: {out['test_accuracy_last']:.4f}); {out['seconds_per_round']:.1f} s per round")


def _print_partition(out: dict) -> None:
    print(f"{out['scheme']} split over {out['clients']} hospitals (rows) x 8 classes (columns)")
    for i, row in enumerate(out["counts"]):
        print(f"  hospital {i:2d}: " + " ".join(f"{c:5d}" for c in row) + f"  | {sum(row):6d}")


def _print_train(out: dict) -> None:
    for h in out["history"]:
        print(f"  epoch {h['epoch']:3d}  train loss {h['train_loss']:.4f}  val acc {h['val_accuracy']:.4f}")
    print(f"test accuracy at best-val epoch {out['best_epoch']}: {out['test_accuracy_at_best_val']:.4f} "
          f"(last epoch: {out['test_accuracy_last']:.4f}); {out['wall_time_s']:.1f} s")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedmed", description="fedmedlib: federated learning with DP on BloodMNIST")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("partition", help="split BloodMNIST's training set over hospitals")
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--scheme", default="paper", choices=["iid", "paper", "dirichlet", "pathological"])
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (smaller = more skew)")
    p.add_argument("--classes-per-client", type=int, default=2)
    p.add_argument("--min-size", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("train", help="centralized (pooled-data) training")
    t.add_argument("--model", default="dpresnet", choices=["dpresnet", "resnet9"])
    t.add_argument("--width", type=int, default=16)
    t.add_argument("--epochs", type=int, default=2)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--subset", type=int, default=None, help="train on a seeded random subset of this size")
    t.add_argument("--eval-subset", type=int, default=None, help="evaluate on subsets of val/test of this size")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
    r = sub.add_parser("run", help="federated training (FedAvg) over simulated hospitals")
    r.add_argument("--profile", default="quick", help="preset for unspecified settings: quick | cpu | paper")
    r.add_argument("--clients", type=int, default=10)
    r.add_argument("--scheme", default="paper", choices=["iid", "paper", "dirichlet", "pathological"])
    r.add_argument("--alpha", type=float, default=None)
    r.add_argument("--rounds", type=int, default=None)
    r.add_argument("--local-epochs", type=int, default=None)
    r.add_argument("--fraction", type=float, default=None, help="fraction of hospitals asked per round")
    r.add_argument("--dropout", type=float, default=None, help="probability that a chosen hospital drops out")
    r.add_argument("--model", default=None, choices=["dpresnet", "resnet9"])
    r.add_argument("--width", type=int, default=None)
    r.add_argument("--dp", default=None, choices=["none", "dpsgd", "update_ldp", "client_level", "distributed_dpsgd"],
                   help="distributed_dpsgd ('as it should be done'): one DP-SGD step per round, the noise split "
                        "across hospitals under SecAgg+ (needs --secagg); starts from the book's recipe for it")
    r.add_argument("--epsilon", type=float, default=None)
    r.add_argument("--delta", type=float, default=None)
    r.add_argument("--clip", type=float, default=None)
    r.add_argument("--drop-noise", action="store_true", default=None,
                   help="BUG REPRODUCTION: Flower < 1.14 computed the update_ldp noise and did not apply it")
    r.add_argument("--secagg", action="store_true", help="aggregate with SecAgg+ instead of in the clear")
    r.add_argument("--threshold", type=int, default=None, help="SecAgg+ reconstruction threshold")
    r.add_argument("--neighbours", type=int, default=None, help="SecAgg+ neighbours per client")
    r.add_argument("--subset", type=int, default=None)
    r.add_argument("--eval-subset", type=int, default=None)
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--device", default="auto")
    r.add_argument("--checkpoint", default=None, help="save every round here; resume from it if present")
    r.add_argument("--out", default=None, help="also write the JSON result to this file")
    d = sub.add_parser("data", help="locate, verify (md5) and if needed download bloodmnist.npz")
    for s in (p, t, r, d):
        s.add_argument("--data", default=None, help="folder holding bloodmnist.npz (default: $FEDMED_DATA)")
        s.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = {"partition": _partition, "train": _train, "run": _run, "data": _data}[args.command](args)
    except (ValueError, RuntimeError) as err:
        print(f"fedmed {args.command}: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, indent=1, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))
    else:
        printer = {"partition": _print_partition, "train": _print_train, "run": _print_run}.get(args.command)
        printer(out) if printer else print(f"BloodMNIST verified (md5 {out['md5']}): {out['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
