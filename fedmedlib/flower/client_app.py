"""The Flower ClientApp: one hospital's local update, the very `Federation.local_update` of `fedmedlib.fl`.

A SuperNode's `partition-id` (node config) names its hospital in the `Experiment`'s partition; the
experiment itself arrives with every training message, so client and server cannot disagree on it.
The app speaks two formats: the Message API (`arrays` + `config`) for plain FedAvg, and Flower's legacy
`fitins.*` / `fitres.*` records, which `SecAggPlusWorkflow` and `secaggplus_mod` still require.

Differential privacy: the experiment's `dp` mode runs through the very plug of `fedmedlib.fl.modes` that the
in-process engine uses — its client half here (`local_train` = DP-SGD, `privatize_update` = clipping and
local or distributed noise), its server half (`weight`, `server_noise`, `spent`) in the ServerApp. A DP
client sends the released update (new − global), not its weights, so that the server aggregates exactly what
the in-process engine aggregates. DP-SGD's per-hospital state (accountant history, steps spent, noise
generator) lives in the SuperNode's `Context.state` between rounds: the plug object is rebuilt per message,
as a deployed ClientApp is.

Mods order: SecAgg+ must be the OUTER mod and any DP mod inside it (`[secaggplus_mod, dp_mod]`), so
that DP acts on the model before it is masked; the reverse order (the authors' code) makes the DP
mod look for parameters in SecAgg+'s setup message and fail with `KeyError 'fitins.parameters'`.

References:
    Flower 1.42 `flwr.clientapp.ClientApp`, `secaggplus_mod`, `LocalDpMod`; Flower example fl-dp-sa.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat

from .. import fl
from ..fl.modes import make_private
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
                   root=None, private=None) -> tuple[np.ndarray, int, float | None]:
    """Run `Federation.local_update` for one hospital; return (vector, training images, loss).

    Without DP the vector is the new flat model. With a DP plug (`plugs.make_private(exp)`) it is the released
    update: `local_update` trains through the plug's `local_train` (DP-SGD) and the update then goes through
    its `privatize_update` (clip + noise), exactly as `fl.run_federated` does.
    """
    if not 0 <= partition_id < exp.n_clients:
        raise ValueError(f"partition-id {partition_id} is outside the experiment's hospitals 0..{exp.n_clients - 1}")
    fed = federation(exp, root)
    hospital = fed.hospitals[partition_id]
    start = torch.as_tensor(np.asarray(global_flat, dtype=np.float32), device=fed.device)
    fed.private = private  # the cached Federation serves every round: the plug is this message's only
    try:
        update, loss = fed.local_update(hospital, start, rnd)
    finally:
        fed.private = None
    if private is None:
        # The trained weights themselves (local_update leaves them in fed.model), not start + update: the server's
        # new - start is then bit for bit the in-process engine's update, and Flower's DP mods see real weights.
        return wire.flat_to_numpy(fl.get_flat(fed.model)), len(hospital.train_idx), loss
    if hasattr(private, "privatize_update"):
        update = private.privatize_update(update, partition_id, rnd)
    return wire.flat_to_numpy(update), len(hospital.train_idx), loss


def restore_dp_state(context: Context, private, exp: fl.Experiment, partition_id: int) -> None:
    """Hand a freshly built plug this hospital's DP state from earlier rounds, kept in `Context.state`."""
    if not hasattr(private, "load_state_dict") or wire.DP_STATE not in context.state.config_records:
        return
    saved = context.state.config_records[wire.DP_STATE]
    if saved["experiment"] != exp.hash() or int(saved["partition"]) != partition_id:
        raise RuntimeError(f"this SuperNode's DP state belongs to experiment {saved['experiment']} / hospital "
                           f"{saved['partition']}, not {exp.hash()} / {partition_id}: start a new run")
    private.load_state_dict({partition_id: dict(
        steps=int(saved["steps"]), history=[tuple(h) for h in json.loads(str(saved["history"]))],
        generator=torch.frombuffer(bytearray(saved["generator"]), dtype=torch.uint8).clone())})


def save_dp_state(context: Context, private, exp: fl.Experiment, partition_id: int) -> None:
    """Keep this hospital's DP state (steps, accountant history, generator) in `Context.state` for next round."""
    if not hasattr(private, "state_dict") or partition_id not in (state := private.state_dict()):
        return
    mine = state[partition_id]
    context.state[wire.DP_STATE] = ConfigRecord({
        "experiment": exp.hash(), "partition": partition_id, "steps": int(mine["steps"]),
        "history": json.dumps([list(h) for h in mine["history"]]),  # floats survive JSON exactly (repr)
        "generator": mine["generator"].numpy().tobytes()})


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


def train(msg: Message, context: Context, *, has_dp_mod: bool = False) -> Message:
    """Train handler: global model + round + experiment in, new model (or DP update) + num-examples out."""
    if _is_legacy(msg):
        fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        config, (global_flat,) = fitins.config, parameters_to_ndarrays(fitins.parameters)
    else:
        config = msg.content[wire.CONFIG]
        global_flat = msg.content[wire.ARRAYS][wire.FLAT].numpy()
    exp = wire.experiment_from_json(str(config[wire.EXPERIMENT]))
    pid = _partition_id(context, exp)
    private = None
    if exp.dp != "none":
        if has_dp_mod:
            raise ValueError(f"this ClientApp has a Flower DP mod and the experiment asks for dp={exp.dp!r}: the "
                             "update would be privatized twice. Use make_client_app() without dp_mod (fedmedlib's "
                             "plug runs every dp mode), or the mod with dp='none'")
        private = make_private(exp)
        if exp.dp != "distributed_dpsgd":  # its state (optimizer, EMA, steps) is the server's alone
            restore_dp_state(context, private, exp, pid)
    if exp.dp == "distributed_dpsgd":  # one DP-SGD step's share: no local training, no local state
        fed = federation(exp, config.get(wire.DATA_ROOT) or None)
        start = torch.as_tensor(np.asarray(global_flat, dtype=np.float32), device=fed.device)
        vector = wire.flat_to_numpy(private.gaussian_share(fed, pid, start, int(config[wire.ROUND])))
        n, loss = len(fed.hospitals[pid].train_idx), None
    else:
        vector, n, loss = train_hospital(exp, pid, global_flat, int(config[wire.ROUND]),
                                         config.get(wire.DATA_ROOT) or None, private=private)
    if exp.dp != "distributed_dpsgd":
        save_dp_state(context, private, exp, pid)
    metrics = {wire.NUM_EXAMPLES: n, wire.PARTITION: pid}
    if loss is not None:  # DP-SGD does not report its noisy loss
        metrics[wire.TRAIN_LOSS] = float(loss)
    if private is not None and not hasattr(private, "server_noise") and exp.dp != "distributed_dpsgd":
        # record-level DP-SGD accounts per hospital; client-level and distributed DP account on the server
        metrics[wire.EPSILON] = float(private.spent())
    if _is_legacy(msg):
        # SecAgg+ weighs each client by num_examples: the plug's weight where it has one (client-level: 1)
        weight = private.weight(pid, float(n)) if hasattr(private, "weight") else n
        res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([vector]), int(round(weight)), metrics)
        return Message(compat.fitres_to_recorddict(res, keep_input=True), reply_to=msg)
    key = wire.FLAT if private is None else wire.UPDATE
    content = RecordDict({wire.ARRAYS: ArrayRecord({key: Array(vector)}), wire.METRICS: MetricRecord(metrics)})
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
    """A ClientApp with mods `[secagg_when_asked, dp_mod]`: DP inside SecAgg+, never outside.

    `dp_mod` is for Flower's own DP mods on a `dp='none'` experiment; the experiment's `dp` modes need none.
    """
    app = ClientApp(mods=[secagg_when_asked])
    handler = train if dp_mod is None else (lambda msg, context: train(msg, context, has_dp_mod=True))
    app.train(mods=[dp_mod] if dp_mod is not None else None)(handler)  # per-handler mods run inside app mods
    app.query()(query)
    return app


app = make_client_app()
