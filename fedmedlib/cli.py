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
    from .train import train_centralized

    return train_centralized(model=args.model, width=args.width, epochs=args.epochs, batch_size=args.batch_size,
                             lr=args.lr, seed=args.seed, train_subset=args.subset, eval_subset=args.eval_subset,
                             device=args.device, root=args.data, progress=not args.json)


def _data(args) -> dict:
    from .data import ensure_file, info

    path = ensure_file(args.data)
    return {"path": str(path), "md5": info()["MD5"], "verified": True, "n_samples": info()["n_samples"]}


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
    d = sub.add_parser("data", help="locate, verify (md5) and if needed download bloodmnist.npz")
    for s in (p, t, d):
        s.add_argument("--data", default=None, help="folder holding bloodmnist.npz (default: $FEDMED_DATA)")
        s.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = {"partition": _partition, "train": _train, "data": _data}[args.command](args)
    except (ValueError, RuntimeError) as err:
        print(f"fedmed {args.command}: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, indent=1, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))
    else:
        printer = {"partition": _print_partition, "train": _print_train}.get(args.command)
        printer(out) if printer else print(f"BloodMNIST verified (md5 {out['md5']}): {out['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
