"""'As it should be done': a FedAvg round that IS one centralized DP-SGD step over the union of the hospitals'
Poisson batches, with the noise split across hospitals under SecAgg+ (fedmedlib.privacy.skellam).

Each round every hospital samples its records at the same rate q, clips each per-sample gradient to C, sums,
quantizes and adds its Skellam noise share; SecAgg+ sums the integer vectors mod 2^m, and the server sees only
that sum: Σ clipped gradients + noise with multiplier z on the union batch, exactly a central DP-SGD step. The
server divides by the expected union batch q·N and takes an SGD-momentum step (cosine schedule, an EMA of the
weights for evaluation): post-processing of released sums, free in privacy.

Threat model: the server and anyone holding the final model see only the noisy sums (ε, δ)-DP for every
record; up to `colluding` hospitals may pool their own noise shares with the server and the guarantee still
holds, because shares are sized so that the honest survivors alone carry μ. A hospital sees its own data and the
global models, i.e. the same released sums. Unlike 'as claimed' (each hospital adds its full noise, safe even
without SecAgg), here SecAgg+ is what makes it private: a hospital's input alone carries only a share of the noise.

References:
    Heikkilä et al. 2020; Kairouz, Liu & Steinke 2021; Agarwal, Kairouz & Liu 2021 (see fedmedlib.privacy.skellam).
    Abadi et al., CCS 2016 (DP-SGD); De et al., arXiv 2204.13650 (2022): large batches, momentum, EMA.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

from ..privacy import skellam as ddp
from ..privacy.fastdp import LayerTape, clipped_gradient_sum
from .flat import get_flat, set_flat
from ..models import count_parameters

PHYSICAL_BATCH = 256  # records per forward pass: memory only, the sums are the same
FLOWER_GUARANTEE = ("continuous-noise approximation: Gaussian noise shares added before Flower's SecAgg+ "
                    "quantizes (2^22 levels over ±8) and sums mod 2^32; the (ε, δ) proof covers the real-valued "
                    "sum, not Flower's integer rounding and modular sum (the in-process engine's integer Skellam "
                    "shares are what the guarantee covers exactly)")


def union_plan(exp, n_records: int, dim: int) -> ddp.SkellamPlan:
    """The SkellamPlan of `exp` for hospitals holding `n_records` training records in all and a `dim`-parameter
    model: q = 1 / ⌈N / B⌉ (Opacus' convention, as the centralized recipe), one step per round."""
    if not 1 <= exp.batch_size <= n_records:
        raise ValueError(f"batch_size (the expected union batch) must lie in [1, {n_records}], got {exp.batch_size}")
    q = 1.0 / math.ceil(n_records / exp.batch_size)
    return ddp.SkellamPlan(n_hospitals=exp.n_clients, min_survivors=exp.secagg_threshold, clip=exp.clip, dim=dim,
                           sample_rate=q, steps=exp.rounds, epsilon=exp.epsilon, delta=exp.delta,
                           n_records=n_records, colluding=exp.colluding, scale_bits=exp.scale_bits,
                           bound=exp.subsampling_bound)


def hospital_clipped_sum(model, tape, x, y, clip: float) -> np.ndarray:
    """Σ_i clip_C(∇ℓ_i) over the records (x, y), flattened in parameter order (float64; zeros if none)."""
    params = [p for p in model.parameters() if p.requires_grad]
    total = torch.zeros(sum(p.numel() for p in params), dtype=torch.float64)
    for s in range(0, len(y), PHYSICAL_BATCH):
        sums, _, _ = clipped_gradient_sum(model, tape, x[s:s + PHYSICAL_BATCH], y[s:s + PHYSICAL_BATCH], clip)
        total += torch.cat([sums.get(p, torch.zeros_like(p)).reshape(-1) for p in params]).double().cpu()
    return total.numpy()


class DistributedDPPlug:
    """The engine plug of dp='distributed_dpsgd': `play_round` replaces the FedAvg round (see module doc)."""

    def __init__(self, exp):
        self.exp, self.plan, self._pending = exp, None, None
        self.steps_done = 0

    def prepare(self, fed) -> None:
        """Plan the noise for these hospitals (what a hospital needs to compute its input)."""
        if self.plan is None:
            n_records = sum(len(h.train_idx) for h in fed.hospitals)
            self.plan = union_plan(self.exp, n_records, count_parameters(fed.model))
            self.n_records, self.tape = n_records, LayerTape(fed.model)

    def weight(self, cid, n_examples) -> float:
        return 1.0  # the server needs the plain sum of the hospitals' inputs, not a size-weighted mean

    def setup(self, fed) -> None:
        """Plan the noise for these hospitals and build the server's optimizer (once, before round 1)."""
        exp = self.exp
        self.prepare(fed)
        self.server = copy.deepcopy(fed.model)
        self.optimizer = torch.optim.SGD(self.server.parameters(), lr=exp.lr, momentum=0.9)
        self.scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=exp.rounds)
                          if exp.schedule == "cosine" else None)
        self.ema = get_flat(fed.model).clone() if exp.ema else None
        if self._pending is not None:
            state, self._pending = self._pending, None
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            self.ema, self.steps_done = state["ema"], state["steps"]

    def sample(self, fed, cid: int, rnd: int):
        """Hospital `cid`'s Poisson sample of round `rnd`: each record in with probability q (its own stream)."""
        h = fed.hospitals[cid]
        seed = int(np.random.default_rng([self.exp.seed, rnd, cid + 1, 17]).integers(2**62))
        chosen = torch.rand(len(h.train_idx), generator=torch.Generator().manual_seed(seed)) < self.plan.sample_rate
        return h.train_idx[chosen.to(h.train_idx.device)]

    def clipped_sum(self, fed, cid: int, global_flat, rnd: int) -> np.ndarray:
        """Σ of hospital `cid`'s clipped per-record gradients at the global weights, over its round-`rnd` sample."""
        idx = self.sample(fed, cid, rnd)
        set_flat(fed.model, global_flat)
        fed.model.train()
        return hospital_clipped_sum(fed.model, self.tape, fed.x[idx], fed.y[idx], self.exp.clip)

    def noise_stream(self, cid: int, rnd: int) -> np.random.Generator:
        """The stream hospital `cid` rounds and draws its Skellam share from in round `rnd`."""
        return np.random.default_rng([self.exp.seed, rnd, cid + 1, 19])

    def hospital_input(self, fed, cid: int, global_flat, rnd: int):
        """Hospital `cid`'s SecAgg+ input for round `rnd` and its noise receipt."""
        clipped = self.clipped_sum(fed, cid, global_flat, rnd)
        return ddp.encode(clipped, self.plan, self.noise_stream(cid, rnd), hospital=cid)

    def play_round(self, fed, global_flat, rnd: int):
        """One DP-SGD step over the union batch through SecAgg+ -> (new global weights, round record)."""
        import time

        from ..secagg import SecAggAbort, secure_sum

        if self.plan is None:
            self.setup(fed)
        t0, exp, plan = time.perf_counter(), self.exp, self.plan
        chosen, dropped = fed.sample(rnd)
        survivors = [c for c in chosen if c not in dropped]
        record = dict(round=rnd, clients=chosen, dropped=dropped, aggregated=0, train_loss=None)
        if (too_few := self.begin_round(survivors)) is not None:
            record["aborted"] = too_few
        else:
            inputs = {c: self.hospital_input(fed, c, global_flat, rnd) for c in survivors}
            ddp.check_round([receipt for _, receipt in inputs.values()], plan)
            placeholder = np.zeros(plan.dim, dtype=np.uint32 if plan.modulus_bits == 32 else np.uint64)
            vectors = [inputs[c][0] if c in inputs else placeholder for c in chosen]
            gone = [i for i, c in enumerate(chosen) if c not in inputs]
            try:
                total = secure_sum(vectors, modulus_bits=plan.modulus_bits, threshold=exp.secagg_threshold,
                                   num_neighbours=exp.secagg_neighbours, round_id=rnd,
                                   dropped={"before_masked_input": gone} if gone else None,
                                   seed=int(np.random.default_rng([exp.seed, rnd, 23]).integers(2**62)))
            except SecAggAbort as abort:
                record["aborted"] = str(abort)
            else:
                global_flat = self.server_step(ddp.decode(total, plan), global_flat)
                record["aggregated"] = len(survivors)
                record["noise_std_on_sum"] = plan.noise_std(len(survivors))
        self.end_round(fed, record, global_flat, rnd)
        record["seconds"] = time.perf_counter() - t0
        return global_flat, record

    def begin_round(self, survivors) -> str | None:
        """Count the step; the reason to abort when fewer hospitals survive than the noise was calibrated for.
        A round is counted even if it aborts: conservative, and the schedule stays fixed. (In process and on
        Flower alike.)"""
        self.steps_done += 1
        if len(survivors) < self.plan.min_survivors:
            return (f"{len(survivors)} survivors < {self.plan.min_survivors}, the fewest the noise was calibrated "
                    "for: nothing released")
        return None

    def end_round(self, fed, record: dict, global_flat, rnd: int) -> None:
        """The server's post-processing after a round: the weight average, the evaluation when it is due, the ε
        spent so far — written into `record`."""
        exp = self.exp
        if self.ema is not None:
            self.ema = ema_update(self.ema, global_flat, exp.ema, self.steps_done)
        if rnd % exp.eval_every == 0 or rnd == exp.rounds:
            record.update(fed.evaluate_global(self.ema if self.ema is not None else global_flat))
            record["epsilon_gaussian_prv"] = self.epsilon_gaussian()
        record["epsilon"] = self.spent()

    def gaussian_share(self, fed, cid: int, global_flat, rnd: int) -> np.ndarray:
        """Hospital `cid`'s input on Flower's SecAgg+, which quantizes floats itself: its clipped sum plus a
        CONTINUOUS Gaussian share of the same variance, divided by q·N (so the secure sum is the noisy mean
        gradient). A continuous-noise approximation: the proof covers the real-valued sum, not Flower's
        stochastic rounding to 2^22 levels and its modular sum (`FLOWER_GUARANTEE`)."""
        self.prepare(fed)
        plan, clipped = self.plan, self.clipped_sum(fed, cid, global_flat, rnd)
        noise = np.random.default_rng([self.exp.seed, rnd, cid + 1, 29]).normal(
            0.0, math.sqrt(plan.share_variance) * plan.gamma, plan.dim)
        return (clipped + noise) / (plan.sample_rate * self.n_records)

    def server_step(self, noisy_sum: np.ndarray, global_flat):
        """SGD with momentum on the noisy mean gradient Σ / (q·N): post-processing of the released sum."""
        return self.server_step_gradient(noisy_sum / (self.plan.sample_rate * self.n_records), global_flat)

    def server_step_gradient(self, noisy_gradient: np.ndarray, global_flat):
        """The server's step on an already averaged noisy gradient (Flower's SecAgg+ path)."""
        set_flat(self.server, global_flat)
        grad = torch.from_numpy(np.asarray(noisy_gradient, dtype=np.float64)).float()
        offset = 0
        for p in self.server.parameters():
            p.grad = grad[offset:offset + p.numel()].view_as(p).to(p.device)
            offset += p.numel()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return get_flat(self.server).detach().clone()

    def spent(self) -> float:
        """ε of every record so far under the Skellam RDP bound (all hospitals alike: one union sample rate)."""
        return 0.0 if self.steps_done == 0 else self.plan.epsilon_for(self.plan.mu, self.steps_done)

    def epsilon_gaussian(self) -> float:
        """The continuous-Gaussian cross-check: PRV ε of a Gaussian with the same variance per unit sensitivity."""
        from .. import privacy

        return privacy.epsilon(self.plan.gaussian_equivalent, self.plan.delta, self.plan.sample_rate,
                               self.steps_done)

    def audit(self) -> dict:
        """Per hospital, what an auditor needs to recompute ε (the same for all: one q, one noise on the sum)."""
        if self.plan is None:
            return {}
        shared = self.plan.describe()
        return dict(shared, steps_done=self.steps_done, hospitals={
            str(c): dict(noise_multiplier=shared["gaussian_equivalent_noise_multiplier"],
                         sample_rate=self.plan.sample_rate, steps=self.steps_done, delta=self.plan.delta,
                         accountant="skellam_rdp", share_variance=self.plan.share_variance)
            for c in range(self.exp.n_clients)})

    def state_dict(self) -> dict:
        return dict(optimizer=self.optimizer.state_dict(), ema=self.ema, steps=self.steps_done,
                    scheduler=self.scheduler.state_dict() if self.scheduler is not None else None)

    def load_state_dict(self, state: dict) -> None:
        self._pending = state  # applied by setup(), once the hospitals are known


def ema_update(ema, flat, decay: float, step: int):
    # The warm-up of fedmedlib.privacy.recipe: a plain 0.999 average would stay near the initial weights for
    # the few hundred steps a run takes.
    decay = min(decay, (1 + step) / (10 + step))
    return ema.lerp(flat, 1.0 - decay)


def round_against_central(exp, *, device="cpu", root=None, rnd: int = 1, sample: int = 2000) -> dict:
    """One round of `exp` (dp='distributed_dpsgd') next to the centralized DP-SGD step it claims to be.

    Both start from the same model. Federated: each hospital's Poisson sample, clipped sum, quantization and
    Skellam share, summed by SecAgg+. Central: the union of the same samples, clipped per record, summed, plus
    the very noise the shares drew (replayed from their streams). The two sums agree to within the stochastic
    rounding, < 1 level (γ) per hospital and coordinate. Returns the bound, the largest gap, the noise std on the
    sum against z·C, and `sample` random coordinates of both sums (for a scatter plot).
    """
    from ..secagg import secure_sum
    from .engine import Federation

    plug = DistributedDPPlug(exp)
    fed = Federation(exp, device=device, root=root, private=plug)
    plug.setup(fed)
    plan, start = plug.plan, get_flat(fed.model).clone()
    inputs = [plug.hospital_input(fed, h.cid, start, rnd)[0] for h in fed.hospitals]
    federated = ddp.decode(secure_sum(inputs, threshold=exp.secagg_threshold, num_neighbours=exp.secagg_neighbours,
                                      seed=0), plan)
    noise = np.zeros(plan.dim)
    for h in fed.hospitals:
        replay = plug.noise_stream(h.cid, rnd)  # the stream ddp.encode drew from: rounding uniforms, then Skellam
        replay.random(plan.dim)
        noise += replay.poisson(plan.share_variance / 2, plan.dim) - replay.poisson(plan.share_variance / 2, plan.dim)
    union = torch.cat([plug.sample(fed, h.cid, rnd) for h in fed.hospitals])
    set_flat(fed.model, start)
    central = hospital_clipped_sum(fed.model, plug.tape, fed.x[union], fed.y[union], exp.clip) + noise * plan.gamma
    pick = np.random.default_rng(0).choice(plan.dim, size=min(sample, plan.dim), replace=False)
    return dict(hospitals=exp.n_clients, union_batch=len(union), expected_batch=plan.sample_rate * plug.n_records,
                max_gap=float(np.max(np.abs(federated - central))), bound=exp.n_clients * plan.gamma,
                noise_std_on_sum=float(np.std(noise) * plan.gamma), target_noise_std=plan.noise_multiplier * exp.clip,
                central_sample=central[pick], federated_sample=federated[pick])
