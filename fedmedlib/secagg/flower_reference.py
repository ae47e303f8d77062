"""Run Flower's own SecAgg+ (SecAggPlusWorkflow + secaggplus_mod) on synthetic updates, to cross-check.

Used by tests/test_secagg_flower.py (same aggregate within quantization error) and
benchmarks/secagg.py (per-round wall time). Flower 1.42 offers SecAgg+ only through its legacy
workflow API (flwr.server.workflow, flwr.client.mod), so that is what this module drives.

References:
    Bell et al., CCS 2020 (SecAgg+); Flower 1.42 SecAggPlusWorkflow / secaggplus_mod.
"""

import time
from collections.abc import Sequence

import numpy as np

_UPDATE_CACHE: dict = {}  # per Ray worker: generate each client's update once, not every round


def synthetic_update(client_id: int, length: int, seed: int = 0) -> np.ndarray:
    """A deterministic stand-in for a model update (float32, N(0, 0.1^2)), the same in every process."""
    key = (client_id, length, seed)
    if key not in _UPDATE_CACHE:
        _UPDATE_CACHE[key] = np.random.default_rng([seed, client_id]).normal(0, 0.1, length).astype(np.float32)
    return _UPDATE_CACHE[key]


def flower_round_times(num_clients: int, length: int, weights: Sequence[int], *, rounds: int = 2,
                       secagg: bool = True, num_shares: int = 5, reconstruction_threshold: int = 4,
                       max_weight: float = 1000.0, seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """Run `rounds` Flower rounds in simulation; return (last aggregate, wall time of each round).

    Every client sends synthetic_update(client, length, seed) with num_examples = weights[client].
    Round 1 includes Ray start-up; time later rounds. `num_shares` must be odd (Flower bug).
    """
    import ray
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import Context, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.simulation import run_simulation

    if secagg and num_shares % 2 == 0 and num_shares < num_clients:
        raise ValueError(f"num_shares={num_shares} is even: Flower 1.42 crashes on that; use an odd count")
    weights = [int(w) for w in weights]

    class UpdateClient(NumPyClient):
        def __init__(self, client_id: int):
            self.client_id = client_id

        def fit(self, parameters, config):
            return [synthetic_update(self.client_id, length, seed)], weights[self.client_id], {}

    def client_fn(context: Context):
        return UpdateClient(int(context.node_config["partition-id"])).to_client()

    class TimedFedAvg(FedAvg):
        starts, ends, aggregate = {}, {}, None

        def configure_fit(self, server_round, parameters, client_manager):
            self.starts[server_round] = time.perf_counter()
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round, results, failures):
            aggregated = super().aggregate_fit(server_round, results, failures)
            self.ends[server_round] = time.perf_counter()
            TimedFedAvg.aggregate = parameters_to_ndarrays(aggregated[0])[0]
            return aggregated

    strategy = TimedFedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=num_clients,
                           min_available_clients=num_clients,
                           initial_parameters=ndarrays_to_parameters([np.zeros(length, np.float32)]))
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
        fit = SecAggPlusWorkflow(num_shares=num_shares, reconstruction_threshold=reconstruction_threshold,
                                 max_weight=max_weight) if secagg else None
        DefaultWorkflow(fit_workflow=fit)(grid, legacy)

    client_app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod] if secagg else [])
    try:
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=num_clients,
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    finally:
        if ray.is_initialized():
            ray.shutdown()
    if len(TimedFedAvg.ends) != rounds:
        raise RuntimeError(f"Flower finished {len(TimedFedAvg.ends)} of {rounds} rounds; see its log above")
    times = [TimedFedAvg.ends[r] - TimedFedAvg.starts[r] for r in range(1, rounds + 1)]
    return TimedFedAvg.aggregate, times
