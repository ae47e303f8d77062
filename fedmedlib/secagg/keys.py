"""Key agreement (X25519 + HKDF-SHA256) and authenticated encryption (AES-256-GCM) of shares.

References:
    Bonawitz et al., CCS 2017 (Diffie-Hellman key agreement and authenticated encryption of shares).
    Bell et al., CCS 2020.
    RFC 7748 (X25519), RFC 5869 (HKDF), NIST SP 800-38D (GCM).
"""

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import ShareDecryptionError

KEY_BYTES = 32  # X25519 keys, derived AES-256 keys and mask seeds are all 256-bit
NONCE_BYTES = 12  # GCM's standard nonce; random nonces are safe for the few messages per key


@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair; `public` is the 32 raw bytes a client advertises."""

    private: X25519PrivateKey
    public: bytes

    @classmethod
    def generate(cls) -> "KeyPair":
        return cls.from_private_bytes(X25519PrivateKey.generate().private_bytes_raw())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> "KeyPair":
        private = X25519PrivateKey.from_private_bytes(raw)
        public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return cls(private, public)

    def private_bytes(self) -> bytes:
        """The 32 raw private bytes, which SecAgg secret-shares so a dropout can be unmasked."""
        return self.private.private_bytes_raw()


def agree(private: X25519PrivateKey, peer_public: bytes, context: bytes) -> bytes:
    """Derive a 32-byte key shared by two parties; `context` separates purposes and rounds."""
    if len(peer_public) != KEY_BYTES:
        raise ValueError(f"a public key has {KEY_BYTES} raw bytes, got {len(peer_public)}")
    shared_secret = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    # HKDF turns the raw Diffie-Hellman output (not uniform) into a uniform key, and the
    # context makes the mask key and the encryption key of one pair independent.
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=context).derive(
        shared_secret
    )


def encrypt(key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """AES-256-GCM encrypt; `associated_data` (round, sender, recipient) is authenticated, not sent."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated_data)


def decrypt(key: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    """Inverse of `encrypt`; raises ShareDecryptionError if anything was altered or misaddressed."""
    nonce, body = ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:]
    try:
        return AESGCM(key).decrypt(nonce, body, associated_data)
    except InvalidTag as error:
        raise ShareDecryptionError(
            "share ciphertext failed authentication: it was tampered with, sent to the wrong "
            "client or round, or encrypted under another key"
        ) from error


def pair_context(u: int, v: int, round_id: int, purpose: str) -> bytes:
    # Both ends build the same context: sorted ids, the round, the purpose.
    return f"fedmedlib-secagg/{purpose}/round={round_id}/pair={min(u, v)},{max(u, v)}".encode()


def address(sender: int, recipient: int, round_id: int) -> bytes:
    return f"round={round_id}/from={sender}/to={recipient}".encode()
