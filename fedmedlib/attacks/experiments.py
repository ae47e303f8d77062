"""The attack experiments of chapter 8 under the QUICK and CPU presets, each value with its reason; cached JSON.

References:
    fedmedlib.experiments.results (run-or-load with provenance); Carlini et al., IEEE S&P 2022 (audit design);
    Geiping et al., NeurIPS 2020 (inversion settings).
"""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np
import torch

from .. import privacy
from ..experiments import results
from ..experiments.provenance import provenance
from ..train import load_split_tensors, resolve_device
from . import inversion as inv
from .membership import AuditSettings, Defence, audit

MEMBERSHIP = {
    # QUICK: four models of 50 images, six epochs: runs live in seconds. Too little training to memorise
    # much: it shows the mechanics, not the leak.
    "quick": AuditSettings(pool_size=100, n_models=4, epochs=6, batch_size=16, eval_subset=200),
    # CPU (REDUCED scale): 8 models, each on a random half of 400 training images, 30 epochs at batch 16
    # (≈ 390 Adam steps: width-16 DPResNet learns slowly, and fewer steps leave it unable to memorise).
    # 8 models give each target ~3.5 reference models that left a given image out (offline LiRA with a
    # global variance) and 3,200 scored pairs; ≈ 18 CPU-minutes for the five defences on 2 cores.
    "cpu": AuditSettings(pool_size=400, n_models=8, epochs=30, batch_size=16, eval_subset=500),
}
DEFENCE_PLAN = {
    "quick": (Defence("none"),),
    # ε = 1 (strong), 6 (the paper's claim), 50 (weak: little noise) span record-level DP-SGD.
    # The as-run "clip only" variant is left out: Adam's 13 steps per round move an update by about 7
    # anyway, so clipping to 7 barely binds and it would repeat the undefended row (an exercise).
    "cpu": (Defence("none"), Defence("update_ldp"), Defence("dpsgd", 1.0), Defence("dpsgd", 6.0),
            Defence("dpsgd", 50.0)),
}
INVERSION = {
    # QUICK: 100 steps on one image (~5 s): shows the mechanics, not the attack's full strength.
    "quick": dict(settings=inv.InversionSettings(iterations=100, restarts=1),
                  plan={1: ("none",)}),
    # CPU: 1,200 steps (chosen on validation images: PSNR still rising at 600); one image against every
    # defence, and a batch of four against none (the batch-size effect). One restart: CPU time.
    "cpu": dict(settings=inv.InversionSettings(iterations=1200, restarts=1),
                plan={1: ("none", "secagg_alone", "secagg", "dpsgd", "update_ldp"), 4: ("none",)}),
}
INVERSION_DEFENCES = ("none", "secagg_alone", "secagg", "dpsgd", "update_ldp")
HOSPITALS = 10  # the paper's main setting: the server sees the sum over 10 hospitals
# The record-level DP-SGD whose noise the inversion faces: a hospital of 1,000 records, batch 32, 20 rounds
# of one local epoch at ε = 6, δ = 1.9e-4 — about one hospital of the book's 10-hospital CPU runs.
DPSGD_PLAN = dict(records=1000, batch_size=32, rounds=20, epsilon=privacy.PAPER_EPSILON)
POOL_SEED = 1  # the audit pool is a fixed subset of the training split, the same for every defence


def membership_config(profile_name: str, defence: Defence, seed: int = 0) -> dict:
    return dict(kind="attack_membership", profile=profile_name, defence=asdict(defence),
                settings=asdict(MEMBERSHIP[profile_name]), pool_seed=POOL_SEED, seed=seed)


def membership_audit(profile, defence: Defence = Defence("none"), seed: int = 0, *, allow_run: bool = True,
                     device: str = "auto", progress: bool = False) -> dict:
    """Cached audit (results/attack_membership-<hash>.json); the QUICK profile always runs live, unsaved."""
    name = getattr(profile, "name", str(profile))
    if name not in MEMBERSHIP:
        raise ValueError(f"no membership-audit preset for profile {name!r}: choose one of {sorted(MEMBERSHIP)}")
    config, s = membership_config(name, defence, seed), MEMBERSHIP[name]
    device = resolve_device(device)  # 'auto': CUDA when present (Colab's GPU), else CPU

    def run() -> dict:
        started = time.perf_counter()
        x_pool, y_pool = load_split_tensors("train", s.pool_size, POOL_SEED, device)
        x_test, y_test = load_split_tensors("test", s.eval_subset, 0, device)
        found = audit(x_pool, y_pool, x_test, y_test, defence, s, seed=seed, progress=progress)
        return dict(kind="attack_membership", config=config, seed=seed, **found,
                    wall_time_s=time.perf_counter() - started, provenance=provenance(device))

    if name == "quick":
        return run()
    return results.load_or_run("attack_membership", config, run, allow_run=allow_run)


def dpsgd_noise_multiplier(plan: dict = DPSGD_PLAN, delta: float = privacy.PAPER_DELTA) -> float:
    """z of record-level DP-SGD for the planned hospital (Poisson rate 1 / batches per epoch, as Opacus)."""
    steps_per_epoch = -(-plan["records"] // plan["batch_size"])
    return privacy.noise_multiplier(plan["epsilon"], delta, 1.0 / steps_per_epoch, plan["rounds"] * steps_per_epoch)


def _hospital_batches(batch_size: int, seed: int):
    """Hospital 0's batch (distinct classes, where the label trick is exact) and nine others' random batches."""
    x, y = load_split_tensors("train", None, 0, "cpu")
    rng = np.random.default_rng(seed)
    classes = rng.choice(8, size=batch_size, replace=False)
    first = [int(rng.choice(np.flatnonzero(y.numpy() == c))) for c in classes]
    rest = rng.choice(np.setdiff1d(np.arange(len(y)), first), size=(HOSPITALS - 1) * batch_size, replace=False)
    order = torch.as_tensor(np.concatenate([first, rest]))
    return [(x[part], y[part]) for part in torch.split(order, batch_size)], order


def _secure_mean(vectors: list[torch.Tensor], seed: int) -> torch.Tensor:
    from ..secagg import secure_mean

    mean, _ = secure_mean([v.numpy() for v in vectors], [1.0] * len(vectors), seed=seed)
    return torch.from_numpy(np.asarray(mean, dtype=np.float32))


def _release(defence: str, model, batches, z: float, seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(what the server sees under `defence`, hospital 0's part of it without noise or other hospitals)."""
    (x0, y0), gen = batches[0], torch.Generator().manual_seed(seed + 101)
    clean = inv.batch_gradient(model, x0, y0)
    if defence == "none":
        return clean, inv.flatten(clean)
    if defence == "dpsgd":
        signal = inv.dpsgd_gradient(model, x0, y0, clip=privacy.PAPER_CLIP, noise_multiplier=0.0)
        noised = inv.dpsgd_gradient(model, x0, y0, clip=privacy.PAPER_CLIP, noise_multiplier=z, generator=gen)
        return noised, inv.flatten(signal)
    if defence == "update_ldp":
        from ..privacy.mechanisms import PAPER_SIGMA

        flat = inv.flatten(clean)
        noised = inv.update_noise_gradient(clean, clip=privacy.PAPER_CLIP, sigma=PAPER_SIGMA, generator=gen)
        return noised, flat * (privacy.PAPER_CLIP / flat.norm())
    flats = [inv.flatten(inv.batch_gradient(model, x, y)) for x, y in batches]
    if defence == "secagg_alone":  # a server that plays the other nine hospitals, which send zeros
        flats = [flats[0]] + [torch.zeros_like(flats[0])] * (len(flats) - 1)
    elif defence != "secagg":
        raise ValueError(f"unknown inversion defence {defence!r}: choose from {INVERSION_DEFENCES}")
    return inv.unflatten(_secure_mean(flats, seed), clean), flats[0] / len(flats)


def _as_bytes(images: torch.Tensor) -> list:
    return (inv.to_unit(images) * 255).round().to(torch.uint8).tolist()


def invert_release(model, release, batches, public, settings, seed: int) -> dict:
    """Attack one release: infer labels, invert, apply the public colour prior, score against hospital 0."""
    count = len(batches[0][1])
    labels = inv.infer_labels(release[-1], count)  # the last parameter is the linear head's bias
    t0 = time.perf_counter()
    raw, loss = inv.invert(model, release, labels, settings, seed=seed)
    rec = inv.colour_prior(raw, public)
    everyone = torch.cat([x for x, _ in batches])
    return dict(labels_inferred=sorted(labels.tolist()), labels_true=sorted(batches[0][1].tolist()),
                match_loss=loss, matches=inv.match(rec, batches[0][0]), matches_raw=inv.match(raw, batches[0][0]),
                best_anywhere=inv.match(rec, everyone) if count < len(everyone) else None,
                reconstructions=_as_bytes(rec), seconds=time.perf_counter() - t0)


def inversion_config(profile_name: str, batch_size: int, seed: int = 0) -> dict:
    preset = INVERSION[profile_name]
    return dict(kind="attack_inversion", profile=profile_name, batch_size=batch_size, hospitals=HOSPITALS,
                defences=list(preset["plan"][batch_size]), settings=asdict(preset["settings"]), width=16,
                dpsgd_plan=DPSGD_PLAN, clip=privacy.PAPER_CLIP, seed=seed)


def inversion_demo(profile, batch_size: int = 1, seed: int = 0, *, allow_run: bool = True) -> dict:
    """Cached inversion demo (results/attack_inversion-<hash>.json); QUICK always runs live, unsaved."""
    name = getattr(profile, "name", str(profile))
    if name not in INVERSION or batch_size not in INVERSION[name]["plan"]:
        raise ValueError(f"no inversion preset for profile {name!r} with batch_size {batch_size}: presets are "
                         f"{ {k: sorted(v['plan']) for k, v in INVERSION.items()} }")
    config, preset = inversion_config(name, batch_size, seed), INVERSION[name]

    def run() -> dict:
        from ..models import build_model

        started = time.perf_counter()
        torch.manual_seed(seed)
        model = build_model("dpresnet", width=16)  # round 1: the freshly initialised global model
        batches, order = _hospital_batches(batch_size, seed)
        public, _ = load_split_tensors("val", None, 0, "cpu")  # attacker's public data: colours only
        z = dpsgd_noise_multiplier() if "dpsgd" in config["defences"] else None
        found = {}
        for d in config["defences"]:
            release, signal = _release(d, model, batches, z, seed)
            found[d] = invert_release(model, release, batches, public, preset["settings"], seed)
            # Everything in the release that is not hospital 0's own clean contribution, relative to it.
            found[d]["noise_to_signal"] = float((inv.flatten(release) - signal).norm() / signal.norm())
        return dict(kind="attack_inversion", config=config, seed=seed, noise_multiplier_dpsgd=z,
                    train_indices=order[:batch_size].tolist(), originals=_as_bytes(batches[0][0]),
                    defences=found, wall_time_s=time.perf_counter() - started, provenance=provenance("cpu"))

    if name == "quick":
        return run()
    return results.load_or_run("attack_inversion", config, run, allow_run=allow_run)
