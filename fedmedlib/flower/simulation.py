"""One call from an `Experiment` to a Flower simulation: ServerApp + ClientApp on Ray, one CPU per client.

References:
    Flower 1.42 `flwr.simulation.run_simulation` (Ray backend; start-up ≈ 10 s, paid in round 1).
"""

from __future__ import annotations

import os
import warnings

from .. import fl
from ..fl.modes import make_private
from .client_app import make_client_app
from .server_app import SecAggSettings, check_secagg, make_server_app


def dp_mod_for(exp: fl.Experiment):
    """Flower's own `LocalDpMod` with the authors' `dp='update_ldp'` settings, for a hand-built ClientApp.

    `run_flower_simulation` does not need it: every dp mode runs there through fedmedlib's plug (same noise
    stream as the in-process engine). Put the mod on a `dp='none'` experiment's app, never on top of a plug.
    """
    if exp.dp == "none":
        return None
    if exp.dp != "update_ldp" or exp.drop_noise:
        raise ValueError(f"Flower's LocalDpMod only does dp='update_ldp' without drop_noise (Flower 1.42 applies "
                         f"its noise), got dp={exp.dp!r}, drop_noise={exp.drop_noise}: run this experiment with "
                         "run_flower_simulation(exp) or make_client_app() without a dp_mod, which use fedmedlib's "
                         "DP plug for every mode")
    from flwr.clientapp.mod import LocalDpMod

    # sensitivity 1 as in the authors' code (unrelated to the clip, see chapter 5); noise = sqrt(2 ln(1.25/δ))/ε
    return LocalDpMod(clipping_norm=exp.clip, sensitivity=1.0, epsilon=exp.epsilon, delta=exp.delta)


def run_flower_simulation(exp: fl.Experiment, *, secagg: bool | None = None, num_shares: int | None = None,
                          threshold: int | None = None, max_weight: float | None = None, root=None,
                          return_model: bool = False, verbose: bool = False, client_app=None):
    """Run `exp` as a Flower simulation; return the `fl.run_federated`-shaped history (and the model).

    `secagg=None` follows `exp.aggregator`; `num_shares` defaults to `exp.secagg_neighbours` or, when that
    is unset, to every client of a round (bumped to odd when needed); `threshold` to `exp.secagg_threshold`.
    `exp.dp` (dpsgd, update_ldp incl. drop_noise, client_level central or distributed) runs through the
    same `fedmedlib.fl.modes` object as `fl.run_federated`, split between the ClientApp and the ServerApp; each
    round of the history records `epsilon`. Bad SecAgg+ or DP settings raise ValueError here, before Ray
    starts. With `return_model=True` returns (history, final global flat vector). `client_app` replaces the
    project's ClientApp (e.g. `recipe_app.make_recipe_client_app()`, the benchmark's tutorial-style clients).

    Example (a few seconds plus Ray's ≈ 10 s start)::

        exp = Experiment(n_clients=3, scheme="iid", rounds=2, width=8, train_subset=240, eval_subset=100)
        history = run_flower_simulation(exp)
        history["rounds"][-1]["aggregator"]   # 'flower-plain'
    """
    secagg = exp.aggregator == "secagg" if secagg is None else secagg
    if exp.dp != "none":
        make_private(exp)  # a DP setting the plugs refuse is refused here, not inside a Ray worker
    settings = None
    if secagg:
        k = max(1, int(round(exp.fraction_fit * exp.n_clients)))
        shares = num_shares or exp.secagg_neighbours or (k if k % 2 else k + 1)
        threshold = threshold or max(2, min(exp.secagg_threshold, shares - 1, k))  # the paper's 4 where it fits
        settings = SecAggSettings(int(shares), int(threshold), max_weight=max_weight)
        check_secagg(exp, settings)
    result: dict = {}
    server = make_server_app(exp, secagg=settings, root=root, result=result)
    client = client_app or make_client_app()  # the DP plug (if any) runs inside its train handler
    from flwr.simulation import run_simulation

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        run_simulation(server_app=server, client_app=client, num_supernodes=exp.n_clients,
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                       "init_args": {"logging_level": "ERROR", "log_to_driver": verbose}},
                       verbose_logging=verbose)
    if "history" not in result:
        raise RuntimeError("the Flower simulation ended without a result: see the log above for the ServerApp error")
    return (result["history"], result["flat"]) if return_model else result["history"]
