"""Cross-check: our secure_mean and Flower's SecAggPlusWorkflow agree within quantization error."""

import numpy as np
import pytest

pytest.importorskip("flwr")

from fedmedlib.secagg import secure_mean  # noqa: E402
from fedmedlib.secagg.flower_reference import flower_round_times, synthetic_update  # noqa: E402

NUM_CLIENTS, LENGTH = 5, 1000
WEIGHTS = [100, 300, 500, 700, 900]  # num_examples; Flower scales them by max_weight=1000
FLOWER_STEP = 2 * 8.0 / (2**22 - 1)  # Flower's default clipping range +-8 over 2^22 levels


@pytest.fixture(scope="module")
def flower_aggregate():
    # num_shares=5 (4 neighbours + itself) and threshold 4: the paper's SecAgg+ settings.
    aggregate, _ = flower_round_times(NUM_CLIENTS, LENGTH, WEIGHTS, rounds=1, num_shares=5,
                                      reconstruction_threshold=4)
    return aggregate


def test_flower_and_ours_agree_within_quantization_error(flower_aggregate):
    updates = [synthetic_update(u, LENGTH) for u in range(NUM_CLIENTS)]
    ours, info = secure_mean(updates, WEIGHTS, clip_range=8.0, quant_bits=16, threshold=4,
                             num_neighbours=4, seed=0)
    # Flower's rounding error: < 1 level per client on x * w / max_weight, divided by sum w / max_weight.
    flower_bound = NUM_CLIENTS * FLOWER_STEP / (sum(WEIGHTS) / 1000)
    assert info.aggregated == tuple(range(NUM_CLIENTS))
    assert np.abs(ours - flower_aggregate).max() <= info.error_bound + flower_bound


def test_both_are_close_to_the_exact_weighted_mean(flower_aggregate):
    updates = [synthetic_update(u, LENGTH).astype(np.float64) for u in range(NUM_CLIENTS)]
    exact = sum(w * u for w, u in zip(WEIGHTS, updates)) / sum(WEIGHTS)
    ours, info = secure_mean(updates, WEIGHTS, seed=1)
    assert np.abs(ours - exact).max() <= info.error_bound
    assert np.abs(flower_aggregate - exact).max() <= NUM_CLIENTS * FLOWER_STEP / (sum(WEIGHTS) / 1000)
