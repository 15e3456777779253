"""Per-peer limits on the peer service: calls per second and calls in flight, keyed by the
peer that is authenticated for the call, so one flooding member is refused while the others
are served.

Who the caller is, cheapest proof first:
- under mutual TLS, the member whose pinned certificate the client presented;
- otherwise the sender of the call's first envelope once its Ed25519 signature checks
  against the manifest (one verification, before the batch's real work);
- anything else (a stranger, a forged or garbled first envelope) shares one
  ``unauthenticated`` budget, so forging another member's name cannot spend its budget.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import grpc
from nacl.exceptions import BadSignatureError
from nacl.exceptions import ValueError as NaclValueError
from nacl.signing import VerifyKey
from yrd.envelope.v1 import envelope_pb2
from yrd.federation.v1.manifest_pb2 import Member

from core.clock import Clock
from core.errors import EnvelopeRejected, RateLimited
from core.ratelimit import ConcurrencyLimiter, RateLimiter
from node import metrics
from node.trust.envelope import signing_input
from node.trust.keyring import Trust
from node.trust.tls import member_of_peer_certificate

UNAUTHENTICATED = "?unauthenticated"  # not a node id ([a-z0-9-]), so no member can own it


class PeerLimits:
    def __init__(self, trust: Trust, clock: Clock, *, rate: float, burst: int, max_concurrent: int) -> None:
        self.trust = trust
        self.rate = RateLimiter(clock, rate=rate, burst=burst, max_keys=1024)
        self.concurrent = ConcurrencyLimiter(max_concurrent)
        # Queries this node relays to one member, from all askers together: that member counts
        # them all as this node's calls, so they may hold half its per-peer cap (taking ours as
        # its) and this node's own deliveries to it keep the other half.
        self.relayed = ConcurrencyLimiter(max(1, max_concurrent // 2))

    def caller(
        self, context: grpc.aio.ServicerContext[Any, Any], envelopes: Sequence[envelope_pb2.Envelope]
    ) -> str:
        members: list[Member] = self.trust.manifest.members
        auth = context.auth_context()
        for pem in auth.get("x509_pem_cert", []):
            member = member_of_peer_certificate(pem, members)
            if member is not None:
                return member
        if envelopes and _signed_by_sender(self.trust, envelopes[0]):
            return envelopes[0].sender
        return UNAUTHENTICATED

    @contextmanager
    def admit(
        self, context: grpc.aio.ServicerContext[Any, Any], envelopes: Sequence[envelope_pb2.Envelope]
    ) -> Iterator[None]:
        """Hold one call of its caller, or raise RateLimited (RESOURCE_EXHAUSTED)."""
        caller = self.caller(context, envelopes)
        try:
            self.rate.check(caller, "calls")
            with self.concurrent.hold(caller):
                yield
        except RateLimited as e:
            metrics.PEER_CALLS_LIMITED.labels(reason=e.code).inc()
            raise

    @contextmanager
    def relaying(self, destination: str) -> Iterator[None]:
        """Hold one relayed query to ``destination``, or raise RateLimited (``too_many_calls``)."""
        try:
            with self.relayed.hold(destination):
                yield
        except RateLimited as e:
            metrics.PEER_CALLS_LIMITED.labels(reason=e.code).inc()
            raise


def _signed_by_sender(trust: Trust, env: envelope_pb2.Envelope) -> bool:
    try:
        public_key = trust.manifest.verify_key(env.sender, env.key_id, env.created_at_ms)
        VerifyKey(public_key).verify(signing_input(env), env.signature)
    except (EnvelopeRejected, BadSignatureError, NaclValueError):
        return False
    return True
