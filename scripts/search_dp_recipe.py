"""Search a DP-SGD recipe for DPResNet on BloodMNIST at (ε = 6, δ = 1.9e-4), on validation accuracy only.

Stages (each trial is one cached JSON, results/dp_recipe-<hash>.json, so any stage resumes where it stopped):
  search    coordinate descent from a start recipe: one knob at a time over its candidates, keep the best
            validation accuracy, move to the next knob (one pass, knobs in the order of KNOBS)
  ablation  from the winner, put each knob back to the naive recipe's value, one at a time
  final     the winner and the naive recipe over --seeds (test accuracy is read only here, at the
            best-validation epoch)

    python scripts/search_dp_recipe.py --stage search  [--device cuda] [--scale full|tiny]
    python scripts/search_dp_recipe.py --stage ablation
    python scripts/search_dp_recipe.py --stage final --seeds 0 1 2

The search never looks at test accuracy: a trial's score is `val_accuracy_best`. `--scale tiny` (a 1,000-image
subset, 2 epochs) only checks that the pipeline runs; its numbers mean nothing.
"""

import argparse
import json
import time

from fedmedlib.dprecipe import DPRecipe, dp_recipe

NAIVE = DPRecipe("naive")  # what chapter 3 ran: Adam 1e-3, batch 128, 15 epochs, C = 7, no augmentation
START = DPRecipe("start", batch_size=1024, epochs=30, optimizer="sgd", lr=2.0, momentum=0.9, schedule="cosine",
                 clip=1.0, multiplicity=4, ema=0.999)
KNOBS = {  # in search order: the step size first, it interacts with everything else
    "optimizer_lr": [("adam", 1e-3), ("adam", 3e-3), ("sgd", 0.5), ("sgd", 1.0), ("sgd", 2.0), ("sgd", 4.0)],
    "clip": [0.5, 1.0, 2.0, 7.0],
    "batch_size": [256, 512, 1024, 2048],
    "epochs": [15, 30, 60],
    "multiplicity": [1, 4, 8],
    "ema": [0.0, 0.99, 0.999],
    "schedule": ["constant", "cosine"],
    "width": [16, 32],
}


def with_knob(recipe: DPRecipe, knob: str, value) -> DPRecipe:
    if knob == "optimizer_lr":
        return recipe.replace(optimizer=value[0], lr=value[1])
    return recipe.replace(**{knob: value})


def knob_value(recipe: DPRecipe, knob: str):
    return (recipe.optimizer, recipe.lr) if knob == "optimizer_lr" else getattr(recipe, knob)


def run(recipe: DPRecipe, args, seed: int = 0) -> dict:
    scale = dict(train_subset=1000, eval_subset=500) if args.scale == "tiny" else {}
    if args.scale == "tiny":
        recipe = recipe.replace(epochs=min(recipe.epochs, 2), batch_size=min(recipe.batch_size, 250))
    t0 = time.time()
    r = dp_recipe(recipe, seed=seed, device=args.device, progress=False, save_result=args.scale != "tiny", **scale)
    print(json.dumps(dict(recipe=recipe.name, seed=seed, val=round(r["val_accuracy_best"], 4),
                          eps=round(r["epsilon_spent"], 3), z=round(r["noise_multiplier"], 3),
                          s=round(time.time() - t0))), flush=True)
    return r


def search(args) -> DPRecipe:
    best, best_val = START, run(START, args)["val_accuracy_best"]
    for knob, values in KNOBS.items():
        for value in values:
            if value == knob_value(best, knob):
                continue
            trial = with_knob(best, knob, value).replace(name=f"search:{knob}={value}")
            val = run(trial, args)["val_accuracy_best"]
            if val > best_val:
                best, best_val = trial, val
    print("WINNER", json.dumps(best.replace(name="tuned").to_dict()), round(best_val, 4), flush=True)
    return best.replace(name="tuned")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=["search", "ablation", "final"], required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--scale", choices=["full", "tiny"], default="full")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    winner = search(args)  # cached: re-reading the search costs nothing once it has run
    if args.stage == "ablation":
        for knob in KNOBS:
            naive_value = knob_value(NAIVE, knob)
            if naive_value != knob_value(winner, knob):
                run(with_knob(winner, knob, naive_value).replace(name=f"ablation:{knob}={naive_value}"), args)
    elif args.stage == "final":
        for seed in args.seeds:
            run(winner, args, seed)
            run(NAIVE, args, seed)


if __name__ == "__main__":
    main()
