import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmedlib import partition as P

# Sizes computed from the authors' create_splits description (contiguous ranges, NumPy seed 42, ratio 0.5)
# for BloodMNIST's 11,959 training images.
PAPER_SIZES = {
    5: [1265, 3518, 1532, 3252, 2392],
    10: [1093, 1298, 761, 1631, 926, 1466, 1090, 1302, 1125, 1267],
    20: [495, 700, 328, 868, 492, 704, 527, 669, 410, 786, 578, 618, 496, 700, 477, 719, 384, 812, 511, 685],
}

labels_strategy = st.integers(min_value=40, max_value=400).flatmap(
    lambda n: st.lists(st.integers(0, 7), min_size=n, max_size=n).map(np.array))


def assert_exact_cover(parts, n):
    joined = np.concatenate(parts)
    assert len(joined) == n and np.array_equal(np.sort(joined), np.arange(n))


@pytest.mark.parametrize("n_clients", [5, 10, 20])
def test_paper_split_gives_the_authors_exact_sizes(n_clients):
    parts = P.partition(np.zeros(11959, int), n_clients, "paper")
    assert [len(p) for p in parts] == PAPER_SIZES[n_clients]


def test_paper_split_is_contiguous_ranges_in_file_order():
    parts = P.partition(np.zeros(11959, int), 10, "paper")
    assert all(np.array_equal(p, np.arange(p[0], p[-1] + 1)) for p in parts)
    assert [p[0] for p in parts[1:]] == [p[-1] + 1 for p in parts[:-1]]


def test_paper_split_does_not_touch_numpy_global_state():
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    P.partition(np.zeros(1000, int), 10, "paper")
    assert np.random.rand() == expected


def test_paper_split_on_real_labels_is_label_iid_but_dirichlet_is_not(real_data_root):
    from fedmedlib.data import load_bloodmnist

    _, y = load_bloodmnist("train", real_data_root)
    paper = P.label_skew(P.partition_stats(y, P.partition(y, 10, "paper"), 8)).mean()
    iid = P.label_skew(P.partition_stats(y, P.partition(y, 10, "iid"), 8)).mean()
    dirichlet = P.label_skew(P.partition_stats(y, P.partition(y, 10, "dirichlet", alpha=0.5), 8)).mean()
    assert paper < 0.06 and iid < 0.06
    assert dirichlet > 0.3


@settings(max_examples=40, deadline=None)
@given(labels=labels_strategy, n_clients=st.integers(1, 8), seed=st.integers(0, 2**16),
       scheme=st.sampled_from(["iid", "paper", "dirichlet"]))
def test_every_index_used_exactly_once_and_deterministic(labels, n_clients, seed, scheme):
    kw = {"min_size": 1, "alpha": 1.0} if scheme == "dirichlet" else {}
    parts = P.partition(labels, n_clients, scheme, seed=seed, **kw)
    assert len(parts) == n_clients
    assert_exact_cover(parts, len(labels))
    again = P.partition(labels, n_clients, scheme, seed=seed, **kw)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


@settings(max_examples=30, deadline=None)
@given(labels=labels_strategy, n_clients=st.integers(4, 10), c=st.integers(1, 3), seed=st.integers(0, 999))
def test_pathological_clients_hold_exactly_their_classes(labels, n_clients, c, seed):
    k = len(np.unique(labels))
    try:
        parts = P.partition(labels, n_clients, "pathological", classes_per_client=c, seed=seed)
    except ValueError as err:
        # Only two requests are impossible: too few class slots, or a class rarer than its holders.
        rarest = np.bincount(labels)[np.unique(labels)].min()
        assert ("cannot cover" in str(err) and n_clients * c < k) or ("between 1 and" in str(err) and c > k) \
            or ("use fewer clients" in str(err) and rarest < -(-n_clients * c // k))
        return
    assert_exact_cover(parts, len(labels))
    for p in parts:
        assert len(np.unique(labels[p])) <= c


def test_pathological_on_balanced_labels_gives_each_client_exactly_c_classes():
    labels = np.repeat(np.arange(8), 50)
    parts = P.partition(labels, 10, "pathological", classes_per_client=2, seed=3)
    assert [len(np.unique(labels[p])) for p in parts] == [2] * 10


def test_dirichlet_respects_min_size_and_seed():
    labels = np.repeat(np.arange(8), 100)
    parts = P.partition(labels, 10, "dirichlet", alpha=0.3, min_size=30, seed=1)
    assert min(len(p) for p in parts) >= 30
    other = P.partition(labels, 10, "dirichlet", alpha=0.3, min_size=30, seed=2)
    assert any(not np.array_equal(a, b) for a, b in zip(parts, other))


def test_smaller_alpha_means_more_label_skew():
    labels = np.repeat(np.arange(8), 200)
    skew = [P.label_skew(P.partition_stats(labels, P.partition(labels, 10, "dirichlet", alpha=a, seed=0), 8)).mean()
            for a in (0.1, 1.0, 100.0)]
    assert skew[0] > skew[1] > skew[2]


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_clients=3, scheme="random"), "unknown partition scheme 'random'"),
    (dict(n_clients=0, scheme="iid"), "positive integer"),
    (dict(n_clients=101, scheme="iid"), "cannot split 100 samples over 101 clients"),
    (dict(n_clients=5, scheme="dirichlet", alpha=0.0), "alpha must be > 0"),
    (dict(n_clients=5, scheme="dirichlet", alpha=-1.0), "alpha must be > 0"),
    (dict(n_clients=5, scheme="dirichlet", min_size=30), "exceeds the 100 samples"),
    (dict(n_clients=5, scheme="pathological", classes_per_client=9), "between 1 and 8"),
    (dict(n_clients=3, scheme="pathological", classes_per_client=2), "cannot cover all 8 classes"),
])
def test_impossible_requests_are_clear_errors(kwargs, message):
    labels = np.arange(100) % 8
    with pytest.raises(ValueError, match=message):
        P.partition(labels, **kwargs)


def test_unreachable_min_size_says_what_to_change():
    labels = np.repeat(np.arange(8), 10)
    with pytest.raises(ValueError, match="raise alpha, lower min_size"):
        P.partition(labels, 8, "dirichlet", alpha=0.01, min_size=10, max_tries=5)


def test_partition_stats_counts_rows_and_columns():
    labels = np.array([0, 0, 1, 2, 2, 2])
    counts = P.partition_stats(labels, [np.array([0, 2]), np.array([1, 3, 4, 5])], num_classes=4)
    assert counts.tolist() == [[1, 1, 0, 0], [1, 0, 3, 0]]


def test_label_skew_is_zero_for_identical_mix_and_one_for_disjoint_classes():
    assert np.allclose(P.label_skew(np.array([[2, 2], [5, 5]])), 0)
    assert np.allclose(P.label_skew(np.array([[4, 0], [0, 4]])), 0.5)
    assert np.allclose(P.label_skew(np.array([[1, 0, 0], [0, 0, 1000]]))[0], 1 - 1 / 1001)


def test_local_split_is_80_20_disjoint_and_seeded():
    idx = np.arange(100, 203)
    train, val = P.local_split(idx, seed=7)
    assert len(train) == int(0.8 * 103) and len(val) == 103 - int(0.8 * 103)
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(idx)
    again = P.local_split(idx, seed=7)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    with pytest.raises(ValueError, match="cannot be split"):
        P.local_split(np.array([1]))
    with pytest.raises(ValueError, match="val_fraction"):
        P.local_split(idx, val_fraction=1.0)
