"""Entry points: exact secure_sum of integer vectors, secure_mean of float updates, an FL aggregator.

References:
    Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017.
    Bell et al., "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS 2020.
"""

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .client import check_input
from .masking import vector_dtype
from .messages import ServerView
from .protocol import run_round
from .quantize import (check_quantization, dequantize_mean, integer_weights, quantization_step, quantize,
                       weight_levels)

Dropouts = Mapping[str, Sequence[int]] | None


def secure_sum(int_vectors: Sequence[np.ndarray], *, modulus_bits: int = 32, threshold: int = 4,
               num_neighbours: int | None = None, dropped: Dropouts = None, seed: int | None = None,
               return_view: bool = False, round_id: int = 0, workers: int = 1,
               consume_inputs: bool = False):
    """Sum mod 2^m of the inputs of exactly the clients whose masked input reached the server.

    Client u holds int_vectors[u] (integers in [0, 2^m)). `dropped` maps "before_share_keys",
    "before_masked_input" or "before_unmask" to the client ids that go silent then. `seed` fixes
    the masking graph only; keys, seeds and masks always come from the OS CSPRNG.
    Raises SecAggAbort (never a wrong sum) if too few clients or shares remain.

    >>> import numpy as np
    >>> secure_sum([np.array([1, 2]), np.array([3, 4]), np.array([5, 6]), np.array([7, 8])]).tolist()
    [16, 20]
    """
    vector_dtype(modulus_bits)  # validates modulus_bits before any work
    if isinstance(int_vectors, np.ndarray) and int_vectors.ndim == 2:
        int_vectors = list(int_vectors)
    if not isinstance(int_vectors, Sequence) or len(int_vectors) == 0:
        raise ValueError("int_vectors must be a non-empty list of 1-D integer arrays, one per client")
    if not all(isinstance(vector, np.ndarray) for vector in int_vectors):
        raise TypeError("int_vectors must hold numpy arrays; wrap each input in np.asarray")
    length = len(int_vectors[0]) if int_vectors[0].ndim == 1 else 0
    for u, vector in enumerate(int_vectors):
        check_input(vector, length, modulus_bits, f"int_vectors[{u}]")
    total, view = run_round(int_vectors, modulus_bits=modulus_bits, threshold=threshold,
                            num_neighbours=num_neighbours, dropped=dropped, round_id=round_id,
                            rng=np.random.default_rng(seed), workers=workers,
                            consume_inputs=consume_inputs)
    return (total, view) if return_view else total


@dataclass
class SecureMeanInfo:
    """What a caller needs to report a secure mean: who is in it and how exact it is."""

    aggregated: tuple[int, ...]  # clients whose updates are in the mean
    excluded: tuple[int, ...]  # clients that dropped before their masked input arrived
    integer_weights: tuple[int, ...]  # the weights actually used, one per client
    weight_sum: int  # sum of integer weights of the aggregated clients (all the server learns)
    step: float  # width of one quantization level
    error_bound: float  # max |mean - exact weighted mean of the clipped updates|, per coordinate
    clipped_fraction: float  # share of coordinates that exceeded +-clip_range (clipping is not bounded)
    clip_range: float
    quant_bits: int
    modulus_bits: int
    view: ServerView | None = field(default=None, repr=False)


def secure_mean(updates: Sequence[np.ndarray], weights: Sequence[float], clip_range: float = 8.0,
                quant_bits: int = 16, *, modulus_bits: int = 32, threshold: int = 4,
                num_neighbours: int | None = None, dropped: Dropouts = None, max_weight: float | None = None,
                seed: int | None = None, return_view: bool = False, round_id: int = 0, workers: int = 1,
                buffers: list[np.ndarray] | None = None):
    """Weighted mean of float updates through quantization and secure_sum; returns (mean, info).

    Each client clips to +-clip_range, stochastically rounds to quant_bits, multiplies by its
    integer weight and appends that weight, so the server learns only the survivors' weighted sum
    and total weight. The mean is over info.aggregated; its error is below info.error_bound.
    `buffers` (one array of d + 1 integers per client) are overwritten instead of allocating new
    ones: reusing them across rounds saves the page faults of fresh memory.
    """
    check_quantization(clip_range, quant_bits, modulus_bits)
    if len(updates) == 0 or len(updates) != len(weights):
        raise ValueError(f"need one weight per update, got {len(updates)} updates and {len(weights)} weights")
    updates = [np.asarray(u) for u in updates]  # no copy for arrays
    length = len(updates[0]) if updates[0].ndim == 1 else -1
    if any(np.ndim(u) != 1 or len(u) != length for u in updates):
        shapes = sorted({u.shape for u in updates})
        raise ValueError(f"updates must be 1-D arrays of one length (flatten the model first); "
                         f"got shapes {shapes}")
    weights_int = integer_weights(weights, weight_levels(len(updates), quant_bits, modulus_bits), max_weight)
    client_rngs = np.random.default_rng(seed).spawn(len(updates) + 1)

    def encode(u: int) -> tuple[np.ndarray, int]:
        vector = np.empty(length + 1, dtype=vector_dtype(modulus_bits)) if buffers is None else buffers[u]
        _, clipped = quantize(updates[u], clip_range, quant_bits, client_rngs[u], modulus_bits,
                              weight=int(weights_int[u]), out=vector[:length])
        vector[length] = weights_int[u]  # the total weight is summed securely too
        return vector, clipped

    with ThreadPoolExecutor(max(workers, 1)) as pool:
        encoded = list(pool.map(encode, range(len(updates))))
    total, view = secure_sum([v for v, _ in encoded], modulus_bits=modulus_bits, threshold=threshold,
                             num_neighbours=num_neighbours, dropped=dropped, return_view=True,
                             round_id=round_id, workers=workers, seed=int(client_rngs[-1].integers(2**63)),
                             consume_inputs=True)
    weight_sum = int(total[length])
    mean = dequantize_mean(total[:length], weight_sum, clip_range, quant_bits, dtype=updates[0].dtype)
    aggregated = view.survivors
    # Integer weights move the mean by at most clip_range * sum |a_i - b_i| (normalised weights).
    requested = np.asarray(weights, dtype=np.float64)[list(aggregated)]
    used = weights_int[list(aggregated)].astype(np.float64)
    weight_shift = clip_range * np.abs(used / used.sum() - requested / requested.sum()).sum()
    output_rounding = clip_range * float(np.finfo(mean.dtype).eps)  # e.g. float32 output
    info = SecureMeanInfo(
        aggregated=aggregated, excluded=tuple(u for u in range(len(updates)) if u not in aggregated),
        integer_weights=tuple(int(w) for w in weights_int), weight_sum=weight_sum,
        step=quantization_step(clip_range, quant_bits),
        error_bound=quantization_step(clip_range, quant_bits) + float(weight_shift) + output_rounding,
        clipped_fraction=sum(c for _, c in encoded) / (len(updates) * max(length, 1)),
        clip_range=clip_range, quant_bits=quant_bits, modulus_bits=modulus_bits,
        view=view if return_view else None)
    return mean, info


@dataclass
class SecAggAggregator:
    """Drop-in `secagg` aggregator for the FL engine: `aggregate(updates, weights, dropped)`.

    Defaults follow the paper: threshold 4 and Flower's clipping range +-8; quant_bits=16 with
    modulus_bits=32 leaves room for >= 3,000 weight levels with 20 clients.
    """

    threshold: int = 4
    num_neighbours: int | None = None  # None: even k ~ 2 log2 n (Bell et al.); n - 1: classic SecAgg
    clip_range: float = 8.0
    quant_bits: int = 16
    modulus_bits: int = 32
    max_weight: float | None = None  # None: weights are relative to the largest in the round
    seed: int | None = None
    workers: int = 1
    rounds_run: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        check_quantization(self.clip_range, self.quant_bits, self.modulus_bits)
        self._rng = np.random.default_rng(self.seed)
        self._buffers: list[np.ndarray] = []  # one per client, reused while the shapes stay the same

    def _client_buffers(self, num_clients: int, length: int) -> list[np.ndarray]:
        shape, dtype = (length + 1,), vector_dtype(self.modulus_bits)
        if len(self._buffers) != num_clients or self._buffers[0].shape != shape:
            self._buffers = [np.empty(shape, dtype) for _ in range(num_clients)]
        return self._buffers

    def aggregate(self, updates: Sequence[np.ndarray], weights: Sequence[float],
                  dropped: Dropouts = None) -> tuple[np.ndarray, SecureMeanInfo]:
        """Weighted mean of the updates that reach the server; `dropped` uses list positions."""
        mean, info = secure_mean(updates, weights, self.clip_range, self.quant_bits,
                                 modulus_bits=self.modulus_bits, threshold=self.threshold,
                                 num_neighbours=self.num_neighbours, dropped=dropped,
                                 max_weight=self.max_weight, seed=int(self._rng.integers(2**63)),
                                 round_id=self.rounds_run, workers=self.workers,
                                 buffers=self._client_buffers(len(updates), len(updates[0])))
        self.rounds_run += 1
        return mean, info
