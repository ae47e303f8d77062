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
        from .secagg import SecAggAbort

        try:
            mean, info = self.inner.aggregate(vectors, sizes,
                                              dropped={"before_masked_input": gone} if gone else None)
        except SecAggAbort as abort:
            # Too few survivors to unmask: the protocol aborts and this round changes nothing.
            return None, dict(aggregator="secagg", aborted=str(abort))
        summary = dict(aggregator="secagg", secagg_error_bound=float(info.error_bound),
                       secagg_clipped_fraction=float(info.clipped_fraction), secagg_weight_sum=int(info.weight_sum))
        return torch.from_numpy(np.asarray(mean, dtype=np.float32)).to(updates[0].device), summary


def make_plugs(exp):
    """(private, aggregator) for `fl.run_federated`; None means no DP / aggregation in the clear."""
    private = None
    if exp.dp != "none":
        try:
            from .privacy import make_private
        except ImportError as err:
            raise ValueError(f"dp={exp.dp!r} needs fedmedlib.privacy, which this installation lacks") from err
        private = make_private(exp)
    aggregator = None
    if exp.aggregator == "secagg":
        try:
            from .secagg import SecAggAggregator
        except ImportError as err:
            raise ValueError("aggregator='secagg' needs fedmedlib.secagg, which this installation lacks") from err
        aggregator = EngineSecAgg(SecAggAggregator(threshold=exp.secagg_threshold,
                                                   num_neighbours=exp.secagg_neighbours, seed=exp.seed))
    return private, aggregator
