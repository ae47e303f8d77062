"""The client side of a SecAgg+ round: one method per stage, each checking what it is asked.

References:
    Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017.
    Bell et al., "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS 2020.
"""

import os

import numpy as np

from . import keys, shamir
from .errors import ProtocolViolation, SecAggAbort
from .masking import SEED_BYTES, apply_masks, vector_dtype
from .messages import (SERVER, EncryptedShares, ForwardedShares, KeyAdvert, KeyBroadcast, MaskedInput,
                       Message, SetupRequest, Stage, UnmaskRequest, UnmaskResponse, check_header)

SHARE_BYTES = len(shamir.Share(1, 0).to_bytes())


class Client:
    """One honest client: holds its integer input and its secrets, answers one stage at a time."""

    _ORDER = (Stage.SETUP, Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.UNMASK)

    def __init__(self, client_id: int, vector: np.ndarray, round_id: int = 0, consume_input: bool = False):
        self.id, self.vector, self.round_id = client_id, vector, round_id
        self.consume_input = consume_input  # mask the input buffer in place (saves a copy)
        self._next = 0  # index into _ORDER of the only stage this client will accept next

    def _accept(self, message: Message, stage: Stage, kind: type) -> None:
        check_header(message, recipient=self.id, round_id=self.round_id, stage=stage, kind=kind)
        if message.sender != SERVER:
            raise ProtocolViolation(f"client {self.id} accepts messages from the server only")
        position = self._ORDER.index(stage)
        if position < self._next:
            raise ProtocolViolation(f"client {self.id} already passed stage {stage.value}: replayed")
        if position > self._next:
            raise ProtocolViolation(f"client {self.id} got stage {stage.value} before stage "
                                    f"{self._ORDER[self._next].value}: out of order")
        self._next += 1

    def _reply(self, cls, stage: Stage, **body) -> Message:
        return cls(sender=self.id, recipient=SERVER, stage=stage, round_id=self.round_id, **body)

    def setup(self, request: SetupRequest) -> KeyAdvert:
        """Setup -> advertise keys: check the input, make two key pairs, publish their public halves."""
        self._accept(request, Stage.SETUP, SetupRequest)
        self.threshold, self.modulus_bits = request.threshold, request.modulus_bits
        self.neighbours = set(request.neighbours)
        check_input(self.vector, request.vector_length, request.modulus_bits, f"client {self.id}")
        self.cipher_keys, self.mask_keys = keys.KeyPair.generate(), keys.KeyPair.generate()
        return self._reply(KeyAdvert, Stage.ADVERTISE_KEYS, cipher_public_key=self.cipher_keys.public,
                           mask_public_key=self.mask_keys.public)

    def share_keys(self, broadcast: KeyBroadcast) -> EncryptedShares:
        """Share keys: t-of-(k+1) shares of the self-mask seed and mask key, encrypted per neighbour."""
        self._accept(broadcast, Stage.ADVERTISE_KEYS, KeyBroadcast)
        if not set(broadcast.public_keys) <= self.neighbours:
            raise ProtocolViolation(f"client {self.id} was sent keys of clients that are not its neighbours")
        self.peer_keys = dict(broadcast.public_keys)
        holders = sorted(self.peer_keys) + [self.id]  # neighbours and itself hold shares
        if len(holders) < self.threshold:
            raise SecAggAbort(f"client {self.id} has {len(holders)} share holders, "
                              f"below threshold {self.threshold}")
        self.seed = os.urandom(SEED_BYTES)  # the self-mask seed b_u, fresh each round
        seed_shares = shamir.split_secret(self.seed, self.threshold, len(holders))
        key_shares = shamir.split_secret(self.mask_keys.private_bytes(), self.threshold, len(holders))
        shares = {v: s.to_bytes() + k.to_bytes() for v, s, k in zip(holders, seed_shares, key_shares)}
        self.held = {self.id: shares.pop(self.id)}  # shares this client holds, by owner
        ciphertexts = {v: keys.encrypt(self._cipher_key(v), payload, keys.address(self.id, v, self.round_id))
                       for v, payload in shares.items()}
        return self._reply(EncryptedShares, Stage.SHARE_KEYS, ciphertexts=ciphertexts)

    def _cipher_key(self, peer: int) -> bytes:
        context = keys.pair_context(self.id, peer, self.round_id, "share-encryption")
        return keys.agree(self.cipher_keys.private, self.peer_keys[peer][0], context)

    def masked_input(self, forwarded: ForwardedShares) -> MaskedInput:
        """Masked input: keep the neighbours' shares, send input + self mask +- pairwise masks."""
        self._accept(forwarded, Stage.SHARE_KEYS, ForwardedShares)
        if not set(forwarded.ciphertexts) <= set(self.peer_keys):
            raise ProtocolViolation(f"client {self.id} was forwarded shares from non-neighbours")
        for u, ciphertext in forwarded.ciphertexts.items():
            payload = keys.decrypt(self._cipher_key(u), ciphertext, keys.address(u, self.id, self.round_id))
            if len(payload) != 2 * SHARE_BYTES:
                raise ProtocolViolation(f"client {self.id} got a malformed share payload from {u}")
            self.held[u] = payload
        # Mask only with neighbours who sent shares (Bonawitz's U2): their keys can be recovered.
        self.mask_peers = sorted(forwarded.ciphertexts)
        masks = [(self.seed, 1)]
        for u in self.mask_peers:
            context = keys.pair_context(self.id, u, self.round_id, "mask")
            seed = keys.agree(self.mask_keys.private, self.peer_keys[u][1], context)
            masks.append((seed, 1 if self.id < u else -1))  # opposite signs cancel in the sum
        masked = self.vector.astype(vector_dtype(self.modulus_bits), copy=not self.consume_input)
        self.vector = None  # the raw input is not needed once masked
        apply_masks(masked, masks, self.modulus_bits)
        return self._reply(MaskedInput, Stage.MASKED_INPUT, vector=masked)

    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Unmask: seed shares of surviving neighbours, mask-key shares of dropped ones, never both."""
        self._accept(request, Stage.UNMASK, UnmaskRequest)
        survivors, dropped = set(request.survivors), set(request.dropped)
        # Revealing both shares of one client would let the server unmask that client's input.
        if survivors & dropped:
            raise ProtocolViolation(f"client {self.id} was asked for both shares of "
                                    f"{sorted(survivors & dropped)}")
        if survivors | dropped != set(self.mask_peers) | {self.id} or self.id not in survivors:
            raise ProtocolViolation(f"client {self.id} got survivor/dropout lists inconsistent "
                                    "with its neighbours")
        return self._reply(UnmaskResponse, Stage.UNMASK,
                           seed_shares={u: self.held[u][:SHARE_BYTES] for u in sorted(survivors)},
                           key_shares={u: self.held[u][SHARE_BYTES:] for u in sorted(dropped)})


def check_input(vector: np.ndarray, length: int, modulus_bits: int, owner: str) -> None:
    """Raise naming the fix if an input is not a length-d integer vector with values in [0, 2^m)."""
    if not isinstance(vector, np.ndarray) or vector.ndim != 1:
        raise ValueError(f"{owner}: input must be a 1-D numpy array (flatten it), got "
                         f"{getattr(vector, 'shape', type(vector).__name__)}")
    if len(vector) != length:
        raise ValueError(f"{owner}: input must have length {length} like the others, got {len(vector)}")
    if not np.issubdtype(vector.dtype, np.integer):
        raise TypeError(f"{owner}: input must have an integer dtype, got {vector.dtype}; "
                        "quantize floats first")
    # An unsigned dtype no wider than m cannot leave [0, 2^m): skip two passes over the data.
    fits_by_type = vector.dtype.kind == "u" and vector.dtype.itemsize * 8 <= modulus_bits
    if len(vector) and not fits_by_type and (vector.min() < 0 or int(vector.max()) >= 1 << modulus_bits):
        raise ValueError(f"{owner}: values must lie in [0, 2^{modulus_bits}); "
                         f"reduce them mod 2^{modulus_bits} or raise modulus_bits")
