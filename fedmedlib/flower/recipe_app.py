"""A Flower ClientApp that trains the tutorial way (DataLoader + Opacus hooks): the benchmark's Flower baseline.

The server is the project's own ServerApp (`server_app.make_server_app`) on a `dp='none'` experiment: these
clients send their new weights and the server averages them, as the paper's code does with Flower's
LocalDpMod-free FedAvg; the DP-SGD happens inside each client, with the noise multipliers handed over.

References:
    Flower 1.42 `flwr.clientapp.ClientApp`; fedmedlib.experiments.opacus_tutorial (the recipe itself).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from ..experiments.opacus_tutorial import opacus_local_update
from . import wire
from .client_app import _partition_id, federation, query


def _train(msg: Message, context: Context, *, noise_multipliers: dict[int, float] | None) -> Message:
    config = msg.content[wire.CONFIG]
    exp = wire.experiment_from_json(str(config[wire.EXPERIMENT]))
    pid, rnd = _partition_id(context, exp), int(config[wire.ROUND])
    fed = federation(exp, config.get(wire.DATA_ROOT) or None)
    h = fed.hospitals[pid]
    start = torch.as_tensor(np.asarray(msg.content[wire.ARRAYS][wire.FLAT].numpy(), dtype=np.float32))
    sigma = None if noise_multipliers is None else noise_multipliers[pid]
    new = opacus_local_update(exp, start, fed.x[h.train_idx], fed.y[h.train_idx], noise_multiplier=sigma,
                              seed=exp.seed * 1000 + rnd * 100 + pid)
    metrics = MetricRecord({wire.NUM_EXAMPLES: len(h.train_idx), wire.PARTITION: pid})
    return Message(RecordDict({wire.ARRAYS: ArrayRecord({wire.FLAT: Array(wire.flat_to_numpy(new))}),
                               wire.METRICS: metrics}), reply_to=msg)


def make_recipe_client_app(noise_multipliers: dict[int, float] | None = None) -> ClientApp:
    """ClientApp whose hospitals train with `opacus_tutorial.opacus_local_update` (σ per hospital: DP on)."""
    app = ClientApp()
    app.train()(functools.partial(_train, noise_multipliers=noise_multipliers))
    app.query()(query)
    return app
