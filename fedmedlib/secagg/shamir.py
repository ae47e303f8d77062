"""Shamir t-of-n secret sharing of byte strings over the prime field GF(2^521 - 1).

References:
    Shamir, "How to Share a Secret", CACM 1979.
    Bonawitz et al., CCS 2017 (shares of each client's mask key and self-mask seed).
    Bell et al., CCS 2020 (shares go to a client's graph neighbours only).
"""

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ReconstructionError

# A Mersenne prime: 521 bits hold any 65-byte secret, so a 32-byte X25519 key or
# AES seed is shared whole (no chunking), and the field is far beyond the 127 bits asked.
PRIME = 2**521 - 1
MAX_SECRET_BYTES = 65
_X_BYTES = 2  # share x-coordinates are small positive ints (1..n)
_Y_BYTES = (PRIME.bit_length() + 7) // 8


@dataclass(frozen=True)
class Share:
    """One point (x, f(x)) of the secret polynomial f, with f(0) the secret."""

    x: int
    y: int

    def to_bytes(self) -> bytes:
        return self.x.to_bytes(_X_BYTES, "big") + self.y.to_bytes(_Y_BYTES, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> "Share":
        if len(data) != _X_BYTES + _Y_BYTES:
            raise ReconstructionError(
                f"a serialised share has {_X_BYTES + _Y_BYTES} bytes, got {len(data)}; "
                "pass bytes produced by Share.to_bytes"
            )
        return cls(int.from_bytes(data[:_X_BYTES], "big"), int.from_bytes(data[_X_BYTES:], "big"))


def _check_threshold(threshold: int, num_shares: int) -> None:
    if not 2 <= threshold <= num_shares:
        raise ValueError(
            f"threshold must satisfy 2 <= threshold <= num_shares, got threshold={threshold}, "
            f"num_shares={num_shares}; a threshold of 1 would hand out the secret itself"
        )
    if num_shares >= 256**_X_BYTES:
        raise ValueError(f"at most {256**_X_BYTES - 1} shares are supported, got {num_shares}")


def split_secret(secret: bytes, threshold: int, num_shares: int) -> list[Share]:
    """Split `secret` into `num_shares` shares at x = 1..num_shares; any `threshold` rebuild it."""
    if not isinstance(secret, bytes | bytearray):
        raise TypeError(f"secret must be bytes, got {type(secret).__name__}")
    if len(secret) > MAX_SECRET_BYTES:
        raise ValueError(f"secret has {len(secret)} bytes; at most {MAX_SECRET_BYTES} fit the field")
    _check_threshold(threshold, num_shares)
    # f(0) = secret; the other coefficients come from the OS CSPRNG, so t - 1 shares
    # are uniformly distributed whatever the secret is.
    coefficients = [int.from_bytes(secret, "big")]
    coefficients += [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = []
    for x in range(1, num_shares + 1):
        y = 0
        for coefficient in reversed(coefficients):  # Horner's rule
            y = (y * x + coefficient) % PRIME
        shares.append(Share(x, y))
    return shares


def interpolate_at_zero(shares: Sequence[Share]) -> int:
    """Lagrange-interpolate the polynomial through `shares` at x = 0 (no threshold check)."""
    xs = [share.x for share in shares]
    if len(set(xs)) != len(xs):
        raise ReconstructionError(f"shares must have distinct x-coordinates, got {sorted(xs)}")
    value = 0
    for j, share_j in enumerate(shares):
        numerator, denominator = 1, 1
        for m, x_m in enumerate(xs):
            if m != j:
                numerator = numerator * x_m % PRIME
                denominator = denominator * (x_m - share_j.x) % PRIME
        value = (value + share_j.y * numerator * pow(denominator, -1, PRIME)) % PRIME
    return value


def combine_shares(shares: Sequence[Share], threshold: int, secret_bytes: int = 32) -> bytes:
    """Rebuild a `secret_bytes`-long secret from at least `threshold` shares."""
    if len(shares) < threshold:
        raise ReconstructionError(
            f"need at least threshold={threshold} shares to rebuild the secret, got {len(shares)}"
        )
    value = interpolate_at_zero(list(shares)[:threshold])
    # A wrong or forged share set lands on a random field element, which almost never
    # fits in secret_bytes bytes: report it rather than return garbage.
    if value >= 256**secret_bytes:
        raise ReconstructionError(
            f"shares are inconsistent: the rebuilt value does not fit in {secret_bytes} bytes"
        )
    return value.to_bytes(secret_bytes, "big")
