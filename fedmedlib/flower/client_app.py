"""The Flower ClientApp: one hospital's local update, the very `Federation.local_update` of `fedmedlib.fl`.

A SuperNode's `partition-id` (node config) names its hospital in the `Experiment`'s partition; the
experiment itself arrives with every training message, so client and server cannot disagree on it.
The app speaks two formats: the Message API (`arrays` + `config`) for plain FedAvg, and Flower's legacy
`fitins.*` / `fitres.*` records, which `SecAggPlusWorkflow` and `secaggplus_mod` still require.

Mods order: SecAgg+ must be the OUTER mod and any DP mod inside it (`[secaggplus_mod, dp_mod]`), so
that DP acts on the model before it is masked; the reverse order (the authors' code) makes the DP
mod look for parameters in SecAgg+'s setup message and fail with `KeyError 'fitins.parameters'`.

References:
    Flower 1.42 `flwr.clientapp.ClientApp`, `secaggplus_mod`, `LocalDpMod`; Flower example fl-dp-sa.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat

from .. import fl
from . import wire

_FEDERATIONS: dict[tuple, fl.Federation] = {}  # one per (experiment, data root) in this process


def federation(exp: fl.Experiment, root=None) -> fl.Federation:
    """The same data, partition and seeds as the in-process engine, built once per process and reused."""
    key = (exp.hash(), str(root))
    if key not in _FEDERATIONS:
        _FEDERATIONS.clear()  # keep one: a long-lived SuperNode serves one run at a time
        _FEDERATIONS[key] = fl.Federation(exp, device="cpu" if not torch.cuda.is_available() else "auto",
                                          root=root)
    return _FEDERATIONS[key]


def train_hospital(exp: fl.Experiment, partition_id: int, global_flat: np.ndarray, rnd: int,
                   root=None) -> tuple[np.ndarray, int, float]:
    """Run `Federation.local_update` for one hospital; return (new flat model, training images, loss)."""
    if not 0 <= partition_id < exp.n_clients:
        raise ValueError(f"partition-id {partition_id} is outside the experiment's hospitals 0..{exp.n_clients - 1}")
    fed = federation(exp, root)
    hospital = fed.hospitals[partition_id]
    start = torch.as_tensor(np.asarray(global_flat, dtype=np.float32), device=fed.device)
    _, loss = fed.local_update(hospital, start, rnd)
    # The trained weights themselves (local_update leaves them in fed.model), not start + update: the server's
    # new - start is then bit for bit the in-process engine's update, and Flower's DP mods see real weights.
    return wire.flat_to_numpy(fl.get_flat(fed.model)), len(hospital.train_idx), loss


def _partition_id(context: Context, exp: fl.Experiment | None = None) -> int:
    config = context.node_config
    if "partition-id" not in config:
        raise ValueError("this SuperNode has no 'partition-id' in its node config: start it with "
                         "--node-config \"partition-id=<hospital> num-partitions=<hospitals>\"")
    if exp is not None and "num-partitions" in config and int(config["num-partitions"]) != exp.n_clients:
        raise ValueError(f"node config says num-partitions={config['num-partitions']} but the experiment has "
                         f"{exp.n_clients} hospitals")
    return int(config["partition-id"])


def _is_legacy(msg: Message) -> bool:
    return "fitins.parameters" in msg.content.array_records


def train(msg: Message, context: Context) -> Message:
    """Train handler: global model + round + experiment in, new model + num-examples out (either format)."""
    if _is_legacy(msg):
        fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        config, (global_flat,) = fitins.config, parameters_to_ndarrays(fitins.parameters)
    else:
        config = msg.content[wire.CONFIG]
        global_flat = msg.content[wire.ARRAYS][wire.FLAT].numpy()
    exp = wire.experiment_from_json(str(config[wire.EXPERIMENT]))
    pid = _partition_id(context, exp)
    new, n, loss = train_hospital(exp, pid, global_flat, int(config[wire.ROUND]), config.get(wire.DATA_ROOT) or None)
    metrics = {wire.NUM_EXAMPLES: n, wire.TRAIN_LOSS: float(loss), wire.PARTITION: pid}
    if _is_legacy(msg):
        res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([new]), n, metrics)
        return Message(compat.fitres_to_recorddict(res, keep_input=True), reply_to=msg)
    content = RecordDict({wire.ARRAYS: ArrayRecord({wire.FLAT: Array(new)}), wire.METRICS: MetricRecord(metrics)})
    return Message(content, reply_to=msg)


def query(msg: Message, context: Context) -> Message:
    """Query handler: which hospital this SuperNode is (the server maps node ids to partitions with it)."""
    return Message(RecordDict({wire.METRICS: MetricRecord({wire.PARTITION: _partition_id(context)})}),
                   reply_to=msg)


def secagg_when_asked(msg: Message, context: Context, call_next) -> Message:
    """`secaggplus_mod` for SecAgg+ rounds only, so that one ClientApp serves plain and secure rounds."""
    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


def make_client_app(dp_mod=None) -> ClientApp:
    """A ClientApp with mods `[secagg_when_asked, dp_mod]`: DP inside SecAgg+, never outside."""
    app = ClientApp(mods=[secagg_when_asked])
    app.train(mods=[dp_mod] if dp_mod is not None else None)(train)  # per-handler mods run inside app mods
    app.query()(query)
    return app


app = make_client_app()
