"""The Flower ServerApp: FedAvg weighted by examples over `exp.rounds`, plain or through Flower's SecAgg+.

It plays the rounds exactly as `fl.run_federated` does — the same client sampling and dropouts
(`Federation.sample`), the same weights (training images), the same aggregate (`fl.weighted_mean`), the
same central evaluation (`Federation.evaluate_global`) — and returns a history of the same shape.
SecAgg+ rounds go through `SecAggPlusWorkflow`, which still speaks Flower's legacy strategy interface; a
small strategy hands it our sampled clients and keeps the securely aggregated mean.

Under a DP mode the server holds the server half of the same `fedmedlib.fl.modes` object the in-process engine
uses: its `weight` (client-level: uniform), its `server_noise` (client-level: central noise or the top-up for
missing distributed shares) and its accountant. Clients send released updates and, where they account
themselves (DP-SGD, update-level LDP), the ε spent so far; the history's `epsilon` is the in-process value.

References:
    McMahan et al., AISTATS 2017 (FedAvg); Bell et al., CCS 2020 (SecAgg+); Flower 1.42 `flwr.serverapp`,
    `flwr.server.workflow.SecAggPlusWorkflow`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import FedAvg
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp import Grid, ServerApp

from .. import fl
from ..experiments.runs import with_provenance
from ..fl.modes import make_private
from . import wire


@dataclass(frozen=True)
class SecAggSettings:
    """Flower SecAgg+ settings; defaults are Flower's (clipping range ±8, 2^22 levels, modulus 2^32)."""

    num_shares: int  # Shamir shares per client = its ring neighbours incl. itself; must be odd (Flower bug)
    threshold: int  # shares needed to unmask a client: tolerates num_shares - threshold dropouts per ring
    max_weight: float | None = None  # None = the largest hospital's training images: weight ratio ≤ 1
    clipping_range: float = 8.0  # each weighted parameter is clipped to ±8 before quantization
    quantization_range: int = 2**22  # 4,194,304 integer levels over [-8, 8]: step 16 / 2^22 ≈ 3.8e-6
    timeout: float | None = None  # seconds to wait per stage (None = forever)


def check_secagg(exp: fl.Experiment, settings: SecAggSettings) -> None:
    """Refuse settings that Flower 1.42 would crash on, or that cannot unmask, with the reason."""
    k = max(1, int(round(exp.fraction_fit * exp.n_clients)))  # clients asked per round, as in Federation.sample
    s, t = settings.num_shares, settings.threshold
    if k < 2:
        raise ValueError(f"SecAgg+ needs at least 2 clients per round; this experiment samples {k}")
    if s <= 2:
        raise ValueError(f"num_shares must be at least 3 (Flower refuses 2 and reads 1 as 'all'), got {s}")
    if s % 2 == 0 and s < k:
        raise ValueError(
            f"num_shares={s} is even and smaller than the {k} clients per round: Flower 1.42 sends {s} to the "
            f"clients, then silently builds rings of {s + 1} neighbours, so every client makes {s} Shamir shares "
            f"for {s + 1} neighbours and crashes with IndexError. Use an odd num_shares, e.g. {s + 1} or {s - 1}")
    if t > k:
        raise ValueError(f"threshold={t} exceeds the {k} clients per round: no client could ever be unmasked")
    if not 2 <= t < s:
        raise ValueError(f"threshold must satisfy 2 <= threshold < num_shares (Flower), got {t} of {s}")


def secagg_tolerance(settings: SecAggSettings, weights: list[float], max_weight: float) -> float:
    """Worst-case |SecAgg+ mean - exact mean| per parameter for one round.

    Client i quantizes (w_i / W)·x_i with stochastic rounding, an error below one step 2·c / Q; the server
    divides the sum by Σ w_i / W, so the mean is off by at most n · (2c / Q) / Σ(w_i / W).
    """
    step = 2 * settings.clipping_range / settings.quantization_range
    return len(weights) * step / (sum(weights) / max_weight)


class _Chosen(FedAvg):
    """Legacy strategy for one SecAgg+ round: asks exactly our sampled nodes and keeps the mean they give."""

    def __init__(self, instructions):
        super().__init__(fraction_evaluate=0.0)
        self.instructions, self.mean, self.failures, self.losses, self.epsilons = instructions, None, [], [], []

    def configure_fit(self, server_round, parameters, client_manager):
        return self.instructions

    def aggregate_fit(self, server_round, results, failures):
        self.failures = failures
        ordered = sorted((r.metrics[wire.PARTITION], r.metrics.get(wire.TRAIN_LOSS)) for _, r in results)
        self.losses = [loss for _, loss in ordered]
        self.epsilons = [r.metrics[wire.EPSILON] for _, r in results if wire.EPSILON in r.metrics]
        if results:  # SecAgg+ wrote the same securely aggregated weighted mean into every result
            self.mean = parameters_to_ndarrays(results[0][1].parameters)[0]
        return None, {}


def _config(exp: fl.Experiment, rnd: int, root) -> dict:
    config = {wire.ROUND: rnd, wire.EXPERIMENT: wire.experiment_to_json(exp)}
    if root is not None:
        config[wire.DATA_ROOT] = str(root)  # simulation convenience; deployed SuperNodes use FEDMED_DATA
    return config


def partition_map(grid: Grid, exp: fl.Experiment, timeout: float | None = 120.0) -> dict[int, int]:
    """Ask every SuperNode which hospital it is; return {partition id: node id}, all hospitals present."""
    deadline = time.time() + (timeout or 1e9)
    while len(node_ids := list(grid.get_node_ids())) < exp.n_clients and time.time() < deadline:
        time.sleep(0.5)
    messages = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY) for n in node_ids]
    found = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        if reply.has_error():
            raise RuntimeError(f"SuperNode {reply.metadata.src_node_id} failed to say its partition: {reply.error}")
        found[int(reply.content[wire.METRICS][wire.PARTITION])] = reply.metadata.src_node_id
    missing = sorted(set(range(exp.n_clients)) - set(found))
    if missing:
        raise RuntimeError(f"no SuperNode serves hospital(s) {missing}; connected partitions: {sorted(found)}")
    return found


def _weight(private, cid: int, n_examples: float) -> float:
    """The aggregation weight of `fl.run_federated`: the plug's where it has one, else training images."""
    return private.weight(cid, n_examples) if hasattr(private, "weight") else n_examples


def _plain_round(grid, exp, nodes, cids, global_np, rnd, root, private):
    content = lambda: RecordDict({wire.ARRAYS: ArrayRecord({wire.FLAT: Array(global_np)}),  # noqa: E731
                                  wire.CONFIG: ConfigRecord(_config(exp, rnd, root))})
    messages = [Message(content(), dst_node_id=nodes[c], message_type=MessageType.TRAIN, group_id=str(rnd))
                for c in cids]
    replies, epsilons, start = {}, [], torch.from_numpy(global_np)
    for reply in grid.send_and_receive(messages):
        if reply.has_error():
            raise RuntimeError(f"round {rnd}: SuperNode {reply.metadata.src_node_id} failed: {reply.error}")
        metrics, arrays = reply.content[wire.METRICS], reply.content[wire.ARRAYS]
        # a DP client sends its released update; a plain one its new weights (the update is new - start)
        update = (torch.from_numpy(arrays[wire.UPDATE].numpy()) if wire.UPDATE in arrays
                  else torch.from_numpy(arrays[wire.FLAT].numpy()) - start)
        cid = int(metrics[wire.PARTITION])
        replies[cid] = (update, _weight(private, cid, float(metrics[wire.NUM_EXAMPLES])), metrics.get(wire.TRAIN_LOSS))
        if wire.EPSILON in metrics:
            epsilons.append(float(metrics[wire.EPSILON]))
    ordered = [replies[c] for c in sorted(replies)]  # the in-process engine's order: by hospital id
    mean = fl.weighted_mean([u for u, _, _ in ordered], [w for _, w, _ in ordered])
    return mean, [loss for _, _, loss in ordered], {"aggregator": "flower-plain"}, epsilons


def _secagg_round(grid, context, exp, nodes, cids, global_np, rnd, root, settings, max_weight):
    fitins = FitIns(ndarrays_to_parameters([global_np]), _config(exp, rnd, root))
    run_id = context.run_id
    strategy = _Chosen([(GridClientProxy(nodes[c], grid, run_id), fitins) for c in cids])
    legacy = LegacyContext(context, strategy=strategy)
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: rnd})
    legacy.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(fitins.parameters, True)
    SecAggPlusWorkflow(settings.num_shares, settings.threshold, max_weight=max_weight,
                       clipping_range=settings.clipping_range, quantization_range=settings.quantization_range,
                       timeout=settings.timeout)(grid, legacy)
    if strategy.mean is None:
        raise RuntimeError(f"round {rnd}: SecAgg+ halted (too few clients or shares); failures: {strategy.failures}")
    mean = torch.from_numpy(strategy.mean.astype(np.float32))
    if exp.dp == "none":  # plain clients mask their weights; DP clients their released updates
        mean = mean - torch.from_numpy(global_np)
    return mean, strategy.losses, {"aggregator": "flower-secagg+", "num_shares": settings.num_shares,
                                   "threshold": settings.threshold, "max_weight": float(max_weight)}, strategy.epsilons


def _epsilon(private, reported: list[float]) -> float:
    """ε spent so far, as `private.spent()` in process: the server's accountant where the noise is the server's
    (client-level DP), else the largest ε any hospital has reported (each accounts its own budget)."""
    if hasattr(private, "server_noise"):
        return private.spent()
    return max(reported, default=0.0)


def run_server(grid: Grid, context: Context, exp: fl.Experiment, *, secagg: SecAggSettings | None = None,
               root=None) -> tuple[dict, torch.Tensor]:
    """Play `exp.rounds` rounds over the SuperNodes of `grid`; return (history as `fl.run_federated`, model)."""
    started = time.perf_counter()
    if secagg is not None:
        check_secagg(exp, secagg)
    private = make_private(exp) if exp.dp != "none" else None  # the server half: weight, server_noise, spent
    fed = fl.Federation(exp, device="cpu", root=root)  # the server's copy: sampling, initial model, evaluation
    if exp.dp == "distributed_dpsgd":
        return _run_distributed(grid, context, exp, fed, private, secagg, root, started)
    nodes = partition_map(grid, exp)
    sizes = [_weight(private, h.cid, float(len(h.train_idx))) for h in fed.hospitals]
    max_weight = (secagg.max_weight or max(sizes)) if secagg else None
    global_flat = fl.get_flat(fed.model).clone()
    history, best, reported = [], None, []
    for rnd in range(1, exp.rounds + 1):
        t0 = time.perf_counter()
        chosen, dropped = fed.sample(rnd)
        survivors = [c for c in chosen if c not in dropped]
        global_np, info, losses = wire.flat_to_numpy(global_flat), {}, []
        if survivors:
            if secagg is None:
                mean, losses, info, epsilons = _plain_round(grid, exp, nodes, survivors, global_np, rnd, root,
                                                            private)
            else:
                mean, losses, info, epsilons = _secagg_round(grid, context, exp, nodes, survivors, global_np, rnd,
                                                             root, secagg, max_weight)
                info["tolerance"] = secagg_tolerance(secagg, [sizes[c] for c in survivors], max_weight)
            if hasattr(private, "server_noise"):
                mean = private.server_noise(mean, rnd, len(survivors))
            reported += epsilons
            global_flat = global_flat + mean.to(global_flat.dtype)
        metrics = fed.evaluate_global(global_flat)
        losses = [x for x in losses if x is not None]
        record = dict(round=rnd, clients=chosen, dropped=dropped, aggregated=len(survivors),
                      train_loss=float(np.mean(losses)) if losses else None, **metrics,
                      seconds=time.perf_counter() - t0, **info)
        if private is not None:
            record["epsilon"] = _epsilon(private, reported)
        history.append(record)
        if best is None or metrics["val_accuracy"] > best["val_accuracy"]:
            best = record
    history_dict = with_provenance(fed.summary(history, best, started, engine="flower"))
    return history_dict, global_flat


def _run_distributed(grid, context, exp, fed, private, secagg, root, started):
    """dp='distributed_dpsgd' on Flower: each round one DP-SGD step whose noise shares only Flower's SecAgg+ sum
    carries in full; the server's step, EMA and accounting are the in-process plug's (`fl.distributed`)."""
    from ..fl.distributed import FLOWER_GUARANTEE

    if secagg is None:
        raise ValueError("dp='distributed_dpsgd' splits the noise across hospitals: in the clear the server would "
                         "see each hospital's under-noised input. Run it with SecAgg+ (secagg=true)")
    private.setup(fed)
    if secagg.threshold < private.plan.min_survivors:
        raise ValueError(f"SecAgg+ threshold {secagg.threshold} is below the {private.plan.min_survivors} survivors "
                         "the noise is calibrated for: raise the threshold or the experiment's secagg_threshold")
    nodes = partition_map(grid, exp)
    global_flat = fl.get_flat(fed.model).clone()
    history, best = [], None
    for rnd in range(1, exp.rounds + 1):
        t0 = time.perf_counter()
        chosen, dropped = fed.sample(rnd)
        survivors = [c for c in chosen if c not in dropped]
        record = dict(round=rnd, clients=chosen, dropped=dropped, aggregated=0, train_loss=None,
                      guarantee=FLOWER_GUARANTEE)
        if (too_few := private.begin_round(survivors)) is not None:
            record["aborted"] = too_few
        else:
            mean, _, info, _ = _secagg_round(grid, context, exp, nodes, survivors, wire.flat_to_numpy(global_flat),
                                             rnd, root, secagg, 1.0)
            # uniform weights: SecAgg+ returned the mean of the survivors' inputs; their sum is the noisy gradient
            global_flat = private.server_step_gradient(mean.double().numpy() * len(survivors), global_flat)
            record.update(info, aggregated=len(survivors))
        private.end_round(fed, record, global_flat, rnd)  # the in-process post-processing, the same code
        if "val_accuracy" in record and (best is None or record["val_accuracy"] > best["val_accuracy"]):
            best = record
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
    return with_provenance(dict(fed.summary(history, best, started, engine="flower"), privacy=private.audit())), \
        global_flat


def make_server_app(exp: fl.Experiment, *, secagg: SecAggSettings | None = None, root=None,
                    result: dict | None = None) -> ServerApp:
    """A ServerApp for one experiment; (history, final model) land in `result["history"]`, `result["flat"]`."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        history, flat = run_server(grid, context, exp, secagg=secagg, root=root)
        if result is not None:
            result.update(history=history, flat=flat)

    return app


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """`flwr run` entry: the experiment and SecAgg+ settings come from [tool.flwr.app.config]."""
    config = dict(context.run_config)
    exp = wire.experiment_from_run_config(config)
    secagg = None
    if config.get("secagg", exp.aggregator == "secagg"):
        secagg = SecAggSettings(int(config.get("num-shares", exp.secagg_neighbours or exp.n_clients)),
                                int(config.get("threshold", exp.secagg_threshold)),
                                max_weight=float(config["max-weight"]) if config.get("max-weight") else None)
    history, _ = run_server(grid, context, exp, secagg=secagg, root=config.get("data-root") or None)
    print(json.dumps({k: history[k] for k in ("experiment_hash", "best_round", "test_accuracy_at_best_val",
                                              "test_accuracy_last", "wall_time_s")}))
