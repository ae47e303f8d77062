"""Cached runs: a core run's result, looked up in results/ by its settings, else run, given provenance and saved.

The core (train, privacy, fl) returns plain results; this layer names them (the cache key), attaches where the
number came from (git commit, device, versions) and writes them to results/. QUICK-profile runs are live
demonstrations: they run every time and are never saved.

References:
    This project's STYLE.md: chapters read committed JSON for full profiles and run only QUICK live.
"""

from __future__ import annotations

from pathlib import Path

from ..fl import Experiment, run_federated
from ..fl.modes import make_plugs
from ..privacy.accounting import PAPER_CLIP, PAPER_DELTA, PAPER_EPSILON
from ..privacy.dpsgd import train_dp_centralized
from ..privacy.recipe import LATER_FIELDS as RECIPE_LATER_FIELDS
from ..privacy.recipe import DPRecipe, train_recipe
from ..train import train_centralized
from . import results
from .provenance import provenance


def with_provenance(result: dict) -> dict:
    """`result` with the provenance of the device it ran on (its `device` entry, written by the core run)."""
    return dict(result, provenance=provenance(result.get("device", "cpu")))


def centralized_config(profile, model: str, seed: int) -> dict:
    """The full settings of a centralized baseline run under a preset (the cache key of its result)."""
    return dict(kind="centralized", profile=profile.name, model=model, width=profile.width,
                epochs=profile.centralized_epochs, batch_size=profile.batch_size, lr=profile.lr,
                train_subset=profile.train_subset, eval_subset=profile.eval_subset, seed=seed)


def centralized_baseline(profile, model: str, seed: int = 0, *, allow_run: bool = True, device: str = "auto",
                         progress: bool | None = None) -> dict:
    """Cached centralized run: read results/centralized-<hash>.json, or train and save it.

    The QUICK profile is a live demonstration: it always runs and is never written to results/.
    """
    config = centralized_config(profile, model, seed)
    run = lambda: with_provenance(train_centralized(  # noqa: E731 - deferred so a cached result costs nothing
        model=model, width=profile.width, epochs=profile.centralized_epochs, batch_size=profile.batch_size,
        lr=profile.lr, seed=seed, train_subset=profile.train_subset, eval_subset=profile.eval_subset,
        device=device, progress=progress))
    if profile.name == "quick":
        return run()
    return results.load_or_run("centralized", config, run, allow_run=allow_run)


# DP-SGD favours bigger batches than the paper's 32: the noise on each averaged step falls as 1/B while
# the per-sample clipping cost stays per image; 128 keeps ~94 steps per epoch over the full training set.
DP_BATCH_SIZE = 128


def dp_centralized_config(profile, seed: int = 0, *, batch_size: int = DP_BATCH_SIZE,
                          epsilon: float = PAPER_EPSILON, delta: float = PAPER_DELTA,
                          clip: float = PAPER_CLIP, accountant: str = "prv") -> dict:
    """Cache key of a centralized DP-SGD run under a preset (results.load_or_run)."""
    return dict(kind="dp_centralized", profile=profile.name, model="dpresnet", width=profile.width,
                epochs=profile.centralized_epochs, batch_size=batch_size, lr=profile.lr,
                train_subset=profile.train_subset, eval_subset=profile.eval_subset, seed=seed, epsilon=epsilon,
                delta=delta, clip=clip, accountant=accountant)


def dp_centralized(profile, seed: int = 0, *, allow_run: bool = True, device: str = "auto",
                   progress: bool | None = None, save_result: bool | None = None, **dp) -> dict:
    """Cached centralized DP-SGD run: read results/dp_centralized-<hash>.json, or train and save it
    (the QUICK profile is not saved unless `save_result=True`: it is a live demonstration)."""
    c = dp_centralized_config(profile, seed, **dp)
    run = lambda: with_provenance(train_dp_centralized(  # noqa: E731 - deferred so a cached result costs nothing
        model=c["model"], width=c["width"], epochs=c["epochs"], batch_size=c["batch_size"], lr=c["lr"], seed=seed,
        train_subset=c["train_subset"], eval_subset=c["eval_subset"], epsilon=c["epsilon"], delta=c["delta"],
        clip=c["clip"], accountant=c["accountant"], device=device, progress=progress))
    save = profile.name != "quick" if save_result is None else save_result
    return results.load_or_run("dp_centralized", c, run, allow_run=allow_run, save_result=save)


def dp_recipe_key(recipe: DPRecipe, *, seed: int, epsilon: float, delta: float, train_subset: int | None,
                  eval_subset: int | None) -> dict:
    """The cache key of a DP-recipe run. The name only labels a recipe: the same settings under another name are
    the same experiment; knobs added later are left out at their default, so older results keep their hash."""
    settings = {k: v for k, v in recipe.to_dict().items() if k != "name" and RECIPE_LATER_FIELDS.get(k, object()) != v}
    return dict(kind="dp_recipe", recipe=settings, seed=seed, epsilon=epsilon, delta=delta,
                train_subset=train_subset, eval_subset=eval_subset)


def dp_recipe(recipe: DPRecipe, *, seed: int = 0, epsilon: float = PAPER_EPSILON,
              delta: float = PAPER_DELTA, train_subset: int | None = None, eval_subset: int | None = None,
              allow_run: bool = True, save_result: bool = True, **run) -> dict:
    """Cached `train_recipe`: results/dp_recipe-<hash>.json, or run it (and save it) when allowed."""
    config = dp_recipe_key(recipe, seed=seed, epsilon=epsilon, delta=delta, train_subset=train_subset,
                           eval_subset=eval_subset)
    return results.load_or_run(
        "dp_recipe", config, lambda: with_provenance(train_recipe(
            recipe, epsilon=epsilon, delta=delta, seed=seed, train_subset=train_subset, eval_subset=eval_subset,
            **run)),
        allow_run=allow_run, save_result=save_result)


def federated(exp: Experiment, *, profile: str, allow_run: bool = True, device="auto", root=None,
              progress: bool | None = None, checkpoint_dir: str | Path | None = None, engine: str = "auto") -> dict:
    """Cached federated run: results/federated-<hash>.json, or run it (and save it) when allowed.

    QUICK-profile runs are live demonstrations: always run, never written to results/.
    """
    def run() -> dict:
        private, aggregator = make_plugs(exp)
        ckpt = Path(checkpoint_dir) / f"{exp.hash()}.pt" if checkpoint_dir else None
        out = run_federated(exp, device=device, root=root, checkpoint=ckpt, progress=progress,
                            private=private, aggregator=aggregator, engine=engine)
        return with_provenance(dict(out, profile=profile))

    if profile == "quick":
        return run()
    key = dict(exp.to_dict(), profile=profile)
    return results.load_or_run("federated", key, run, allow_run=allow_run)
