"""Single signed request/response calls to a peer (catalogue pulls, manifest gossip):
sign the query, verify that the answer is bound to it, return the answer's body."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from google.protobuf.message import DecodeError, Message

from core.clock import Clock
from core.errors import InvalidInput
from node.config import PEER_CALL_TIMEOUT_S
from node.trust.envelope import EnvelopeVerifier, seal_envelope
from node.trust.keyring import Trust

M = TypeVar("M", bound=Message)


def parse_body(message_type: type[M], body: bytes) -> M:
    """A peer's message from envelope bytes; bytes that do not parse are the peer's fault,
    reported as such rather than as a bug of ours."""
    try:
        return message_type.FromString(body)
    except DecodeError as e:
        raise InvalidInput(f"body is not a {message_type.DESCRIPTOR.name}", code="malformed_body") from e


async def signed_call(
    call: Callable[..., Awaitable[Any]],
    request_type: Callable[..., object],
    *,
    trust: Trust,
    verifier: EnvelopeVerifier,
    clock: Clock,
    peer: str,
    method: str,
    body: bytes,
) -> bytes:
    env = seal_envelope(
        trust.key, sender=trust.node_id, destination=peer, method=method, body=body, now_ms=clock.now_ms()
    )
    response = await call(request_type(envelope=env), timeout=PEER_CALL_TIMEOUT_S)
    verifier.verify_response(response.envelope, env)
    answer: bytes = response.envelope.body
    return answer
