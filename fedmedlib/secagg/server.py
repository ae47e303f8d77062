"""The server side of a SecAgg+ round: one method per stage; it learns only the survivors' sum.

References:
    Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017.
    Bell et al., "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS 2020.
"""

from collections.abc import Iterable, Sequence

import numpy as np

from . import keys, shamir
from .client import check_input
from .errors import ProtocolViolation, ReconstructionError, SecAggAbort
from .graph import check_round, ring_neighbours
from .masking import apply_masks, vector_dtype
from .messages import (SERVER, EncryptedShares, ForwardedShares, KeyAdvert, KeyBroadcast, MaskedInput,
                       Message, ServerView, SetupRequest, Stage, UnmaskRequest, UnmaskResponse, check_header)


class Server:
    """Honest-but-curious server: routes messages, enforces the threshold, unmasks the sum."""

    def __init__(self, client_ids: Sequence[int], *, threshold: int, num_neighbours: int, modulus_bits: int,
                 vector_length: int, round_id: int = 0, rng: np.random.Generator | None = None,
                 workers: int = 1):
        client_ids = sorted(client_ids)
        check_round(len(client_ids), threshold, num_neighbours)
        vector_dtype(modulus_bits)  # validates modulus_bits
        self.clients, self.threshold, self.modulus_bits = client_ids, threshold, modulus_bits
        self.vector_length, self.round_id, self.workers = vector_length, round_id, workers
        self.neighbours = ring_neighbours(client_ids, num_neighbours, rng or np.random.default_rng())
        self.view = ServerView(round_id=round_id, threshold=threshold, neighbours=dict(self.neighbours))
        self._stages = iter(Stage)  # the server walks the stages once, in order

    def _enter(self, stage: Stage) -> None:
        expected = next(self._stages, None)
        if expected != stage:
            self._stages = iter(())  # a round that went out of order cannot be resumed
            raise ProtocolViolation(f"server asked to run stage {stage.value}, expected stage "
                                    f"{expected.value if expected else 'none (round over)'}")

    def _send(self, cls, recipient: int, stage: Stage, **body) -> Message:
        message = cls(sender=SERVER, recipient=recipient, stage=stage, round_id=self.round_id, **body)
        self.view.sent.append(message)
        return message

    def _receive(self, messages: Iterable[Message], stage: Stage, kind: type,
                 expected: Iterable[int]) -> dict:
        """Record every message, then accept one per expected sender; abort below the threshold."""
        expected, accepted = set(expected), {}
        for message in messages:
            self.view.received.append(message)
            check_header(message, recipient=SERVER, round_id=self.round_id, stage=stage, kind=kind)
            if message.sender not in expected:
                raise ProtocolViolation(f"stage {stage.value}: client {message.sender!r} "
                                        "is not in this stage")
            if message.sender in accepted:
                raise ProtocolViolation(f"stage {stage.value}: second message from client "
                                        f"{message.sender}: replayed")
            accepted[message.sender] = message
        if len(accepted) < self.threshold:
            raise SecAggAbort(f"only {len(accepted)} clients answered stage {stage.value}; "
                              f"threshold={self.threshold} needs at least {self.threshold}")
        return dict(sorted(accepted.items()))

    def setup(self) -> list[SetupRequest]:
        """Stage 0: tell each client the round's parameters and its neighbours."""
        self._enter(Stage.SETUP)
        return [self._send(SetupRequest, u, Stage.SETUP, neighbours=self.neighbours[u],
                           threshold=self.threshold, modulus_bits=self.modulus_bits,
                           vector_length=self.vector_length)
                for u in self.clients]

    def advertise_keys(self, adverts: Iterable[KeyAdvert]) -> list[KeyBroadcast]:
        """Stage 1: collect public keys; send each client its live neighbours' keys."""
        self._enter(Stage.ADVERTISE_KEYS)
        self.adverts = self._receive(adverts, Stage.ADVERTISE_KEYS, KeyAdvert, self.clients)
        all_keys = [k for a in self.adverts.values() for k in (a.cipher_public_key, a.mask_public_key)]
        if len(set(all_keys)) != len(all_keys):  # a reused key would make two clients' masks collide
            raise ProtocolViolation("two advertised public keys are identical")
        self.live_neighbours = {u: [v for v in self.neighbours[u] if v in self.adverts] for u in self.adverts}
        return [self._send(KeyBroadcast, u, Stage.ADVERTISE_KEYS, public_keys={
                    v: (self.adverts[v].cipher_public_key, self.adverts[v].mask_public_key)
                    for v in self.live_neighbours[u]})
                for u in self.adverts]

    def share_keys(self, messages: Iterable[EncryptedShares]) -> list[ForwardedShares]:
        """Stage 2: collect encrypted shares (opaque to the server); forward each to its recipient."""
        self._enter(Stage.SHARE_KEYS)
        self.shared = self._receive(messages, Stage.SHARE_KEYS, EncryptedShares, self.adverts)
        for u, message in self.shared.items():
            if set(message.ciphertexts) != set(self.live_neighbours[u]):
                raise ProtocolViolation(f"client {u} sent shares to clients other than its live neighbours")
        # v masks with exactly the neighbours whose shares it receives; the graph is symmetric.
        self.mask_peers = {v: [u for u in self.shared if v in self.shared[u].ciphertexts]
                           for v in self.shared}
        return [self._send(ForwardedShares, v, Stage.SHARE_KEYS,
                           ciphertexts={u: self.shared[u].ciphertexts[v] for u in self.mask_peers[v]})
                for v in self.shared]

    def masked_input(self, messages: Iterable[MaskedInput]) -> list[UnmaskRequest]:
        """Stage 3: collect masked inputs; their senders are the clients whose input will be summed."""
        self._enter(Stage.MASKED_INPUT)
        self.masked = self._receive(messages, Stage.MASKED_INPUT, MaskedInput, self.shared)
        for u, message in self.masked.items():
            if message.vector.dtype != vector_dtype(self.modulus_bits):
                raise ProtocolViolation(f"client {u} sent a {message.vector.dtype} vector")
            check_input(message.vector, self.vector_length, self.modulus_bits, f"masked input of client {u}")
        self.view.survivors = tuple(self.masked)
        self.dropped = [u for u in self.shared if u not in self.masked]
        # Each client hears only about its own neighbours: O(k) bytes, as in Bell et al.
        return [self._send(UnmaskRequest, v, Stage.UNMASK,
                           survivors=tuple(u for u in [*self.mask_peers[v], v] if u in self.masked),
                           dropped=tuple(u for u in self.mask_peers[v] if u not in self.masked))
                for v in self.masked]

    def unmask(self, messages: Iterable[UnmaskResponse]) -> np.ndarray:
        """Stage 4: rebuild survivors' seeds and dropouts' mask keys; return the sum mod 2^m."""
        self._enter(Stage.UNMASK)
        responses = self._receive(messages, Stage.UNMASK, UnmaskResponse, self.masked)
        requested = {m.recipient: m for m in self.view.sent if isinstance(m, UnmaskRequest)}
        for v, response in responses.items():
            if (set(response.seed_shares), set(response.key_shares)) != (
                    set(requested[v].survivors), set(requested[v].dropped)):
                raise ProtocolViolation(f"client {v} answered for other clients than it was asked about")
        masks = [(self._rebuild(u, responses, "seed_shares"), -1) for u in self.masked]
        for u in self.dropped:
            survivors = [v for v in self.mask_peers[u] if v in self.masked]
            if not survivors:
                continue  # nobody masked with u, nothing to remove
            mask_keys = keys.KeyPair.from_private_bytes(self._rebuild(u, responses, "key_shares"))
            if mask_keys.public != self.adverts[u].mask_public_key:
                raise ReconstructionError(f"the mask key rebuilt for client {u} does not match its advert")
            for v in survivors:
                seed = keys.agree(mask_keys.private, self.adverts[v].mask_public_key,
                                  keys.pair_context(u, v, self.round_id, "mask"))
                masks.append((seed, -1 if v < u else 1))  # undo the sign v used
        total = np.zeros(self.vector_length, dtype=vector_dtype(self.modulus_bits))
        # One pass: add every masked input and remove every mask, chunk by chunk (wraps mod 2^m).
        return apply_masks(total, masks, self.modulus_bits, workers=self.workers,
                           addends=[message.vector for message in self.masked.values()])

    def _rebuild(self, owner: int, responses: dict, kind: str) -> bytes:
        shares = [shamir.Share.from_bytes(getattr(r, kind)[owner]) for r in responses.values()
                  if owner in getattr(r, kind)]
        if len(shares) < self.threshold:
            what = "self-mask seed" if kind == "seed_shares" else "mask key"
            raise SecAggAbort(f"cannot rebuild the {what} of client {owner}: only {len(shares)} of its share "
                              f"holders (live neighbours and itself) answered, threshold={self.threshold}")
        return shamir.combine_shares(shares, self.threshold, secret_bytes=keys.KEY_BYTES)
