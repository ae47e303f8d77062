"""Masks mod 2^m expanded from 256-bit seeds with AES-256-CTR and added in cache-sized chunks.

References:
    Bonawitz et al., CCS 2017 (pairwise masks that cancel plus a self mask; the PRG).
    Bell et al., CCS 2020 (masks only with graph neighbours).
"""

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SEED_BYTES = 32  # AES-256 key = the whole seed; never a 32-bit seed (cf. Flower issue #7522)
# 2^18 elements (1-2 MiB) keep the accumulator slice and one keystream block in L2 cache,
# which made masking twice as fast as whole-vector passes on the reference CPU.
CHUNK_ELEMENTS = 1 << 18


def check_modulus_bits(modulus_bits: int) -> None:
    if not isinstance(modulus_bits, int | np.integer) or not 8 <= modulus_bits <= 64:
        raise ValueError(
            f"modulus_bits must be an integer in [8, 64], got {modulus_bits!r}; "
            "32 suits most models (arithmetic in uint32), 64 gives the most headroom"
        )


def vector_dtype(modulus_bits: int) -> np.dtype:
    """Smallest unsigned dtype whose natural wrap-around (mod 2^32 or 2^64) refines mod 2^m."""
    check_modulus_bits(modulus_bits)
    return np.dtype(np.uint32) if modulus_bits <= 32 else np.dtype(np.uint64)


def reduce_mod(vector: np.ndarray, modulus_bits: int) -> np.ndarray:
    """Reduce in place mod 2^m (a no-op when m equals the dtype's width)."""
    if modulus_bits < vector.dtype.itemsize * 8:
        np.bitwise_and(vector, vector.dtype.type((1 << modulus_bits) - 1), out=vector)
    return vector


def keystream(seed: bytes, byte_offset: int = 0):
    """AES-256-CTR keystream of `seed`, positioned at `byte_offset` (a multiple of 16)."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a mask seed has {SEED_BYTES} bytes (256 bits), got {len(seed)}")
    if byte_offset % 16:
        raise ValueError(f"byte_offset must be a multiple of the 16-byte AES block, got {byte_offset}")
    # Each seed keys exactly one stream (fresh per round and per pair), so counter blocks
    # 0, 1, 2, ... never repeat under one key; starting at block offset/16 lets threads
    # expand disjoint slices of the same mask.
    counter = (byte_offset // 16).to_bytes(16, "big")
    return Cipher(algorithms.AES(seed), modes.CTR(counter)).encryptor()


def _split(length: int, parts: int, align: int) -> list[tuple[int, int]]:
    step = -(-length // parts)
    step += -step % align  # slice starts must fall on AES block boundaries
    return [(start, min(start + step, length)) for start in range(0, length, step)] or [(0, 0)]


def apply_masks(vector: np.ndarray, masks: Sequence[tuple[bytes, int]], modulus_bits: int,
                addends: Sequence[np.ndarray] = (), workers: int = 1) -> np.ndarray:
    """In place: vector += sum(addends) + sum(sign * PRG(seed)) over (seed, sign = +-1), mod 2^m.

    Works in cache-sized chunks; `workers` threads take disjoint slices (AES and numpy release the GIL).
    """
    dtype = vector_dtype(modulus_bits)
    if vector.dtype != dtype or vector.ndim != 1 or not vector.flags.c_contiguous:
        raise TypeError(f"vector must be a contiguous 1-D {dtype} array, got {vector.dtype} {vector.shape}")
    if any(sign not in (1, -1) for _, sign in masks):
        raise ValueError("every mask sign must be +1 or -1")
    if any(a.dtype != dtype or a.shape != vector.shape for a in addends):
        raise TypeError(f"addends must be {dtype} arrays of shape {vector.shape}")

    def work(first: int, last: int) -> None:
        chunk = max(min(CHUNK_ELEMENTS, last - first), 1)
        zeros = memoryview(bytes(chunk * dtype.itemsize))  # a view: slicing it copies nothing
        # update_into writes the keystream into one reused buffer: allocating a fresh
        # output per call cost more than the AES itself.
        buffer = bytearray(chunk * dtype.itemsize + 15)
        stream_chunk = np.frombuffer(buffer, dtype=dtype, count=chunk)
        streams = [(keystream(seed, first * dtype.itemsize), sign) for seed, sign in masks]
        for start in range(first, last, chunk):
            part = vector[start : min(start + chunk, last)]
            size = len(part)
            for addend in addends:
                np.add(part, addend[start : start + size], out=part)
            for stream, sign in streams:
                stream.update_into(zeros[: size * dtype.itemsize], buffer)
                # uint32/uint64 add and subtract wrap around: exact arithmetic mod 2^32 / 2^64.
                (np.add if sign == 1 else np.subtract)(part, stream_chunk[:size], out=part)

    slices = _split(len(vector), max(workers, 1), 16 // dtype.itemsize)
    if len(slices) == 1:
        work(*slices[0])
    else:
        with ThreadPoolExecutor(len(slices)) as pool:
            list(pool.map(lambda bounds: work(*bounds), slices))
    return reduce_mod(vector, modulus_bits)


def expand_mask(seed: bytes, length: int, modulus_bits: int) -> np.ndarray:
    """The mask PRG(seed) itself: `length` uniform integers in [0, 2^m)."""
    return apply_masks(np.zeros(length, dtype=vector_dtype(modulus_bits)), [(seed, 1)], modulus_bits)
