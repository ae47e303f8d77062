"""What travels in a Flower message: record keys, the `Experiment` as JSON, the flat parameter vector.

Both apps import this module and nothing of each other, so a deployed ClientApp and ServerApp agree on
the format by construction.

References:
    Flower 1.42 Message API (`flwr.app.RecordDict`, `ArrayRecord`, `ConfigRecord`, `MetricRecord`).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from ..fl import Experiment

ARRAYS = "arrays"  # ArrayRecord, one entry: FLAT, the global (server -> client) or new (client -> server) model,
FLAT, UPDATE = "flat", "update"  # or, under a DP mode, UPDATE: the released update (new - global, clipped/noised)
CONFIG = "config"  # ConfigRecord: round, experiment JSON, optional data root (simulation only)
METRICS = "metrics"  # MetricRecord: num-examples, train-loss, partition-id; epsilon where the client accounts
ROUND, EXPERIMENT, DATA_ROOT = "server-round", "experiment", "data-root"
NUM_EXAMPLES, TRAIN_LOSS, PARTITION, EPSILON = "num-examples", "train-loss", "partition-id", "epsilon"
DP_STATE = "fedmed-dp-state"  # ConfigRecord in the ClientApp's Context.state: DP-SGD's budget across rounds

# Run-config keys (pyproject [tool.flwr.app.config]) that configure Flower itself, not the Experiment.
FLOWER_KEYS = ("secagg", "num-shares", "threshold", "max-weight", "data-root")


def _tuples(value):
    """JSON turns tuples into lists; the Experiment (frozen and hashed) wants its tuples back."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def experiment_to_json(exp: Experiment) -> str:
    return json.dumps(exp.to_dict(), sort_keys=True)


def experiment_from_json(text: str) -> Experiment:
    return Experiment(**{k: _tuples(v) for k, v in json.loads(text).items()})


def experiment_from_run_config(run_config: dict) -> Experiment:
    """`flwr run` settings (hyphenated keys, e.g. n-clients = 10) -> Experiment; unknown keys are an error."""
    fields = {f.name for f in dataclasses.fields(Experiment)}
    values, unknown = {}, []
    for key, value in run_config.items():
        if key in FLOWER_KEYS:
            continue
        name = key.replace("-", "_")
        if name not in fields:
            unknown.append(key)
        elif name in ("train_subset", "eval_subset", "noise_multiplier", "secagg_neighbours") and value in (0, ""):
            values[name] = None  # TOML has no null: 0 or "" means "not set" for the optional fields
        else:
            values[name] = _tuples(json.loads(value)) if isinstance(value, str) and value[:1] in "[(" else value
    if unknown:
        raise ValueError(f"unknown run-config keys {unknown}: use Experiment fields with '-' for '_' "
                         f"(e.g. n-clients) or one of {FLOWER_KEYS}")
    if run_config.get("secagg") and "aggregator" not in values:
        values["aggregator"] = "secagg"  # secagg=true runs Flower's SecAgg+: the experiment says so too
    return Experiment(**values)


def flat_to_numpy(flat) -> np.ndarray:
    """A torch or NumPy vector as a contiguous float32 NumPy array (what an ArrayRecord carries)."""
    array = flat.detach().cpu().numpy() if hasattr(flat, "detach") else np.asarray(flat)
    return np.ascontiguousarray(array, dtype=np.float32)
