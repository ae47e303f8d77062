"""One SecAgg+ round driven stage by stage: setup -> advertise keys -> share keys -> masked input -> unmask.

Each client masks its input with a self mask and with pairwise masks agreed with its k graph
neighbours; Shamir shares of the self-mask seed and of the mask key let the server remove the
masks of clients that drop out. The result is the sum of the inputs that reached the server.

References:
    Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017.
    Bell et al., "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS 2020.
"""

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .client import Client
from .graph import default_num_neighbours
from .messages import DROPOUT_STAGES, ServerView
from .server import Server


def normalise_dropouts(dropped: Mapping[str, Sequence[int]] | None, num_clients: int) -> dict[str, set[int]]:
    """Check a {stage: client ids} dropout plan and return it with every stage present."""
    plan = {stage: set() for stage in DROPOUT_STAGES}
    seen = set()
    for stage, ids in (dropped or {}).items():
        if stage not in plan:
            raise ValueError(f"unknown dropout stage {stage!r}; use one of {DROPOUT_STAGES}")
        for client in ids:
            if not isinstance(client, int | np.integer) or not 0 <= client < num_clients:
                raise ValueError(f"dropped client {client!r} is not a client id in [0, {num_clients})")
            if client in seen:
                raise ValueError(f"client {client} is listed under two dropout stages; a client drops once")
            seen.add(int(client))
            plan[stage].add(int(client))
    return plan


def run_round(
    vectors: Sequence[np.ndarray],
    *,
    modulus_bits: int,
    threshold: int,
    num_neighbours: int | None = None,
    dropped: Mapping[str, Sequence[int]] | None = None,
    round_id: int = 0,
    rng: np.random.Generator | None = None,
    workers: int = 1,
    consume_inputs: bool = False,
) -> tuple[np.ndarray, ServerView]:
    """Run a round among clients 0..n-1 holding `vectors`; return (sum mod 2^m, the server's view).

    `dropped` maps a stage of DROPOUT_STAGES to the clients that go silent just before it.
    `workers` > 1 computes the clients' masked inputs in threads (AES and numpy release the GIL).
    `consume_inputs` lets clients mask their input arrays in place instead of copying them.
    """
    n = len(vectors)
    plan = normalise_dropouts(dropped, n)
    num_neighbours = default_num_neighbours(n, threshold) if num_neighbours is None else num_neighbours
    length = len(vectors[0]) if n and hasattr(vectors[0], "__len__") else 0
    server = Server(range(n), threshold=threshold, num_neighbours=num_neighbours, modulus_bits=modulus_bits,
                    vector_length=length, round_id=round_id, rng=rng, workers=workers)
    clients = {u: Client(u, vector, round_id, consume_inputs) for u, vector in enumerate(vectors)}
    alive = set(clients)

    def answer(method: str, requests):
        live = [r for r in requests if r.recipient in alive]
        if workers > 1 and method == "masked_input":
            with ThreadPoolExecutor(workers) as pool:
                return list(pool.map(lambda r: clients[r.recipient].masked_input(r), live))
        return [getattr(clients[r.recipient], method)(r) for r in live]

    broadcasts = server.advertise_keys(answer("setup", server.setup()))
    alive -= plan["before_share_keys"]
    forwarded = server.share_keys(answer("share_keys", broadcasts))
    alive -= plan["before_masked_input"]
    unmask_requests = server.masked_input(answer("masked_input", forwarded))
    alive -= plan["before_unmask"]
    return server.unmask(answer("unmask", unmask_requests)), server.view
