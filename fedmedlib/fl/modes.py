"""Turn an Experiment's `dp` and `aggregator` settings into the objects the FedAvg loop plugs in.

References:
    fedmedlib.privacy (DP modes), fedmedlib.secagg (SecAgg+ aggregation).
"""

from __future__ import annotations

import numpy as np
import torch


class EngineSecAgg:
    """Adapts fedmedlib.secagg's aggregator to the engine: torch vectors, client ids, dict info.

    Clients that dropped out this round took part in the key set-up but never sent a masked input:
    they enter the protocol as such (a placeholder row the server never sees), so every round exercises
    SecAgg+'s dropout recovery exactly as a real deployment would.
    """

    def __init__(self, inner):
        self.inner = inner

    def aggregate(self, updates, weights, *, clients, dropped=()):
        order = sorted(list(clients) + list(dropped))
        by_client = dict(zip(clients, zip(updates, weights)))
        placeholder = np.zeros(updates[0].numel(), dtype=np.float32)
        vectors = [by_client[c][0].detach().cpu().numpy() if c in by_client else placeholder for c in order]
        sizes = [by_client[c][1] if c in by_client else 1.0 for c in order]
        gone = [i for i, c in enumerate(order) if c not in by_client]
        from ..secagg import SecAggAbort

        try:
            mean, info = self.inner.aggregate(vectors, sizes,
                                              dropped={"before_masked_input": gone} if gone else None)
        except SecAggAbort as abort:
            # Too few survivors to unmask: the protocol aborts and this round changes nothing.
            return None, dict(aggregator="secagg", aborted=str(abort))
        summary = dict(aggregator="secagg", secagg_error_bound=float(info.error_bound),
                       secagg_clipped_fraction=float(info.clipped_fraction), secagg_weight_sum=int(info.weight_sum))
        return torch.from_numpy(np.asarray(mean, dtype=np.float32)).to(updates[0].device), summary


def _generator(seed_parts, device) -> torch.Generator:
    seed = int(np.random.default_rng(list(seed_parts)).integers(2**62))
    return torch.Generator(device=device).manual_seed(seed)


class RecordLevelPlug:
    """'As claimed': each hospital runs DP-SGD whose noise covers all its rounds × local epochs at (ε, δ)."""

    def __init__(self, exp):
        from ..privacy import PrivacyLedger

        self.exp, self.ledger, self.hospitals, self._pending = exp, PrivacyLedger(delta=exp.delta), {}, {}

    def hospital(self, cid, n_records: int, device):
        """Hospital `cid`'s DP-SGD state (noise calibrated for all its rounds), built on first use."""
        from ..privacy.dpsgd import RecordLevelDP

        exp = self.exp
        if cid not in self.hospitals:
            self.hospitals[cid] = RecordLevelDP(
                n_records, rounds=exp.rounds, local_epochs=exp.local_epochs, epsilon=exp.epsilon, delta=exp.delta,
                clip=exp.clip, batch_size=min(exp.batch_size, n_records), model=exp.model, width=exp.width,
                lr=exp.lr, seed=exp.seed * 100_003 + cid, hospital=cid, ledger=self.ledger, device=device,
                precision=exp.precision, multiplicity=exp.multiplicity, optimizer=exp.local_optimizer)
            if cid in self._pending:  # resuming: restore the spent budget and the noise stream
                saved, dp = self._pending.pop(cid), self.hospitals[cid]
                dp.steps_done, dp.accountant.history = saved["steps"], list(saved["history"])
                dp.generator.set_state(saved["generator"])
        return self.hospitals[cid]

    def local_train(self, model, x, y, cid, rnd, generator) -> float | None:
        dp = self.hospital(cid, len(x), x.device)
        model.load_state_dict(dp.train_round(model.state_dict(), x, y))
        return None  # DP-SGD's noisy loss is not reported

    def spent(self) -> float:
        """The largest ε any hospital has spent so far (each has its own budget)."""
        return max((h.epsilon_spent for h in self.hospitals.values()), default=0.0)

    def audit(self) -> dict:
        """Per hospital, what an auditor needs to recompute its ε: noise multiplier, sample rate, steps, δ."""
        return dict(accountant="prv", delta=self.exp.delta, epsilon_target=self.exp.epsilon, hospitals={
            str(cid): dict(n_records=h.n_records, noise_multiplier=h.noise_multiplier, sample_rate=h.sample_rate,
                           steps=h.steps_done, delta=h.delta, accountant=h.accountant_name,
                           epsilon=h.epsilon_spent) for cid, h in sorted(self.hospitals.items())})

    def state_dict(self) -> dict:
        return {cid: dict(steps=h.steps_done, history=list(h.accountant.history),
                          generator=h.generator.get_state()) for cid, h in self.hospitals.items()}

    def load_state_dict(self, state: dict) -> None:
        self._pending = dict(state)  # applied when each hospital's DP object is first built on resume


class UpdateLevelPlug:
    """'As coded': clip each whole update to C, add N(0, σ²) with σ from the classic formula, sensitivity 1.

    With `drop_noise` it reproduces Flower < 1.14 (BUG REPRODUCTION: noise computed, never applied).
    """

    def __init__(self, exp):
        from ..privacy import gaussian_sigma

        self.exp, self.sigma, self.rounds_done = exp, gaussian_sigma(exp.epsilon, exp.delta, 1.0), 0

    def privatize_update(self, update, cid, rnd):
        from ..privacy.mechanisms import update_ldp

        self.rounds_done = max(self.rounds_done, rnd)
        released, _ = update_ldp(update, clip=self.exp.clip, sigma=self.sigma, drop_noise=self.exp.drop_noise,
                                 generator=_generator((self.exp.seed, rnd, cid, 7), update.device))
        return released

    def spent(self) -> float:
        """The ε really spent so far: sensitivity is the clip norm, so z = σ / C, composed over rounds."""
        from ..privacy import gaussian_epsilon

        if self.rounds_done == 0:
            return 0.0
        return float("inf") if self.exp.drop_noise else gaussian_epsilon(self.sigma / self.exp.clip,
                                                                         self.exp.delta, self.rounds_done)


class ClientLevelPlug:
    """DP-FedAvg (McMahan et al. 2018): clip each update to S, uniform weights, noise z·S on the sum.

    'central': the server adds it. 'distributed': each selected client adds z·S/√n before (secure)
    aggregation; when only m < n survive, their shares sum to z·S·√(m/n) and the server tops up the rest
    (std z·S·√(1 − m/n)) — which trusts the server with that part; the history records how much.
    """

    def __init__(self, exp):
        from ..privacy import noise_multiplier

        self.exp = exp
        self.per_round = max(1, int(round(exp.fraction_fit * exp.n_clients)))
        self.sample_rate = self.per_round / exp.n_clients
        self.z = exp.noise_multiplier if exp.noise_multiplier is not None else noise_multiplier(
            exp.epsilon, exp.delta, self.sample_rate, exp.rounds)
        self.rounds_done = 0

    def weight(self, cid, n_examples) -> float:
        return 1.0  # example weights would make one hospital's sensitivity depend on its size

    def privatize_update(self, update, cid, rnd):
        from ..privacy.mechanisms import add_gaussian, clip_update

        clipped, _ = clip_update(update, self.exp.clip)
        if self.exp.noise_placement == "distributed":
            std = self.z * self.exp.clip / np.sqrt(self.per_round)
            clipped = add_gaussian(clipped, std, _generator((self.exp.seed, rnd, cid, 11), update.device))
        return clipped

    def server_noise(self, mean, rnd, survivors):
        from ..privacy.mechanisms import add_gaussian

        self.rounds_done = max(self.rounds_done, rnd)
        total = (self.z * self.exp.clip) ** 2
        present = total * survivors / self.per_round if self.exp.noise_placement == "distributed" else 0.0
        std_on_sum = float(np.sqrt(max(total - present, 0.0)))
        if std_on_sum == 0.0:
            return mean
        return add_gaussian(mean, std_on_sum / survivors, _generator((self.exp.seed, rnd, 13), mean.device))

    def spent(self) -> float:
        from ..privacy import epsilon

        return 0.0 if self.rounds_done == 0 else epsilon(self.z, self.exp.delta, self.sample_rate, self.rounds_done)


def make_private(exp):
    """The DP plug for `exp.dp`: record-level DP-SGD, update-level LDP as coded, client-level DP-FedAvg, or
    record-level DP-SGD with the noise split across hospitals under SecAgg+ (distributed_dpsgd)."""
    if exp.dp == "dpsgd" and exp.model != "dpresnet":
        raise ValueError(f"dp='dpsgd' needs per-sample gradients, which {exp.model} (BatchNorm) cannot give: "
                         "use model='dpresnet'")
    if exp.noise_placement not in ("central", "distributed"):
        raise ValueError(f"noise_placement must be 'central' or 'distributed', got {exp.noise_placement!r}")
    if exp.dp == "distributed_dpsgd":
        from .distributed import DistributedDPPlug

        return DistributedDPPlug(exp)
    return {"dpsgd": RecordLevelPlug, "update_ldp": UpdateLevelPlug, "client_level": ClientLevelPlug}[exp.dp](exp)


def make_plugs(exp):
    """(private, aggregator) for `fl.run_federated`; None means no DP / aggregation in the clear."""
    private = None
    if exp.dp != "none":
        private = make_private(exp)
    aggregator = None
    if exp.aggregator == "secagg":
        try:
            from ..secagg import SecAggAggregator
        except ImportError as err:
            raise ValueError("aggregator='secagg' needs fedmedlib.secagg, which this installation lacks") from err
        aggregator = EngineSecAgg(SecAggAggregator(threshold=exp.secagg_threshold,
                                                   num_neighbours=exp.secagg_neighbours, seed=exp.seed))
    return private, aggregator
