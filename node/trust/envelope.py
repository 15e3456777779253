"""The signed envelope every node-to-node call carries (docs/protocol.md, sections 2-4).

The signature covers a domain-separated, length-prefixed signing input rather than the
protobuf bytes, because protobuf serialisation is not canonical: two correct encoders may
disagree on bytes, but never on the fields. The body enters by its SHA-256 digest and is
carried as the exact bytes signed, so it is never re-serialised before it is verified.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from typing import NoReturn, Protocol

import prometheus_client
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from sqlmodel import Session
from yrd.envelope.v1.envelope_pb2 import Envelope
from yrd.federation.v1.manifest_pb2 import Member

from core.clock import Clock
from core.errors import ConfigError, EnvelopeRejected, InvalidInput
from core.keys import NodeKey
from core.wire import i64, lp
from node.trust.nonces import NonceStore

log = logging.getLogger(__name__)

ENVELOPE_DOMAIN = b"yrd-envelope-v1\x00"
NONCE_BYTES = 16
SIGNATURE_BYTES = 64
DEFAULT_MAX_SKEW_MS = 30_000

REJECTIONS = prometheus_client.Counter(
    "yrd_envelope_rejections", "Envelopes refused by verification, by reason code", ["reason"]
)


def signing_input(env: Envelope) -> bytes:
    return b"".join(
        (
            ENVELOPE_DOMAIN,
            lp(env.sender.encode()),
            lp(env.key_id.encode()),
            lp(env.destination.encode()),
            lp(env.method.encode()),
            i64(env.created_at_ms),
            lp(env.nonce),
            lp(hashlib.sha256(env.body).digest()),
            lp(env.in_reply_to),
        )
    )


def request_digest(env: Envelope) -> bytes:
    """What a response carries in ``in_reply_to``: it names the request's every signed field."""
    return hashlib.sha256(signing_input(env)).digest()


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def seal_envelope(
    key: NodeKey,
    *,
    sender: str,
    destination: str,
    method: str,
    body: bytes,
    now_ms: int,
    in_reply_to: bytes = b"",
    nonce: bytes | None = None,
) -> Envelope:
    env = Envelope(
        sender=sender,
        key_id=key.key_id,
        destination=destination,
        method=method,
        created_at_ms=now_ms,
        nonce=new_nonce() if nonce is None else nonce,
        body=body,
        in_reply_to=in_reply_to,
    )
    env.signature = key.sign(signing_input(env))
    return env


def answer(key: NodeKey, request: Envelope, body: bytes, now_ms: int, sender: str) -> Envelope:
    """The signed response to ``request``, bound to it by the request digest."""
    if sender != request.destination:
        raise InvalidInput(
            f"{sender} cannot answer an envelope addressed to {request.destination}",
            code="wrong_responder",
            field="sender",
        )
    return seal_envelope(
        key,
        sender=sender,
        destination=request.sender,
        method=request.method,
        body=body,
        now_ms=now_ms,
        in_reply_to=request_digest(request),
    )


class KeyDirectory(Protocol):
    def verify_key(self, node_id: str, key_id: str, at_ms: int) -> bytes:
        """The raw public key, or EnvelopeRejected unknown_sender/unknown_key/key_revoked/key_not_valid."""
        ...

    def member(self, node_id: str) -> Member | None:
        """The manifest entry of ``node_id``: a relay learns from its ``relay`` whom it serves."""
        ...


class EnvelopeVerifier:
    """Checks envelopes addressed to ``node_id`` in the fixed order of docs/protocol.md.

    The order is part of the contract (the vectors name one reason per case) and puts
    the nonce last, so only correctly signed envelopes can use up a nonce.
    """

    def __init__(
        self,
        node_id: str,
        keys: KeyDirectory | Callable[[], KeyDirectory],
        nonces: NonceStore,
        clock: Clock,
        max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
    ) -> None:
        if max_skew_ms <= 0:
            raise ConfigError("max_skew_ms must be positive", field="max_skew_ms")
        if nonces.window_ms < max_skew_ms:
            raise ConfigError(
                f"nonce window {nonces.window_ms} ms is shorter than the skew {max_skew_ms} ms; "
                "replays would pass",
                field="max_skew_ms",
            )
        self.node_id = node_id
        self._keys: Callable[[], KeyDirectory] = keys if callable(keys) else lambda: keys
        self._nonces = nonces
        self._clock = clock
        self.max_skew_ms = max_skew_ms

    async def verify_request(self, env: Envelope, method: str) -> None:
        """Every check, the nonce last, for a call that carries one envelope."""
        self.check_request(env, method)
        if not await self._nonces.remember(env.sender, env.nonce, env.created_at_ms, self._clock.now_ms()):
            self._replayed(env, method)

    def check_request(self, env: Envelope, method: str) -> None:
        """Every check but the nonce. A batch checks each envelope with this, then records
        the nonces of those it acts on with :meth:`record_nonce` in the transaction that
        acts on them: a nonce is used up only by an envelope that verified and was acted on,
        so the sender may resend unchanged anything a failed transaction did not keep."""
        try:
            self._check_signed(env, method, None)
        except EnvelopeRejected as e:
            REJECTIONS.labels(e.code).inc()
            log.info("request from %r on %s rejected: %s", env.sender, method, e.code)
            raise

    def record_nonce(self, session: Session, env: Envelope) -> None:
        """The last check of an envelope that passed :meth:`check_request`, inside ``session``."""
        if not self._nonces.remember_in(
            session, env.sender, env.nonce, env.created_at_ms, self._clock.now_ms()
        ):
            self._replayed(env, env.method)

    def record_nonces(self, session: Session, envs: Sequence[Envelope]) -> list[EnvelopeRejected | None]:
        """:meth:`record_nonce` for a batch's envelopes in one statement: the refusal of each
        replayed one (an envelope repeated within the batch is a replay the second time), None
        for the others."""
        seen = [(env.sender, env.nonce, env.created_at_ms) for env in envs]
        fresh = self._nonces.remember_all_in(session, seen, self._clock.now_ms())
        refusals: list[EnvelopeRejected | None] = []
        for env, ok in zip(envs, fresh, strict=True):
            if ok:
                refusals.append(None)
                continue
            try:
                self._replayed(env, env.method)
            except EnvelopeRejected as e:
                refusals.append(e)
        return refusals

    def _replayed(self, env: Envelope, method: str) -> NoReturn:
        REJECTIONS.labels("nonce_replayed").inc()
        log.info("request from %r on %s rejected: %s", env.sender, method, "nonce_replayed")
        raise EnvelopeRejected("nonce already seen", code="nonce_replayed")

    def verify_response(self, response: Envelope, request: Envelope) -> None:
        """Responses need no nonce store: the request digest they carry is already unique."""
        try:
            self._check_signed(response, request.method, request)
        except EnvelopeRejected as e:
            REJECTIONS.labels(e.code).inc()
            log.info("response from %r on %s rejected: %s", response.sender, request.method, e.code)
            raise

    def verify_forwarded(self, inner: Envelope, method: str) -> None:
        """An envelope carried in another envelope's body (docs/protocol.md, section 3.3).

        The outer envelope was verified already and is what makes the call fresh, so the
        inner one meets no skew and no nonce store: it may have waited in a relay's outbox
        for longer than any skew, and a replayed copy is absorbed by the idempotency of what
        it carries (application ids, status sequence numbers). This node is its destination
        when it is addressed here, its relay when the manifest names this node as the relay
        of its destination, and has no business with it otherwise.
        """
        try:
            _check_form(inner, is_request=True)
            keys = self._keys()
            public_key = keys.verify_key(inner.sender, inner.key_id, inner.created_at_ms)
            if inner.destination != self.node_id:
                destination = keys.member(inner.destination)
                if destination is None or destination.relay != self.node_id:
                    raise EnvelopeRejected(
                        "addressed to another node, and this node is not its relay", code="wrong_destination"
                    )
            if inner.method != method:
                raise EnvelopeRejected(
                    f"signed for {inner.method!r}, carried on {method}", code="method_mismatch"
                )
            _check_signature(public_key, inner)
        except EnvelopeRejected as e:
            REJECTIONS.labels(e.code).inc()
            log.info("forwarded envelope from %r on %s rejected: %s", inner.sender, method, e.code)
            raise

    def _check_signed(self, env: Envelope, method: str, request: Envelope | None) -> None:
        _check_form(env, is_request=request is None)
        public_key = self._keys().verify_key(env.sender, env.key_id, env.created_at_ms)
        if env.destination != self.node_id:
            raise EnvelopeRejected(
                f"addressed to {env.destination}, not to this node", code="wrong_destination"
            )
        if request is not None and env.sender != request.destination:
            raise EnvelopeRejected(
                f"answered by {env.sender}, not by {request.destination}", code="response_mismatch"
            )
        if env.method != method:
            raise EnvelopeRejected(f"signed for {env.method}, arrived on {method}", code="method_mismatch")
        if request is not None and env.in_reply_to != request_digest(request):
            raise EnvelopeRejected("in_reply_to is not the digest of the request", code="response_mismatch")
        skew = self._clock.now_ms() - env.created_at_ms
        if abs(skew) > self.max_skew_ms:
            raise EnvelopeRejected(f"created {skew} ms away from now", code="clock_skew")
        _check_signature(public_key, env)


def _check_signature(public_key: bytes, env: Envelope) -> None:
    try:
        VerifyKey(public_key).verify(signing_input(env), env.signature)
    except BadSignatureError as e:
        raise EnvelopeRejected("signature does not verify", code="bad_signature") from e


def _check_form(env: Envelope, *, is_request: bool) -> None:
    if len(env.nonce) != NONCE_BYTES:
        raise EnvelopeRejected(f"nonce must be {NONCE_BYTES} bytes", code="malformed_envelope")
    if len(env.signature) != SIGNATURE_BYTES:
        raise EnvelopeRejected(f"signature must be {SIGNATURE_BYTES} bytes", code="malformed_envelope")
    for name in ("sender", "key_id", "destination", "method"):
        if not getattr(env, name):
            raise EnvelopeRejected(f"{name} is empty", code="malformed_envelope")
    if is_request and env.in_reply_to:
        # Otherwise a response could be replayed as a request of the same method.
        raise EnvelopeRejected("a request carries no in_reply_to", code="malformed_envelope")
