"""Message objects exchanged stage by stage, and the ServerView transcript of what the server saw.

References:
    Bonawitz et al., CCS 2017 (rounds AdvertiseKeys, ShareKeys, MaskedInputCollection, Unmasking).
    Bell et al., CCS 2020 (per-client communication O(k + d) with k graph neighbours).
"""

from collections import defaultdict
from dataclasses import dataclass, field, fields
from enum import Enum

import numpy as np

from .errors import ProtocolViolation

SERVER = "server"
DROPOUT_STAGES = ("before_share_keys", "before_masked_input", "before_unmask")


class Stage(str, Enum):
    """Protocol stages, in order; a message carries the stage it belongs to."""

    SETUP = "setup"
    ADVERTISE_KEYS = "advertise_keys"
    SHARE_KEYS = "share_keys"
    MASKED_INPUT = "masked_input"
    UNMASK = "unmask"


@dataclass(frozen=True, kw_only=True, eq=False)
class Message:
    """Header every message carries; receivers check all four fields before reading the body."""

    sender: int | str
    recipient: int | str
    stage: Stage
    round_id: int


@dataclass(frozen=True, kw_only=True, eq=False)
class SetupRequest(Message):
    """Server -> client: the round's parameters and the client's neighbours in the masking graph."""

    neighbours: tuple[int, ...]
    threshold: int
    modulus_bits: int
    vector_length: int


@dataclass(frozen=True, kw_only=True, eq=False)
class KeyAdvert(Message):
    """Client -> server: two X25519 public keys (one encrypts shares, one derives pairwise masks)."""

    cipher_public_key: bytes
    mask_public_key: bytes


@dataclass(frozen=True, kw_only=True, eq=False)
class KeyBroadcast(Message):
    """Server -> client: neighbour id -> (cipher, mask) public keys of its live neighbours."""

    public_keys: dict[int, tuple[bytes, bytes]]


@dataclass(frozen=True, kw_only=True, eq=False)
class EncryptedShares(Message):
    """Client -> server: recipient id -> AES-GCM ciphertext of (seed share, mask-key share)."""

    ciphertexts: dict[int, bytes]


@dataclass(frozen=True, kw_only=True, eq=False)
class ForwardedShares(Message):
    """Server -> client: original sender id -> ciphertext addressed to this client."""

    ciphertexts: dict[int, bytes]


@dataclass(frozen=True, kw_only=True, eq=False)
class MaskedInput(Message):
    """Client -> server: the input plus self mask plus signed pairwise masks, mod 2^m."""

    vector: np.ndarray


@dataclass(frozen=True, kw_only=True, eq=False)
class UnmaskRequest(Message):
    """Server -> client: which of its neighbours survived (send seed share) or dropped (key share)."""

    survivors: tuple[int, ...]
    dropped: tuple[int, ...]


@dataclass(frozen=True, kw_only=True, eq=False)
class UnmaskResponse(Message):
    """Client -> server: serialised Shamir shares, never both kinds for one client."""

    seed_shares: dict[int, bytes]
    key_shares: dict[int, bytes]


def check_header(message: Message, *, recipient, round_id: int, stage: Stage, kind: type) -> None:
    """Reject a message that is misaddressed, from another round, or of the wrong stage/kind."""
    if message.recipient != recipient:
        raise ProtocolViolation(f"{recipient} received a message addressed to {message.recipient!r}")
    if message.round_id != round_id:
        raise ProtocolViolation(f"message of round {message.round_id} received in round {round_id}")
    if message.stage != stage or not isinstance(message, kind):
        raise ProtocolViolation(
            f"{recipient} expected a {kind.__name__} of stage {stage.value}, got a "
            f"{type(message).__name__} of stage {message.stage.value}: replayed or out of order"
        )


_ID_BYTES = 4  # a client id or small integer on the wire


def payload_nbytes(message: Message) -> int:
    """Bytes of the message body on the wire (ids as 4 bytes; the fixed header is not counted)."""
    total = 0
    for spec in fields(message):
        if spec.name in ("sender", "recipient", "stage", "round_id"):
            continue
        total += _nbytes(getattr(message, spec.name))
    return total


def _nbytes(value) -> int:
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, int):
        return _ID_BYTES
    if isinstance(value, dict):
        return sum(_ID_BYTES + _nbytes(item) for item in value.values())
    if isinstance(value, tuple):
        return sum(_nbytes(item) for item in value)
    raise TypeError(f"cannot size a {type(value).__name__}")


@dataclass
class ServerView:
    """Everything the server received (and sent) in one round: what a curious server could study."""

    round_id: int
    threshold: int
    neighbours: dict[int, tuple[int, ...]]
    received: list[Message] = field(default_factory=list)
    sent: list[Message] = field(default_factory=list)
    survivors: tuple[int, ...] = ()  # clients whose masked input reached the server

    def received_at(self, stage: Stage) -> list[Message]:
        return [message for message in self.received if message.stage == stage]

    def masked_inputs(self) -> dict[int, np.ndarray]:
        """Client id -> the masked vector the server holds (never the raw input)."""
        return {m.sender: m.vector for m in self.received if isinstance(m, MaskedInput)}

    def bytes_per_client(self) -> dict[str, dict[str, float]]:
        """Stage -> mean bytes a client sent and received in it (clients active in that stage)."""
        sent, received = defaultdict(dict), defaultdict(dict)
        for message in self.received:
            sent[message.stage.value][message.sender] = payload_nbytes(message)
        for message in self.sent:
            received[message.stage.value][message.recipient] = payload_nbytes(message)
        return {
            stage.value: {
                "sent": float(np.mean(list(sent[stage.value].values()) or [0])),
                "received": float(np.mean(list(received[stage.value].values()) or [0])),
            }
            for stage in Stage
        }
