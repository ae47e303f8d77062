"""Federated learning in one process: the experiment, the FedAvg engine, the DP and SecAgg+ modes it plugs in.

Rooms: `experiment` (what defines a run, its hash), `engine` (hospitals, rounds, checkpoints), `modes` (DP
readings and SecAgg+ as plugs), `distributed` (the round that is one centralized DP-SGD step), `parallel` (all
hospitals in one vmap), `flat` (model ↔ vector). The engine's public face is handed on here.
"""

from .engine import Federation, Hospital, hospital_indices, images_per_round, play_round, round_rng, run_federated
from .experiment import AGGREGATORS, DP_MODES, Experiment
from .flat import get_flat, set_flat, weighted_mean

__all__ = ["AGGREGATORS", "DP_MODES", "Experiment", "Federation", "Hospital", "get_flat", "hospital_indices",
           "images_per_round", "play_round", "round_rng", "run_federated", "set_flat", "weighted_mean"]
