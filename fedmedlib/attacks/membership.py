"""Membership inference audit: can an attacker tell whether an image was in a model's training set?

Each audit trains `n_models` models, each on a random half of one data pool; every model is in turn the
target, and the others are the attacker's reference models (leave-one-out, as in Carlini et al.).
Two attacks score every (target model, pool image) pair: the target's loss (Yeom et al.) and offline
LiRA (the image's logit-scaled confidence, standardised by the reference models that did NOT train on it).

References:
    Shokri, Stronati, Song & Shmatikov, "Membership Inference Attacks Against ML Models", IEEE S&P 2017.
    Yeom, Giacomelli, Fredrikson & Jha, "Privacy Risk in Machine Learning", IEEE CSF 2018 (loss attack).
    Carlini et al., "Membership Inference Attacks From First Principles", IEEE S&P 2022 (LiRA, offline
    variant with a global variance for few reference models).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.nn import functional as F

from ..privacy import mechanisms
from .. import privacy
from ..models import build_model
from ..train import evaluate, train_epoch
from . import metrics

DEFENCES = ("none", "update_ldp", "update_ldp_no_noise", "dpsgd")
# A log-spaced FPR grid on which ROC curves are stored compactly in result files.
FPR_GRID = tuple(float(f) for f in np.logspace(-4, 0, 41))


@dataclass(frozen=True)
class Defence:
    """How the audited models are trained: no DP, the paper's update-level noise (as coded, or as run
    on Flower < 1.14 with the noise dropped — a bug reproduction), or record-level DP-SGD at `epsilon`."""

    name: str = "none"
    epsilon: float | None = None  # dpsgd only: the (ε, δ) the accountant plans for all epochs

    def __post_init__(self):
        if self.name not in DEFENCES:
            raise ValueError(f"unknown defence {self.name!r}: choose one of {DEFENCES}")
        if (self.name == "dpsgd") != (self.epsilon is not None):
            raise ValueError("give epsilon for defence 'dpsgd' (e.g. Defence('dpsgd', 6.0)) and only for it")

    @property
    def label(self) -> str:
        if self.name == "dpsgd":
            return f"DP-SGD ε={self.epsilon:g}"
        return {"none": "no DP", "update_ldp": "update noise (as coded)",
                "update_ldp_no_noise": "clip only (as run, Flower < 1.14)"}[self.name]


@dataclass(frozen=True)
class AuditSettings:
    """Sizes of one audit; presets with reasons live in fedmedlib.attacks.experiments."""

    pool_size: int = 1000
    n_models: int = 8
    epochs: int = 12
    width: int = 16
    batch_size: int = 32
    dp_batch_size: int = 64
    lr: float = 1e-3
    clip: float = privacy.PAPER_CLIP
    delta: float = privacy.PAPER_DELTA
    eval_subset: int = 500

    def __post_init__(self):
        if self.n_models < 4 or self.n_models % 2:
            raise ValueError(f"n_models must be even and >= 4 (half the targets calibrate the ε audit, half "
                             f"test it; each needs reference models), got {self.n_models}")
        if self.pool_size < 4 or self.pool_size % 2:
            raise ValueError(f"pool_size must be even and >= 4 (each model trains on half), got {self.pool_size}")


def logit_confidence(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256):
    """(φ, loss) per image: φ = log(p_y / (1 − p_y)), LiRA's roughly Gaussian statistic, and cross-entropy."""
    model.eval()
    phis, losses = [], []
    with torch.no_grad():
        for s in range(0, len(x), batch_size):
            logits, target = model(x[s:s + batch_size]).double(), y[s:s + batch_size]
            true = logits.gather(1, target[:, None]).squeeze(1)
            others = logits.scatter(1, target[:, None], -torch.inf).logsumexp(1)  # stable log(1 − p_y) + lse
            phis.append(true - others)
            losses.append(F.cross_entropy(logits, target, reduction="none"))
    return torch.cat(phis).cpu().numpy(), torch.cat(losses).cpu().numpy()


def random_halves(n_models: int, pool_size: int, seed: int) -> np.ndarray:
    """(n_models, pool_size) membership matrix: each row marks a uniformly random half of the pool."""
    rng = np.random.default_rng(seed)
    members = np.zeros((n_models, pool_size), dtype=bool)
    for row in members:
        row[rng.permutation(pool_size)[:pool_size // 2]] = True
    return members


def _update_level(net, x, y, s: AuditSettings, seed: int, drop_noise: bool) -> dict:
    # One "round" = one local epoch from the current weights with a fresh Adam (the paper's client); the
    # whole update is clipped to C and, unless the noise is dropped, N(0, σ²) is added per parameter.
    gen, shuffle = torch.Generator().manual_seed(seed + 7), torch.Generator().manual_seed(seed)
    for _ in range(s.epochs):
        old = {k: v.clone() for k, v in net.state_dict().items()}
        train_epoch(net, torch.optim.Adam(net.parameters(), lr=s.lr), x, y, batch_size=s.batch_size,
                    generator=shuffle)
        update = mechanisms.model_update(net.state_dict(), old)
        if drop_noise:
            released, _ = mechanisms.clip_update(update, s.clip)  # BUG REPRODUCTION of Flower < 1.14
        else:
            released, _ = mechanisms.update_ldp(update, clip=s.clip, generator=gen)
        net.load_state_dict(mechanisms.vector_to_state(mechanisms.state_to_vector(old) + released, old))
    if drop_noise:
        return dict(accounted_epsilon=float("inf"))
    coded = mechanisms.as_coded_guarantee(s.epochs, clip=s.clip, delta=s.delta)
    # One record changes a clipped update by up to 2C (both lie in the ball of radius C): the record-level
    # guarantee is the "replace one" column, z = σ / 2C, composed over the rounds.
    return dict(accounted_epsilon=coded["epsilon_composed_replace_one"], sigma=coded["sigma"])


def train_model(x: torch.Tensor, y: torch.Tensor, defence: Defence, s: AuditSettings, seed: int):
    """One audited model trained on (x, y) under `defence`; returns (model, info with the accounted ε)."""
    torch.manual_seed(seed)
    if defence.name == "dpsgd":
        from ..privacy.dpsgd import RecordLevelDP

        dp = RecordLevelDP(len(x), rounds=s.epochs, epsilon=defence.epsilon, delta=s.delta, clip=s.clip,
                           batch_size=s.dp_batch_size, width=s.width, lr=s.lr, seed=seed, device=x.device)
        net = dp.build()
        net.load_state_dict(dp.train_round(net.state_dict(), x, y, epochs=s.epochs))
        return net, dict(accounted_epsilon=dp.epsilon_spent, noise_multiplier=dp.noise_multiplier,
                         sample_rate=dp.sample_rate, steps=dp.steps_done)
    net = build_model("dpresnet", width=s.width).to(x.device)
    if defence.name == "none":
        opt, shuffle = torch.optim.Adam(net.parameters(), lr=s.lr), torch.Generator().manual_seed(seed)
        for _ in range(s.epochs):
            train_epoch(net, opt, x, y, batch_size=s.batch_size, generator=shuffle)
        return net, dict(accounted_epsilon=float("inf"))
    return net, _update_level(net, x, y, s, seed, drop_noise=defence.name == "update_ldp_no_noise")


def lira_offline(phi: np.ndarray, members: np.ndarray, target: int) -> np.ndarray:
    """Offline LiRA score of every pool image against model `target`: (φ_target − μ_out) / σ_out.

    μ_out is the image's mean φ over reference models that did not train on it; σ_out is one global
    standard deviation (Carlini et al.'s advice with few reference models). Higher = more likely a member.
    """
    if phi.shape != members.shape or not 0 <= target < len(phi):
        raise ValueError(f"phi {phi.shape} and members {members.shape} must match, and target must index a model")
    refs = np.delete(np.arange(len(phi)), target)
    out = ~members[refs]
    if not out.any():
        raise ValueError("no reference model left any image out: LiRA's offline variant needs OUT models")
    counts = out.sum(0)
    global_mean = phi[refs][out].mean()
    mu = np.where(counts > 0, (phi[refs] * out).sum(0) / np.maximum(counts, 1), global_mean)
    spread = (phi[refs] - mu)[out].std() + 1e-8
    return (phi[target] - mu) / spread


def summarise_attack(scores: np.ndarray, members: np.ndarray, delta: float) -> dict:
    """AUC, TPR at 1 % and 0.1 % FPR, a compact ROC, and the audited ε over (targets, images) pairs.

    `scores` and `members` are (targets, images); even-numbered targets choose the audit's threshold and
    odd-numbered ones prove ε with it, so the bound is not fitted to the data that certifies it.
    """
    flat_s, flat_m = scores.reshape(-1), members.reshape(-1)
    audit = metrics.audit_epsilon(scores[0::2], members[0::2], scores[1::2], members[1::2], delta)
    return dict(auc=metrics.roc_auc(flat_s, flat_m), tpr_at_1pct_fpr=metrics.tpr_at_fpr(flat_s, flat_m, 0.01),
                tpr_at_01pct_fpr=metrics.tpr_at_fpr(flat_s, flat_m, 0.001), fpr_grid=list(FPR_GRID),
                tpr_grid=metrics.tpr_on_grid(flat_s, flat_m, FPR_GRID), audit=audit, pairs=int(flat_m.size))


def audit(x_pool, y_pool, x_test, y_test, defence: Defence, settings: AuditSettings, seed: int = 0,
          progress: bool = False) -> dict:
    """Train `n_models` models on random halves of the pool under `defence`, attack each, report all metrics."""
    if len(x_pool) != settings.pool_size or len(y_pool) != settings.pool_size:
        raise ValueError(f"the pool holds {len(x_pool)} images and {len(y_pool)} labels; settings say "
                         f"pool_size={settings.pool_size}")
    started = time.perf_counter()
    members = random_halves(settings.n_models, settings.pool_size, seed)
    phi, loss = np.zeros(members.shape), np.zeros(members.shape)
    models = []
    for k, row in enumerate(members):
        idx = torch.from_numpy(np.flatnonzero(row)).to(x_pool.device)
        net, info = train_model(x_pool[idx], y_pool[idx], defence, settings, seed=seed * 1000 + k)
        phi[k], loss[k] = logit_confidence(net, x_pool, y_pool)
        info.update(test_accuracy=evaluate(net, x_test, y_test)["accuracy"],
                    train_accuracy=evaluate(net, x_pool[idx], y_pool[idx])["accuracy"])
        models.append(info)
        if progress:
            print(f"{defence.label}: model {k + 1}/{len(members)} test acc {info['test_accuracy']:.3f}", flush=True)
    lira = np.stack([lira_offline(phi, members, t) for t in range(len(members))])
    attacks = {"loss": summarise_attack(-loss, members, settings.delta),
               "lira_offline": summarise_attack(lira, members, settings.delta)}
    return dict(defence=asdict(defence), label=defence.label, settings=asdict(settings), models=models,
                accounted_epsilon=float(np.mean([m["accounted_epsilon"] for m in models])),
                test_accuracy=float(np.mean([m["test_accuracy"] for m in models])),
                train_accuracy=float(np.mean([m["train_accuracy"] for m in models])),
                attacks=attacks, seconds=time.perf_counter() - started)
