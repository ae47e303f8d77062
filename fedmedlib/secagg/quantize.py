"""Quantization of float updates to integers mod 2^m: clip, stochastic rounding, integer weights.

References:
    Bonawitz et al., CCS 2017 (inputs are integer vectors mod R; R must exceed any possible sum).
    Bell et al., CCS 2020.
    Flower's SecAgg+ (clip to +-8, quantize, weight by num_examples) is the design we cross-check.
"""

from collections.abc import Sequence

import numpy as np

from .masking import SEED_BYTES, keystream, vector_dtype

# 2^18 floats per step keep the float64 temporaries in L2 cache (2x faster than whole-vector).
CHUNK_ELEMENTS = 1 << 18
MAX_WEIGHT_LEVELS = 1 << 16  # finer integer weights than this change nothing measurable


def check_quantization(clip_range: float, quant_bits: int, modulus_bits: int) -> None:
    if not (np.isfinite(clip_range) and clip_range > 0):
        raise ValueError(f"clip_range must be a positive finite float, got {clip_range!r}")
    if not isinstance(quant_bits, int | np.integer) or not 1 <= quant_bits <= 32:
        raise ValueError(f"quant_bits must be an integer in [1, 32], got {quant_bits!r}")
    vector_dtype(modulus_bits)  # validates modulus_bits
    if quant_bits >= modulus_bits:
        raise ValueError(
            f"quant_bits={quant_bits} leaves no room for a sum mod 2^{modulus_bits}; "
            "lower quant_bits or raise modulus_bits"
        )


def quantization_step(clip_range: float, quant_bits: int) -> float:
    """Width of one quantization level: 2 * clip_range / (2^q - 1)."""
    return 2.0 * clip_range / ((1 << quant_bits) - 1)


def weight_levels(num_clients: int, quant_bits: int, modulus_bits: int) -> int:
    """Largest integer weight L such that num_clients inputs of weight <= L cannot wrap mod 2^m."""
    levels = ((1 << modulus_bits) - 1) // (num_clients * ((1 << quant_bits) - 1) + num_clients)
    if levels < 1:
        raise ValueError(
            f"modulus_bits={modulus_bits} is too small to add {num_clients} inputs of "
            f"quant_bits={quant_bits} without wrapping: raise modulus_bits to at least "
            f"{quant_bits + int(np.ceil(np.log2(num_clients))) + 1} or lower quant_bits"
        )
    return min(levels, MAX_WEIGHT_LEVELS)


def integer_weights(weights: Sequence[float], levels: int, max_weight: float | None = None) -> np.ndarray:
    """Map positive float weights to integers in [1, levels] proportional to weight / max_weight."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 1 or len(weights) == 0 or not np.all(np.isfinite(weights)) or np.any(weights <= 0):
        raise ValueError(f"weights must be a non-empty list of positive finite numbers, got {weights!r}")
    max_weight = float(weights.max()) if max_weight is None else float(max_weight)
    if weights.max() > max_weight:
        raise ValueError(f"a weight {weights.max()} exceeds max_weight={max_weight}; raise max_weight")
    # Clients would each compute this from the public max_weight; a weight too small to
    # register is raised to 1 level (reported through the effective weights).
    return np.maximum(1, np.rint(weights / max_weight * levels)).astype(np.int64)


def quantize(
    values: np.ndarray,
    clip_range: float,
    quant_bits: int,
    rng: np.random.Generator,
    modulus_bits: int = 32,
    weight: int = 1,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """Clip to [-c, c], map to [0, 2^q - 1] with unbiased stochastic rounding, times `weight`.

    Returns the integer vector (dtype for modulus_bits; written into `out` if given) and how
    many values were clipped. The caller keeps weight * (2^q - 1) below 2^m (see weight_levels).
    """
    check_quantization(clip_range, quant_bits, modulus_bits)
    values = np.asarray(values)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.floating):
        raise TypeError(f"values must be a 1-D float array, got {values.dtype} {values.shape}")
    top = (1 << quant_bits) - 1
    scale = top / (2.0 * clip_range)
    if out is None:
        out = np.empty(len(values), dtype=vector_dtype(modulus_bits))
    if out.shape != values.shape or out.dtype != vector_dtype(modulus_bits):
        raise TypeError(f"out must be a {vector_dtype(modulus_bits)} array of shape {values.shape}")
    chunk = max(min(CHUNK_ELEMENTS, len(values)), 1)
    level, uniform = np.empty(chunk), np.empty(chunk)
    # Rounding noise from AES-CTR keyed by rng: 4x faster than rng.random. 16 random bits per
    # value (rounding probabilities exact to 2^-16 of a level) halve the keystream needed.
    stream, zeros = keystream(rng.bytes(SEED_BYTES)), memoryview(bytes(2 * chunk))
    buffer = bytearray(2 * chunk + 15)
    random_bits = np.frombuffer(buffer, dtype=np.uint16, count=chunk)
    clipped = 0
    for start in range(0, len(values), chunk):
        part = values[start : start + chunk]
        size = len(part)
        low, high = float(part.min()), float(part.max())  # NaN propagates into both
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ValueError("values contain NaN or inf; fix the update before aggregating it")
        v, u = level[:size], uniform[:size]
        np.multiply(part, scale, out=v)  # float64 from here on
        v += clip_range * scale
        if low < -clip_range or high > clip_range:  # clip (and count) only when needed
            clipped += int(np.count_nonzero(part < -clip_range) + np.count_nonzero(part > clip_range))
            np.clip(v, 0.0, top, out=v)
        stream.update_into(zeros[: 2 * size], buffer)
        np.multiply(random_bits[:size], 2.0**-16, out=u)
        # trunc(v + U[0,1)) = floor for v >= 0: rounds up with probability frac(v), so the
        # rounding is unbiased with error < 1 level. It never reaches 2^q: v <= top (1 + 2^-52)
        # and u <= 1 - 2^-16, so v + u < top + 1 for every quant_bits <= 32.
        v += u
        target = out[start : start + size]
        target[...] = v  # float -> unsigned cast truncates
        if weight != 1:
            target *= target.dtype.type(weight)  # cannot wrap: weight * top < 2^m (weight_levels)
    return out, clipped


def dequantize_mean(total: np.ndarray, weight_sum: int, clip_range: float, quant_bits: int,
                    dtype=np.float64) -> np.ndarray:
    """Turn sum_i w_i q_i and sum_i w_i back into the weighted mean of the clipped floats."""
    if weight_sum <= 0:
        raise ValueError(f"weight_sum must be positive, got {weight_sum}")
    out = np.empty(len(total), dtype=dtype)
    step = quantization_step(clip_range, quant_bits) / weight_sum
    for start in range(0, len(total), CHUNK_ELEMENTS):  # float64 temporaries stay in cache
        part = total[start : start + CHUNK_ELEMENTS] * step
        part -= clip_range
        out[start : start + len(part)] = part
    return out
