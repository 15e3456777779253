"""Envelope parser and verifier: damaged or invented envelopes are refused with a reason code
from ENVELOPE_REASONS, and only an envelope whose signed fields are untouched passes.

Run long: ``python -m tests.fuzz.envelope -atheris_runs=100000``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

from google.protobuf.message import DecodeError
from yrd.envelope.v1.envelope_pb2 import Envelope
from yrd.federation.v1 import manifest_pb2 as mpb

from core.clock import FakeClock
from core.errors import ENVELOPE_REASONS, EnvelopeRejected
from core.keys import NodeKey
from node.trust.envelope import EnvelopeVerifier, request_digest, seal_envelope, signing_input
from node.trust.nonces import MemoryNonceStore
from registry.manifest import TrustedManifest, sign_manifest, verify_anchor
from tests.fuzz import MODES, mutate, run

NOW = 1_767_225_600_000
DAY = 86_400_000
DELIVER = "/yrd.peer.v1.PeerService/Deliver"
ME = "node-b"
KEYS = {name: NodeKey.from_seed(hashlib.sha256(name.encode()).digest()) for name in ("a1", "ar", "b1", "c1")}
OWNER = {"a1": "node-a", "ar": "node-a", "b1": "node-b", "c1": "node-c"}


def _key(name: str, status: int = mpb.KEY_STATUS_ACTIVE) -> mpb.MemberKey:
    k = KEYS[name]
    return mpb.MemberKey(
        key_id=k.key_id,
        public_key=k.public_key,
        not_before_ms=NOW - DAY,
        not_after_ms=NOW + DAY,
        status=status,
    )


def _directory() -> TrustedManifest:
    """node-a (with a revoked second key), node-b (this verifier) and node-c behind node-b."""
    members = [
        mpb.Member(
            node_id="node-a", jurisdictions=["31"], keys=[_key("a1"), _key("ar", mpb.KEY_STATUS_REVOKED)]
        ),
        mpb.Member(node_id="node-b", jurisdictions=["32"], keys=[_key("b1")]),
        mpb.Member(node_id="node-c", jurisdictions=["33"], keys=[_key("c1")], relay="node-b"),
    ]
    body = mpb.Manifest(
        federation_id="f", version=1, threshold=1, issued_at_ms=NOW, expires_at_ms=NOW + DAY, members=members
    ).SerializeToString()
    return verify_anchor(sign_manifest(mpb.SignedManifest(manifest=body), "node-b", KEYS["b1"]))


DIRECTORY = _directory()
_LOOP = asyncio.new_event_loop()


def verifier() -> EnvelopeVerifier:
    """A fresh verifier (and nonce store) so that each input is judged on its own."""
    clock = FakeClock(NOW)
    return EnvelopeVerifier(ME, DIRECTORY, MemoryNonceStore(), clock)


def seal(key: str = "a1", **over: object) -> Envelope:
    fields: dict[str, object] = {"sender": OWNER[key], "destination": ME, "method": DELIVER, "body": b"x"}
    fields.update(over)
    fields.setdefault("now_ms", NOW)
    return seal_envelope(KEYS[key], **fields)  # type: ignore[arg-type]


# The request node-b sent to node-a, which the response seed answers.
OUR_REQUEST = seal("b1", destination="node-a", body=b"query")

Check = Callable[[EnvelopeVerifier, Envelope], None]


def check_request(v: EnvelopeVerifier, env: Envelope) -> None:
    _LOOP.run_until_complete(v.verify_request(env, DELIVER))


def check_response(v: EnvelopeVerifier, env: Envelope) -> None:
    v.verify_response(env, OUR_REQUEST)


def check_forwarded(v: EnvelopeVerifier, env: Envelope) -> None:
    # Section 3.3: for this node, or for a member this node relays for (node-c), else refused.
    v.verify_forwarded(env, DELIVER)


SEEDS: list[tuple[Check, Envelope]] = [
    (check_request, seal()),
    (check_response, seal("a1", in_reply_to=request_digest(OUR_REQUEST), body=b"answer")),
    (check_forwarded, seal(destination="node-c", body=b"for c", now_ms=NOW - 7 * DAY // 8)),
    (check_forwarded, seal(body=b"for me")),
]


def signed_view(env: Envelope) -> tuple[bytes, bytes]:
    return signing_input(env), env.signature


def outcome(check: Check, env: Envelope) -> str | None:
    """None when accepted, else the reason code; anything but EnvelopeRejected is a bug."""
    try:
        check(verifier(), env)
    except EnvelopeRejected as e:
        assert e.code in ENVELOPE_REASONS, e.code
        return e.code
    return None


def fuzz_one(data: bytes) -> None:
    if not data:
        return
    check, seed = SEEDS[(data[0] // MODES) % len(SEEDS)]
    raw = mutate(seed.SerializeToString(), data[0] % MODES, data[1:])
    try:
        env = Envelope.FromString(raw)
    except DecodeError:
        return  # refused by the gRPC layer's deserialiser before any of our code runs
    code = outcome(check, env)
    if signed_view(env) == signed_view(seed):
        assert code is None, f"untouched signed fields refused: {code}"
    else:
        assert code is not None, f"altered envelope accepted: {env}"


if __name__ == "__main__":
    run(fuzz_one)
