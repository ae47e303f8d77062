"""Tests of the SecAgg+ round: exact sums or clean aborts, what the server sees, hostile messages."""

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from fedmedlib.secagg import (ProtocolViolation, SecAggAbort, SecAggAggregator, ShareDecryptionError, Stage,
                              secure_mean, secure_sum)
from fedmedlib.secagg.client import Client
from fedmedlib.secagg.graph import default_num_neighbours, ring_neighbours
from fedmedlib.secagg.messages import SERVER, ForwardedShares, UnmaskRequest, UnmaskResponse
from fedmedlib.secagg.server import Server

STAGES = ("before_share_keys", "before_masked_input", "before_unmask")


def random_inputs(rng, n, d, modulus_bits):
    return [rng.integers(0, 2**modulus_bits, d, dtype=np.uint64) for _ in range(n)]


def exact_sum(vectors, clients, modulus_bits):
    """Reference: Python big-integer sum, independent of numpy wrap-around."""
    return [sum(int(vectors[u][i]) for u in clients) % 2**modulus_bits for i in range(len(vectors[0]))]


def must_abort(n, t, neighbours, plan):
    """Independent oracle: does this dropout plan leave too few clients or shares?"""
    u2 = set(range(n)) - set(plan.get(STAGES[0], ()))
    u3 = u2 - set(plan.get(STAGES[1], ()))
    u5 = u3 - set(plan.get(STAGES[2], ()))
    if min(len(u2), len(u3), len(u5)) < t:
        return True
    if any(len(({u} | set(neighbours[u])) & u5) < t for u in u3):  # self-mask seeds
        return True
    return any(len(set(neighbours[u]) & u5) < t for u in u2 - u3 if set(neighbours[u]) & u3)  # mask keys


def valid_k(n):
    return sorted({k for k in range(2, n, 2)} | {n - 1})


@st.composite
def rounds(draw):
    n = draw(st.integers(3, 9))
    k = draw(st.sampled_from(valid_k(n)))
    t = draw(st.integers(2, min(n, k + 1)))
    plan = {}
    for u in range(n):
        stage = draw(st.sampled_from((None,) * 6 + STAGES))  # a third of clients drop, somewhere
        if stage:
            plan.setdefault(stage, []).append(u)
    return n, k, t, plan, draw(st.sampled_from((16, 32, 40, 64))), draw(st.integers(1, 12)), draw(st.integers(0, 99))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds())
def test_result_is_the_exact_sum_of_survivors_or_a_clean_abort(case):
    n, k, t, plan, modulus_bits, d, seed = case
    vectors = random_inputs(np.random.default_rng(seed), n, d, modulus_bits)
    neighbours = ring_neighbours(list(range(n)), k, np.random.default_rng(seed))
    if must_abort(n, t, neighbours, plan):
        event("abort")
        with pytest.raises(SecAggAbort):
            secure_sum(vectors, modulus_bits=modulus_bits, threshold=t, num_neighbours=k, dropped=plan, seed=seed)
        return
    total, view = secure_sum(vectors, modulus_bits=modulus_bits, threshold=t, num_neighbours=k,
                             dropped=plan, seed=seed, return_view=True)
    event("exact sum")
    reached = sorted(set(range(n)) - set(plan.get(STAGES[0], ())) - set(plan.get(STAGES[1], ())))
    assert list(view.survivors) == reached
    assert total.tolist() == exact_sum(vectors, reached, modulus_bits)


def test_no_dropout_sum_with_default_settings():
    vectors = [np.array([1, 2, 2**32 - 1]), np.array([3, 4, 5]), np.array([5, 6, 7]), np.array([7, 8, 9])]
    assert secure_sum(vectors).tolist() == [16, 20, 20]  # the last coordinate wraps mod 2^32


def test_classic_secagg_complete_graph_with_dropouts():
    rng = np.random.default_rng(1)
    vectors = random_inputs(rng, 8, 50, 32)
    plan = {"before_masked_input": [2], "before_unmask": [5]}
    total = secure_sum(vectors, num_neighbours=7, dropped=plan, seed=3)
    assert total.tolist() == exact_sum(vectors, [0, 1, 3, 4, 5, 6, 7], 32)


@pytest.mark.parametrize("n,expected", [(5, 4), (10, 8), (20, 10), (100, 14)])
def test_default_neighbour_count(n, expected):
    assert default_num_neighbours(n, 4) == expected


def test_ring_graph_is_symmetric_and_k_regular():
    neighbours = ring_neighbours(list(range(12)), 4, np.random.default_rng(0))
    assert all(len(vs) == 4 and u not in vs for u, vs in neighbours.items())
    assert all(u in neighbours[v] for u, vs in neighbours.items() for v in vs)


def test_fewer_than_threshold_survivors_aborts():
    vectors = random_inputs(np.random.default_rng(0), 5, 10, 32)
    with pytest.raises(SecAggAbort, match="threshold=4"):
        secure_sum(vectors, threshold=4, dropped={"before_masked_input": [0, 1]})


def test_client_with_too_few_live_neighbours_aborts():
    neighbours = ring_neighbours(list(range(10)), 4, np.random.default_rng(7))
    silent = list(neighbours[0][:2])  # two of client 0's four neighbours stop before unmask
    vectors = random_inputs(np.random.default_rng(0), 10, 10, 32)
    with pytest.raises(SecAggAbort, match="client 0"):
        secure_sum(vectors, threshold=4, num_neighbours=4, seed=7, dropped={"before_unmask": silent})


def test_transcript_holds_only_uniform_looking_masked_vectors():
    d = 20_000
    vectors = [np.full(d, 7 * u, dtype=np.uint32) for u in range(6)]  # very non-uniform inputs
    _, view = secure_sum(vectors, threshold=3, num_neighbours=4, seed=0, return_view=True,
                         dropped={"before_masked_input": [1], "before_unmask": [4]})
    masked = view.masked_inputs()
    assert set(masked) == {0, 2, 3, 4, 5}
    for u, vector in masked.items():
        assert np.mean(vector == vectors[u]) < 1e-3
        assert chisquare(np.bincount(vector.view(np.uint8), minlength=256)).pvalue > 1e-4
    assert chisquare(np.bincount(vectors[3].view(np.uint8), minlength=256) + 1).pvalue < 1e-4  # sanity
    for message in view.received:  # no field of any received message equals a raw input
        for value in vars(message).values():
            assert not any(isinstance(value, np.ndarray) and np.array_equal(value, x) for x in vectors)


def test_server_never_receives_both_shares_of_one_client():
    vectors = random_inputs(np.random.default_rng(0), 8, 5, 32)
    _, view = secure_sum(vectors, threshold=3, num_neighbours=6, seed=1, return_view=True,
                         dropped={"before_masked_input": [2, 6], "before_unmask": [3]})
    responses = [m for m in view.received if isinstance(m, UnmaskResponse)]
    seed_owners = {u for m in responses for u in m.seed_shares}
    key_owners = {u for m in responses for u in m.key_shares}
    assert key_owners == {2, 6} and not seed_owners & key_owners


def test_bytes_per_client_follow_k_and_d():
    vectors = random_inputs(np.random.default_rng(0), 10, 1000, 32)
    _, view = secure_sum(vectors, num_neighbours=4, seed=0, return_view=True)
    sizes = view.bytes_per_client()
    assert sizes["advertise_keys"]["sent"] == 64  # two 32-byte X25519 public keys
    assert sizes["advertise_keys"]["received"] == 4 * (4 + 64)  # k neighbours' ids and keys
    assert sizes["masked_input"]["sent"] == 4 * 1000  # d uint32 values


# ---- hostile or broken messages -------------------------------------------------------------

def started_round(n=5, threshold=3, k=4):
    vectors = random_inputs(np.random.default_rng(0), n, 4, 32)
    server = Server(range(n), threshold=threshold, num_neighbours=k, modulus_bits=32, vector_length=4)
    clients = [Client(u, v) for u, v in enumerate(vectors)]
    adverts = [clients[r.recipient].setup(r) for r in server.setup()]
    return server, clients, adverts


def test_replayed_message_to_the_server_is_rejected():
    server, _, adverts = started_round()
    with pytest.raises(ProtocolViolation, match="replayed"):
        server.advertise_keys([*adverts, adverts[0]])


def test_replayed_message_to_a_client_is_rejected():
    server, clients, adverts = started_round()
    broadcasts = server.advertise_keys(adverts)
    clients[0].share_keys(broadcasts[0])
    with pytest.raises(ProtocolViolation, match="replayed"):
        clients[0].share_keys(broadcasts[0])


def test_message_from_a_later_stage_is_rejected_as_out_of_order():
    server, clients, adverts = started_round()
    broadcasts = server.advertise_keys(adverts)
    shares = [clients[b.recipient].share_keys(b) for b in broadcasts]
    forwarded = server.share_keys(shares)
    fresh = Client(0, np.zeros(4, np.uint32))
    with pytest.raises(ProtocolViolation, match="out of order"):
        fresh.masked_input(forwarded[0])


def test_misaddressed_message_is_rejected():
    server, clients, adverts = started_round()
    broadcasts = server.advertise_keys(adverts)
    with pytest.raises(ProtocolViolation, match="addressed to 1"):
        clients[0].share_keys(broadcasts[1])


def test_message_from_another_round_is_rejected():
    server, _, adverts = started_round()
    with pytest.raises(ProtocolViolation, match="round 9"):
        server.advertise_keys([dataclasses.replace(adverts[0], round_id=9), *adverts[1:]])


def test_message_of_the_wrong_stage_is_rejected():
    server, clients, adverts = started_round()
    server.advertise_keys(adverts)
    with pytest.raises(ProtocolViolation, match="stage"):
        server.share_keys(adverts)


def test_server_stages_run_in_order_only():
    server, clients, adverts = started_round()
    with pytest.raises(ProtocolViolation, match="expected stage advertise_keys"):
        server.unmask([])


def test_message_from_a_dropped_client_is_rejected():
    server, clients, adverts = started_round()
    broadcasts = server.advertise_keys(adverts)
    shares = [clients[b.recipient].share_keys(b) for b in broadcasts]
    forwarded = server.share_keys(shares[1:])  # client 0 dropped before share keys
    masked = [clients[f.recipient].masked_input(f) for f in forwarded]
    late = dataclasses.replace(masked[0], sender=0)
    with pytest.raises(ProtocolViolation, match="not in this stage"):
        server.masked_input([*masked, late])


def forwarded_round():
    server, clients, adverts = started_round()
    broadcasts = server.advertise_keys(adverts)
    forwarded = server.share_keys([clients[b.recipient].share_keys(b) for b in broadcasts])
    return server, clients, forwarded


def test_share_forwarded_to_the_wrong_client_fails_authentication():
    _, clients, forwarded = forwarded_round()
    to_one, to_two = forwarded[1].ciphertexts, forwarded[2].ciphertexts
    swapped = {3: to_two[3], **{u: c for u, c in to_one.items() if u != 3}}  # 3's share for 2, given to 1
    with pytest.raises(ShareDecryptionError):
        clients[1].masked_input(dataclasses.replace(forwarded[1], ciphertexts=swapped))


def test_tampered_share_fails_authentication():
    _, clients, forwarded = forwarded_round()
    ciphertexts = dict(forwarded[0].ciphertexts)
    sender = next(iter(ciphertexts))
    ciphertexts[sender] = ciphertexts[sender][:-1] + bytes([ciphertexts[sender][-1] ^ 1])
    with pytest.raises(ShareDecryptionError, match="tampered"):
        clients[0].masked_input(dataclasses.replace(forwarded[0], ciphertexts=ciphertexts))


def test_client_refuses_to_reveal_both_shares_of_a_neighbour():
    server, clients, forwarded = forwarded_round()
    requests = server.masked_input([clients[f.recipient].masked_input(f) for f in forwarded])
    greedy = UnmaskRequest(sender=SERVER, recipient=0, stage=Stage.UNMASK, round_id=0,
                           survivors=requests[0].survivors, dropped=requests[0].survivors[:1])
    with pytest.raises(ProtocolViolation, match="both shares"):
        clients[0].unmask(greedy)


def test_client_refuses_a_survivor_list_that_does_not_match_its_neighbours():
    server, clients, forwarded = forwarded_round()
    requests = server.masked_input([clients[f.recipient].masked_input(f) for f in forwarded])
    with pytest.raises(ProtocolViolation, match="inconsistent"):
        clients[0].unmask(dataclasses.replace(requests[0], survivors=(0,), dropped=()))


def test_forwarded_share_from_a_non_neighbour_is_rejected():
    server, clients, adverts = started_round(n=7, k=2)
    broadcasts = server.advertise_keys(adverts)
    forwarded = server.share_keys([clients[b.recipient].share_keys(b) for b in broadcasts])
    stranger = next(u for u in range(7) if u != 0 and u not in server.neighbours[0])
    bogus = ForwardedShares(sender=SERVER, recipient=0, stage=Stage.SHARE_KEYS, round_id=0,
                            ciphertexts={**forwarded[0].ciphertexts, stranger: b"x" * 60})
    with pytest.raises(ProtocolViolation, match="non-neighbours"):
        clients[0].masked_input(bogus)


# ---- bad input names the fix ----------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    ({"threshold": 6}, "exceeds the 5 clients"),
    ({"threshold": 1}, "threshold must be an integer >= 2"),
    ({"num_neighbours": 3, "threshold": 2}, "odd"),
    ({"num_neighbours": 7}, r"\[1, 4\]"),
    ({"num_neighbours": 2, "threshold": 4}, "exceeds the 3 share holders"),
    ({"modulus_bits": 72}, r"\[8, 64\]"),
    ({"dropped": {"before_lunch": [1]}}, "unknown dropout stage"),
    ({"dropped": {"before_unmask": [9]}}, "not a client id"),
    ({"dropped": {"before_unmask": [1], "before_share_keys": [1]}}, "two dropout stages"),
])
def test_bad_settings_are_refused_with_a_fix(kwargs, match):
    vectors = [np.arange(3) for _ in range(5)]
    with pytest.raises(ValueError, match=match):
        secure_sum(vectors, **kwargs)


@pytest.mark.parametrize("vectors,error,match", [
    ([np.arange(3), np.arange(4), np.arange(3), np.arange(3)], ValueError, "length 3"),
    ([np.zeros((2, 2), int)] * 4, ValueError, "1-D"),
    ([np.zeros(3)] * 4, TypeError, "quantize floats first"),
    ([np.full(3, 2**16)] * 4, ValueError, r"reduce them mod 2\^16"),
    ([np.full(3, -1)] * 4, ValueError, r"\[0, 2\^16\)"),
    ([], ValueError, "non-empty"),
    ([[1, 2], [3, 4]], TypeError, "np.asarray"),
])
def test_bad_inputs_are_refused_with_a_fix(vectors, error, match):
    with pytest.raises(error, match=match):
        secure_sum(vectors, modulus_bits=16, threshold=2)


# ---- the float-level mean and the FL aggregator -----------------------------------------------

def weighted_mean(updates, weights, clients):
    w = np.asarray(weights, float)[clients]
    return sum(wi * updates[u].astype(float) for wi, u in zip(w, clients)) / w.sum()


def test_secure_mean_is_within_its_error_bound():
    rng = np.random.default_rng(0)
    updates = [rng.normal(0, 0.5, 5000).astype(np.float32) for _ in range(6)]
    weights = [120, 300, 80, 500, 260, 90]
    mean, info = secure_mean(updates, weights, clip_range=8.0, quant_bits=16, seed=1,
                             dropped={"before_masked_input": [3]})
    assert info.aggregated == (0, 1, 2, 4, 5) and info.excluded == (3,)
    assert mean.dtype == np.float32
    assert np.abs(mean - weighted_mean(updates, weights, [0, 1, 2, 4, 5])).max() <= info.error_bound
    assert info.error_bound < 1e-3


def test_more_quantization_bits_shrink_the_error():
    rng = np.random.default_rng(1)
    updates = [rng.uniform(-1, 1, 5000) for _ in range(5)]
    exact = weighted_mean(updates, [1] * 5, list(range(5)))
    errors = [np.abs(secure_mean(updates, [1] * 5, 1.0, q, seed=0)[0] - exact).max() for q in (6, 12, 20)]
    assert errors[0] > errors[1] > errors[2]


def test_clipping_is_reported():
    updates = [np.array([0.0, 20.0, -20.0, 1.0])] * 4
    mean, info = secure_mean(updates, [1] * 4, clip_range=8.0, seed=0)
    assert info.clipped_fraction == 0.5
    assert mean[1] == pytest.approx(8.0, abs=info.step) and mean[2] == pytest.approx(-8.0, abs=info.step)


def test_modulus_too_small_for_the_clients_is_refused():
    updates = [np.zeros(3)] * 5
    with pytest.raises(ValueError, match="raise modulus_bits"):
        secure_mean(updates, [1] * 5, quant_bits=30, modulus_bits=32)


def test_unflattened_updates_are_refused():
    with pytest.raises(ValueError, match="flatten the model first"):
        secure_mean([np.zeros((2, 3))] * 4, [1] * 4)


def test_one_weight_per_update_is_required():
    with pytest.raises(ValueError, match="one weight per update"):
        secure_mean([np.zeros(3)] * 4, [1, 2])


def test_aggregator_runs_rounds_and_reports_who_was_aggregated():
    rng = np.random.default_rng(2)
    updates = [rng.normal(0, 0.1, 2000).astype(np.float32) for _ in range(10)]
    weights = rng.integers(50, 500, 10).tolist()
    aggregator = SecAggAggregator(threshold=4, seed=0)
    for _ in range(2):
        mean, info = aggregator.aggregate(updates, weights, dropped={"before_unmask": [7]})
        assert info.aggregated == tuple(range(10))
        assert np.abs(mean - weighted_mean(updates, weights, list(range(10)))).max() <= info.error_bound
    assert aggregator.rounds_run == 2


def test_workers_do_not_change_the_sum():
    vectors = random_inputs(np.random.default_rng(3), 6, 100_001, 32)
    plan = {"before_masked_input": [4]}
    serial = secure_sum(vectors, threshold=3, dropped=plan, seed=0)
    threaded = secure_sum(vectors, threshold=3, dropped=plan, seed=0, workers=2)
    assert np.array_equal(serial, threaded)
    assert serial.tolist()[:50] == exact_sum([v[:50] for v in vectors], [0, 1, 2, 3, 5], 32)


def test_aggregator_stays_exact_when_the_round_shape_changes():
    rng = np.random.default_rng(4)
    aggregator = SecAggAggregator(threshold=3, seed=0)
    for n, d in [(5, 300), (5, 300), (7, 120)]:  # reuses its buffers, then must reallocate
        updates = [rng.normal(0, 0.1, d) for _ in range(n)]
        mean, info = aggregator.aggregate(updates, [1.0] * n)
        assert mean.shape == (d,)
        assert np.abs(mean - np.mean(updates, axis=0)).max() <= info.error_bound
