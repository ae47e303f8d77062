"""Flower path: the in-process engine's client update as a Flower ClientApp, FedAvg/SecAgg+ as a ServerApp.

`run_flower_simulation(exp)` runs an `Experiment` on Flower's simulation engine; `flwr run .` runs the
same apps (`client_app:app`, `server_app:app`, configured in pyproject.toml) on the deployment engine.

References:
    Beutel et al., "Flower: A Friendly Federated Learning Research Framework", arXiv 2007.14390 (2020).
"""

from .client_app import make_client_app, train_hospital
from .server_app import SecAggSettings, check_secagg, make_server_app, run_server, secagg_tolerance
from .simulation import dp_mod_for, run_flower_simulation

__all__ = ["SecAggSettings", "check_secagg", "dp_mod_for", "make_client_app", "make_server_app",
           "run_flower_simulation", "run_server", "secagg_tolerance", "train_hospital"]
