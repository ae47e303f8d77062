"""Tests of AES-CTR mask expansion and in-place masking mod 2^m."""

import os

import numpy as np
import pytest

from fedmedlib.secagg import masking
from fedmedlib.secagg.masking import apply_masks, expand_mask, vector_dtype


def test_same_seed_gives_same_mask_and_different_seeds_differ():
    seed = os.urandom(32)
    assert np.array_equal(expand_mask(seed, 1000, 32), expand_mask(seed, 1000, 32))
    assert not np.array_equal(expand_mask(seed, 1000, 32), expand_mask(os.urandom(32), 1000, 32))


@pytest.mark.parametrize("modulus_bits", [8, 20, 32, 40, 64])
def test_mask_values_lie_in_the_modulus(modulus_bits):
    mask = expand_mask(os.urandom(32), 5000, modulus_bits)
    assert mask.dtype == vector_dtype(modulus_bits)
    assert int(mask.max()) < 2**modulus_bits
    assert int(mask.max()) > 2 ** (modulus_bits - 1)  # the top bit is used


def test_chunked_masking_equals_whole_vector_masking(monkeypatch):
    seeds = [(os.urandom(32), 1), (os.urandom(32), -1), (os.urandom(32), 1)]
    expected = np.zeros(1000, np.uint32)
    apply_masks(expected, seeds, 32)
    monkeypatch.setattr(masking, "CHUNK_ELEMENTS", 7)  # a chunk size that does not divide 1000
    chunked = np.zeros(1000, np.uint32)
    apply_masks(chunked, seeds, 32)
    assert np.array_equal(chunked, expected)


@pytest.mark.parametrize("modulus_bits", [16, 32, 64])
def test_plus_and_minus_masks_cancel_exactly(modulus_bits):
    rng = np.random.default_rng(0)
    vector = rng.integers(0, 2**modulus_bits, 3000, dtype=np.uint64).astype(vector_dtype(modulus_bits))
    masked = vector.copy()
    seed_a, seed_b = os.urandom(32), os.urandom(32)
    apply_masks(masked, [(seed_a, 1), (seed_b, -1)], modulus_bits)
    assert not np.array_equal(masked, vector)
    apply_masks(masked, [(seed_b, 1), (seed_a, -1)], modulus_bits)
    assert np.array_equal(masked, vector)


def test_masking_matches_python_big_integer_arithmetic():
    seed_a, seed_b = os.urandom(32), os.urandom(32)
    vector = np.arange(50, dtype=np.uint32) * 1000
    masked = apply_masks(vector.copy(), [(seed_a, 1), (seed_b, -1)], 24)
    mask_a, mask_b = expand_mask(seed_a, 50, 32), expand_mask(seed_b, 50, 32)
    expected = [(int(v) + int(a) - int(b)) % 2**24 for v, a, b in zip(vector, mask_a, mask_b)]
    assert masked.tolist() == expected


def test_short_seed_is_refused():
    with pytest.raises(ValueError, match="256 bits"):
        expand_mask(os.urandom(4), 10, 32)


def test_wrong_dtype_is_refused():
    with pytest.raises(TypeError, match="uint32"):
        apply_masks(np.zeros(10, np.int64), [(os.urandom(32), 1)], 32)


@pytest.mark.parametrize("modulus_bits", [4, 65, 32.0])
def test_bad_modulus_bits_is_refused(modulus_bits):
    with pytest.raises(ValueError, match=r"\[8, 64\]"):
        vector_dtype(modulus_bits)
