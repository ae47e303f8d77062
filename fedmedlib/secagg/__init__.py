"""SecAgg+ secure aggregation built from real primitives (Shamir, X25519, HKDF, AES-GCM, AES-CTR).

References:
    Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017.
    Bell et al., "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS 2020.
"""

from .api import SecAggAggregator, SecureMeanInfo, secure_mean, secure_sum
from .errors import ProtocolViolation, ReconstructionError, SecAggAbort, SecAggError, ShareDecryptionError
from .messages import DROPOUT_STAGES, ServerView, Stage

__all__ = [
    "DROPOUT_STAGES",
    "ProtocolViolation",
    "ReconstructionError",
    "SecAggAbort",
    "SecAggAggregator",
    "SecAggError",
    "SecureMeanInfo",
    "ServerView",
    "ShareDecryptionError",
    "Stage",
    "secure_mean",
    "secure_sum",
]
