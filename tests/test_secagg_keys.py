"""Tests of X25519/HKDF key agreement and AES-GCM share encryption."""

import pytest

from fedmedlib.secagg.errors import ShareDecryptionError
from fedmedlib.secagg.keys import KeyPair, agree, decrypt, encrypt


def test_both_parties_derive_the_same_key():
    alice, bob = KeyPair.generate(), KeyPair.generate()
    assert agree(alice.private, bob.public, b"ctx") == agree(bob.private, alice.public, b"ctx")


def test_context_separates_keys():
    alice, bob = KeyPair.generate(), KeyPair.generate()
    assert agree(alice.private, bob.public, b"mask") != agree(alice.private, bob.public, b"enc")


def test_a_third_party_derives_a_different_key():
    alice, bob, eve = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    assert agree(eve.private, bob.public, b"ctx") != agree(alice.private, bob.public, b"ctx")


def test_private_key_round_trips_through_its_raw_bytes():
    pair = KeyPair.generate()
    assert KeyPair.from_private_bytes(pair.private_bytes()).public == pair.public


def test_encrypt_decrypt_round_trip():
    key = agree(KeyPair.generate().private, KeyPair.generate().public, b"enc")
    assert decrypt(key, encrypt(key, b"share", b"0->1"), b"0->1") == b"share"


def test_tampered_ciphertext_is_rejected():
    key = agree(KeyPair.generate().private, KeyPair.generate().public, b"enc")
    ciphertext = bytearray(encrypt(key, b"share", b"0->1"))
    ciphertext[-1] ^= 1
    with pytest.raises(ShareDecryptionError, match="tampered"):
        decrypt(key, bytes(ciphertext), b"0->1")


def test_misaddressed_ciphertext_is_rejected():
    key = agree(KeyPair.generate().private, KeyPair.generate().public, b"enc")
    with pytest.raises(ShareDecryptionError):
        decrypt(key, encrypt(key, b"share", b"0->1"), b"0->2")


def test_wrong_key_is_rejected():
    key = agree(KeyPair.generate().private, KeyPair.generate().public, b"enc")
    other = agree(KeyPair.generate().private, KeyPair.generate().public, b"enc")
    with pytest.raises(ShareDecryptionError):
        decrypt(other, encrypt(key, b"share", b"ad"), b"ad")


def test_short_public_key_is_refused():
    with pytest.raises(ValueError, match="32 raw bytes"):
        agree(KeyPair.generate().private, b"short", b"ctx")
