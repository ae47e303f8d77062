"""Exceptions raised by the secure-aggregation protocol, one per kind of failure.

References:
    Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017.
    Bell et al., "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS 2020.
"""


class SecAggError(Exception):
    """Base class of every secure-aggregation failure."""


class SecAggAbort(SecAggError):
    """The round cannot finish safely (too few survivors or shares); no sum is returned."""


class ProtocolViolation(SecAggError):
    """A message arrived out of order, twice, from the wrong sender or for the wrong recipient/round."""


class ShareDecryptionError(SecAggError):
    """An encrypted share failed authentication (tampered, misaddressed or wrong key)."""


class ReconstructionError(SecAggError):
    """Shamir shares were too few or inconsistent to rebuild the secret."""
