"""Tests of Shamir t-of-n sharing: every t-subset rebuilds, t - 1 cannot, bad input is named."""

import itertools
import os

import pytest

from fedmedlib.secagg.errors import ReconstructionError
from fedmedlib.secagg.shamir import PRIME, Share, combine_shares, interpolate_at_zero, split_secret


def test_field_holds_a_256_bit_secret():
    assert PRIME.bit_length() >= 257


@pytest.mark.parametrize("threshold,num_shares", [(2, 3), (3, 5), (4, 6)])
def test_every_threshold_subset_rebuilds_the_secret(threshold, num_shares):
    secret = os.urandom(32)
    shares = split_secret(secret, threshold, num_shares)
    for subset in itertools.combinations(shares, threshold):
        assert combine_shares(subset, threshold) == secret


def test_all_ones_secret_of_full_width_round_trips():
    secret = b"\xff" * 32
    assert combine_shares(split_secret(secret, 3, 4)[1:], 3) == secret


def test_too_few_shares_are_refused():
    shares = split_secret(os.urandom(32), 4, 6)
    with pytest.raises(ReconstructionError, match="at least threshold=4"):
        combine_shares(shares[:3], 4)


def test_threshold_minus_one_shares_interpolate_to_a_different_value():
    secret = os.urandom(32)
    shares = split_secret(secret, 4, 6)
    for subset in itertools.combinations(shares, 3):
        assert interpolate_at_zero(subset) != int.from_bytes(secret, "big")


def test_a_lying_threshold_with_too_few_shares_is_detected():
    shares = split_secret(os.urandom(32), 4, 6)
    with pytest.raises(ReconstructionError, match="inconsistent"):
        combine_shares(shares[:3], 3)


def test_a_modified_share_does_not_rebuild_the_secret():
    secret = os.urandom(32)
    shares = split_secret(secret, 3, 5)
    forged = [Share(shares[0].x, (shares[0].y + 1) % PRIME), *shares[1:3]]
    # Shamir alone cannot always detect a forgery (a small shift still fits in 32 bytes);
    # detection is AES-GCM's job. It must never give back the true secret.
    try:
        rebuilt = combine_shares(forged, 3)
    except ReconstructionError:
        rebuilt = None
    assert rebuilt != secret


def test_share_serialisation_round_trips():
    share = split_secret(os.urandom(32), 2, 3)[2]
    assert Share.from_bytes(share.to_bytes()) == share


def test_truncated_serialised_share_is_refused():
    data = split_secret(os.urandom(32), 2, 3)[0].to_bytes()
    with pytest.raises(ReconstructionError, match="bytes"):
        Share.from_bytes(data[:-1])


def test_duplicate_shares_are_refused():
    shares = split_secret(os.urandom(32), 2, 3)
    with pytest.raises(ReconstructionError, match="distinct"):
        combine_shares([shares[0], shares[0]], 2)


@pytest.mark.parametrize("threshold,num_shares", [(1, 3), (4, 3), (0, 0)])
def test_bad_threshold_is_refused_with_the_rule(threshold, num_shares):
    with pytest.raises(ValueError, match="2 <= threshold <= num_shares"):
        split_secret(b"secret", threshold, num_shares)


def test_oversized_secret_is_refused():
    with pytest.raises(ValueError, match="at most 65"):
        split_secret(bytes(66), 2, 3)
