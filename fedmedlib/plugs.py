"""Turn an Experiment's `dp` and `aggregator` settings into the objects the FedAvg loop plugs in.

References:
    fedmedlib.privacy (DP modes), fedmedlib.secagg (SecAgg+ aggregation).
"""

from __future__ import annotations


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
        aggregator = SecAggAggregator(threshold=exp.secagg_threshold, num_neighbours=exp.secagg_neighbours)
    return private, aggregator
