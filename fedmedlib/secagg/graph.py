"""SecAgg+'s sparse masking graph (a shuffled ring, k neighbours each) and the round's checks.

References:
    Bell et al., CCS 2020 (k = O(log n) neighbours in a random graph suffice; a Harary graph).
    Bonawitz et al., CCS 2017 (the complete graph, k = n - 1).
"""

import math

import numpy as np


def default_num_neighbours(num_clients: int, threshold: int) -> int:
    """k: even, >= 2 log2(n) as Bell et al. scale it, >= threshold for dropout slack, <= n - 1."""
    wanted = max(threshold, math.ceil(2 * math.log2(max(num_clients, 2))))
    wanted += wanted % 2  # the ring gives k/2 neighbours on each side
    return min(wanted, num_clients - 1)


def check_round(num_clients: int, threshold: int, num_neighbours: int) -> None:
    """Raise ValueError naming the fix if (n, t, k) cannot run a sound round."""
    if not isinstance(threshold, int) or threshold < 2:
        raise ValueError(
            f"threshold must be an integer >= 2, got {threshold!r}; with 1 a single share "
            "reveals a client's secret"
        )
    if num_clients < threshold:
        raise ValueError(
            f"threshold={threshold} exceeds the {num_clients} clients: lower threshold or add clients"
        )
    if not isinstance(num_neighbours, int) or not 1 <= num_neighbours <= num_clients - 1:
        raise ValueError(f"num_neighbours must be in [1, {num_clients - 1}], got {num_neighbours!r}")
    if num_neighbours % 2 and num_neighbours != num_clients - 1:
        raise ValueError(
            f"num_neighbours={num_neighbours} is odd: the ring gives k/2 neighbours on each side, "
            f"so use an even k or k = n - 1 = {num_clients - 1} (classic SecAgg)"
        )
    if threshold > num_neighbours + 1:
        raise ValueError(
            f"threshold={threshold} exceeds the {num_neighbours + 1} share holders of each client "
            f"(num_neighbours={num_neighbours} plus itself): lower threshold or raise num_neighbours"
        )


def ring_neighbours(
    client_ids: list[int], num_neighbours: int, rng: np.random.Generator
) -> dict[int, tuple[int, ...]]:
    """Place clients on a ring in random order; each neighbours the k/2 nearest on each side."""
    n = len(client_ids)
    if num_neighbours == n - 1:  # complete graph: classic SecAgg
        return {u: tuple(v for v in client_ids if v != u) for u in client_ids}
    # A random order (Bell et al.) so neighbourhoods do not follow client ids; a semi-honest
    # server draws it honestly, a malicious one could pick it (see the chapter's caveats).
    order = [client_ids[i] for i in rng.permutation(n)]
    half = num_neighbours // 2
    neighbours = {}
    for position, u in enumerate(order):
        around = {order[(position + offset) % n] for offset in range(-half, half + 1) if offset}
        neighbours[u] = tuple(sorted(around))
    return dict(sorted(neighbours.items()))
