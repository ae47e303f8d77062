"""Tests of clipping, stochastic rounding, integer weights and the headroom check."""

import numpy as np
import pytest

from fedmedlib.secagg.quantize import dequantize_mean, integer_weights, quantization_step, quantize, weight_levels


def test_round_trip_error_is_below_one_step():
    rng = np.random.default_rng(0)
    values = rng.uniform(-8, 8, 10_000).astype(np.float32)
    quantized, clipped = quantize(values, 8.0, 12, rng)
    restored = dequantize_mean(quantized, 1, 8.0, 12)
    assert clipped == 0
    assert np.abs(restored - values).max() < quantization_step(8.0, 12)


def test_stochastic_rounding_is_unbiased():
    rng = np.random.default_rng(1)
    values = np.full(200_000, 0.3, dtype=np.float64)
    quantized, _ = quantize(values, 1.0, 4, rng)
    mean = dequantize_mean(quantized, 1, 1.0, 4).mean()
    # deterministic rounding would land on a level, 0.0667 away from 0.3
    assert abs(mean - 0.3) < 1e-3


def test_values_outside_the_range_are_clipped_and_counted():
    quantized, clipped = quantize(np.array([-100.0, 0.0, 100.0]), 8.0, 8, np.random.default_rng(0))
    assert clipped == 2
    assert quantized[0] == 0 and quantized[2] == 255


def test_quantized_values_stay_below_two_to_the_q():
    rng = np.random.default_rng(2)
    quantized, _ = quantize(rng.uniform(-1, 1, 50_000), 1.0, 6, rng)
    assert quantized.max() <= 63 and quantized.min() >= 0


@pytest.mark.parametrize("quant_bits,modulus_bits", [(16, 32), (31, 64), (32, 64)])
def test_the_range_edges_map_to_the_first_and_last_level(quant_bits, modulus_bits):
    values = np.repeat([-8.0, 8.0], 5000)
    quantized, clipped = quantize(values, 8.0, quant_bits, np.random.default_rng(0), modulus_bits)
    assert clipped == 0
    assert set(quantized[:5000].tolist()) == {0} and set(quantized[5000:].tolist()) == {2**quant_bits - 1}


def test_weighted_mean_is_recovered_from_integer_sums():
    rng = np.random.default_rng(3)
    updates = [rng.uniform(-1, 1, 1000) for _ in range(3)]
    weights = integer_weights([1.0, 2.0, 3.0], levels=30)
    total = sum(int(w) * quantize(u, 1.0, 16, rng)[0].astype(np.int64) for w, u in zip(weights, updates))
    mean = dequantize_mean(total, int(weights.sum()), 1.0, 16)
    exact = sum(w * u for w, u in zip(weights, updates)) / weights.sum()
    assert np.abs(mean - exact).max() < quantization_step(1.0, 16)


def test_integer_weights_are_proportional():
    assert integer_weights([100, 50, 25], levels=100).tolist() == [100, 50, 25]
    assert integer_weights([1e-9, 1.0], levels=10).tolist() == [1, 10]


def test_headroom_guarantees_no_wraparound():
    levels = weight_levels(20, 16, 32)
    assert 20 * levels * (2**16 - 1) + 20 * levels < 2**32


def test_modulus_too_small_for_the_clients_names_the_fix():
    with pytest.raises(ValueError, match="raise modulus_bits to at least"):
        weight_levels(1000, 24, 32)


@pytest.mark.parametrize("weights", [[], [1.0, -1.0], [0.0], [float("nan")]])
def test_bad_weights_are_refused(weights):
    with pytest.raises(ValueError, match="positive finite"):
        integer_weights(weights, 10)


def test_weight_above_max_weight_is_refused():
    with pytest.raises(ValueError, match="raise max_weight"):
        integer_weights([5.0], 10, max_weight=2.0)


def test_non_finite_update_is_refused():
    with pytest.raises(ValueError, match="NaN"):
        quantize(np.array([0.0, np.nan]), 1.0, 8, np.random.default_rng(0))


def test_integer_update_is_refused():
    with pytest.raises(TypeError, match="float"):
        quantize(np.arange(3), 1.0, 8, np.random.default_rng(0))


@pytest.mark.parametrize("clip_range,quant_bits,modulus_bits", [(0.0, 8, 32), (1.0, 0, 32), (1.0, 32, 32)])
def test_bad_quantization_settings_are_refused(clip_range, quant_bits, modulus_bits):
    with pytest.raises(ValueError):
        quantize(np.zeros(3), clip_range, quant_bits, np.random.default_rng(0), modulus_bits)
