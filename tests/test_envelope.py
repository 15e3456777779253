"""The signed envelope: round trip, every rejection reason, and tampering properties."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from yrd.envelope.v1.envelope_pb2 import Envelope
from yrd.federation.v1 import manifest_pb2 as mpb

from core.clock import FakeClock
from core.errors import ConfigError, EnvelopeRejected, InvalidInput
from core.keys import NodeKey
from node.trust.envelope import (
    ENVELOPE_DOMAIN,
    EnvelopeVerifier,
    answer,
    new_nonce,
    request_digest,
    seal_envelope,
    signing_input,
)
from node.trust.nonces import MemoryNonceStore
from registry.manifest import TrustedManifest, sign_manifest, verify_anchor

NOW = 1_767_225_600_000
DAY = 86_400_000
DELIVER = "/yrd.peer.v1.PeerService/Deliver"
KEYS = {
    name: NodeKey.from_seed(hashlib.sha256(name.encode()).digest()) for name in ("a1", "a2", "b1", "old", "x")
}
ACTIVE, REVOKED = mpb.KEY_STATUS_ACTIVE, mpb.KEY_STATUS_REVOKED


def entry(name: str, nb: int = NOW - DAY, na: int = NOW + DAY, status: int = ACTIVE) -> mpb.MemberKey:
    k = KEYS[name]
    return mpb.MemberKey(
        key_id=k.key_id, public_key=k.public_key, not_before_ms=nb, not_after_ms=na, status=status
    )


def directory(*a_keys: mpb.MemberKey) -> TrustedManifest:
    members = [
        mpb.Member(node_id="node-a", jurisdictions=["31"], keys=a_keys or [entry("a1"), entry("a2")]),
        mpb.Member(node_id="node-b", jurisdictions=["32"], keys=[entry("b1")]),
    ]
    body = mpb.Manifest(
        federation_id="f", version=1, threshold=1, issued_at_ms=NOW, expires_at_ms=NOW + DAY, members=members
    ).SerializeToString()
    return verify_anchor(sign_manifest(mpb.SignedManifest(manifest=body), "node-b", KEYS["b1"]))


@dataclass
class World:
    clock: FakeClock
    nonces: MemoryNonceStore
    verifier: EnvelopeVerifier


@pytest.fixture
def world() -> World:
    clock, nonces = FakeClock(NOW), MemoryNonceStore()
    return World(clock, nonces, EnvelopeVerifier("node-b", directory(), nonces, clock))


def request(key: str = "a1", **over: object) -> Envelope:
    fields: dict[str, object] = {
        "sender": "node-a",
        "destination": "node-b",
        "method": DELIVER,
        "body": b"hi",
    }
    fields.update(over)
    fields.setdefault("now_ms", NOW)
    return seal_envelope(KEYS[key], **fields)  # type: ignore[arg-type]


async def rejected(world: World, env: Envelope, method: str = DELIVER) -> str:
    with pytest.raises(EnvelopeRejected) as err:
        await world.verifier.verify_request(env, method)
    return err.value.code


async def test_round_trip(world: World) -> None:
    env = request()
    await world.verifier.verify_request(env, DELIVER)
    assert len(env.nonce) == 16 and len(env.signature) == 64 and env.key_id == KEYS["a1"].key_id


def test_signing_input_layout() -> None:
    env = request(nonce=bytes(16), body=b"")
    expected = (
        ENVELOPE_DOMAIN
        + b"\x00\x00\x00\x06node-a"
        + b"\x00\x00\x00\x12"
        + KEYS["a1"].key_id.encode()
        + b"\x00\x00\x00\x06node-b"
        + len(DELIVER).to_bytes(4, "big")
        + DELIVER.encode()
        + NOW.to_bytes(8, "big", signed=True)
        + b"\x00\x00\x00\x10"
        + bytes(16)
        + b"\x00\x00\x00\x20"
        + hashlib.sha256(b"").digest()
        + b"\x00\x00\x00\x00"
    )
    assert signing_input(env) == expected
    assert request_digest(env) == hashlib.sha256(expected).digest()


def test_negative_created_at_is_twos_complement() -> None:
    env = request(now_ms=-1)
    assert signing_input(env)[-(4 + 32 + 4 + 16 + 4 + 8) :][:8] == b"\xff" * 8


async def test_replay_is_refused(world: World) -> None:
    env = request()
    await world.verifier.verify_request(env, DELIVER)
    assert await rejected(world, env) == "nonce_replayed"


async def test_forgery_does_not_burn_the_nonce(world: World) -> None:
    env = request()
    forged = Envelope()
    forged.CopyFrom(env)
    forged.body = b"forged"
    assert await rejected(world, forged) == "bad_signature"
    await world.verifier.verify_request(env, DELIVER)


@pytest.mark.parametrize("offset", [-30_000, 30_000, 0])
async def test_skew_limit_is_inclusive(world: World, offset: int) -> None:
    await world.verifier.verify_request(request(now_ms=NOW + offset), DELIVER)


@pytest.mark.parametrize("offset", [-30_001, 30_001, -DAY // 2])
async def test_skew_beyond_limit_in_both_directions(world: World, offset: int) -> None:
    assert await rejected(world, request(now_ms=NOW + offset)) == "clock_skew"


async def test_configurable_skew() -> None:
    clock = FakeClock(NOW)
    verifier = EnvelopeVerifier("node-b", directory(), MemoryNonceStore(120_000), clock, max_skew_ms=90_000)
    await verifier.verify_request(request(now_ms=NOW - 90_000), DELIVER)
    with pytest.raises(EnvelopeRejected, match="clock_skew"):
        await verifier.verify_request(request(now_ms=NOW + 90_001), DELIVER)


def test_nonce_window_shorter_than_skew_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        EnvelopeVerifier("node-b", directory(), MemoryNonceStore(10_000), FakeClock(), max_skew_ms=30_000)


@pytest.mark.parametrize(
    ("a_keys", "code"),
    [
        ([entry("a1", nb=NOW + 1)], "key_not_valid"),  # not yet valid
        ([entry("a1", na=NOW)], "key_not_valid"),  # expired: the window is half-open
        ([entry("a1", status=REVOKED)], "key_revoked"),
        ([entry("a2")], "unknown_key"),
    ],
)
async def test_key_checks(a_keys: list[mpb.MemberKey], code: str) -> None:
    clock = FakeClock(NOW)
    verifier = EnvelopeVerifier("node-b", directory(*a_keys), MemoryNonceStore(), clock)
    with pytest.raises(EnvelopeRejected) as err:
        await verifier.verify_request(request(), DELIVER)
    assert err.value.code == code


async def test_retiring_key_is_still_accepted() -> None:
    verifier = EnvelopeVerifier(
        "node-b", directory(entry("a1", status=mpb.KEY_STATUS_RETIRING)), MemoryNonceStore(), FakeClock(NOW)
    )
    await verifier.verify_request(request(), DELIVER)


async def test_unknown_sender_and_misrouting(world: World) -> None:
    assert await rejected(world, request("x", sender="node-x")) == "unknown_sender"
    assert await rejected(world, request(destination="node-c")) == "wrong_destination"
    assert await rejected(world, request(), "/yrd.peer.v1.PeerService/NotifyStatus") == "method_mismatch"


@pytest.mark.parametrize(
    "change",
    [
        {"nonce": bytes(15)},
        {"signature": bytes(63)},
        {"sender": ""},
        {"key_id": ""},
        {"destination": ""},
        {"method": ""},
        {"in_reply_to": bytes(32)},
    ],
)
async def test_malformed(world: World, change: dict[str, object]) -> None:
    env = request()
    for k, v in change.items():
        setattr(env, k, v)
    assert await rejected(world, env) == "malformed_envelope"


async def test_the_manifest_can_be_replaced_at_runtime() -> None:
    current = [directory()]
    verifier = EnvelopeVerifier("node-b", lambda: current[0], MemoryNonceStore(), FakeClock(NOW))
    await verifier.verify_request(request(), DELIVER)
    current[0] = directory(entry("a1", status=REVOKED))
    with pytest.raises(EnvelopeRejected, match="key_revoked"):
        await verifier.verify_request(request(), DELIVER)


async def test_rejections_are_counted_by_reason(world: World) -> None:
    def count() -> float:
        return (
            REGISTRY.get_sample_value("yrd_envelope_rejections_total", {"reason": "wrong_destination"}) or 0.0
        )

    before = count()
    await rejected(world, request(destination="node-c"))
    assert count() == before + 1


def test_new_nonce_is_16_random_bytes() -> None:
    assert len(new_nonce()) == 16 and new_nonce() != new_nonce()


# --- responses ----------------------------------------------------------------------------------


def test_response_round_trip_and_binding(world: World) -> None:
    req = request("b1", sender="node-b", destination="node-a")
    resp = answer(KEYS["a1"], req, b"receipt", NOW + 10, sender="node-a")
    assert (resp.sender, resp.destination, resp.method) == ("node-a", "node-b", DELIVER)
    assert resp.in_reply_to == request_digest(req) and resp.nonce != req.nonce
    world.verifier.verify_response(resp, req)
    other = request("b1", sender="node-b", destination="node-a")
    with pytest.raises(EnvelopeRejected, match="response_mismatch"):
        world.verifier.verify_response(resp, other)


def test_response_checks(world: World) -> None:
    req = request("b1", sender="node-b", destination="node-a")
    by_other = seal_envelope(
        KEYS["b1"], sender="node-b", destination="node-b", method=DELIVER, body=b"", now_ms=NOW,
        in_reply_to=request_digest(req),
    )  # fmt: skip
    with pytest.raises(EnvelopeRejected, match="response_mismatch"):
        world.verifier.verify_response(by_other, req)
    late = answer(KEYS["a1"], req, b"", NOW - 30_001, sender="node-a")
    with pytest.raises(EnvelopeRejected, match="clock_skew"):
        world.verifier.verify_response(late, req)
    to_other = request("a1", destination="node-c", in_reply_to=request_digest(req))
    with pytest.raises(EnvelopeRejected, match="wrong_destination"):
        world.verifier.verify_response(to_other, req)


def test_only_the_destination_may_answer() -> None:
    req = request("b1", sender="node-b", destination="node-a")
    with pytest.raises(InvalidInput, match="wrong_responder"):
        answer(KEYS["a1"], req, b"", NOW, sender="node-c")


# --- properties ---------------------------------------------------------------------------------

FIELDS = ("sender", "key_id", "destination", "method", "created_at_ms", "nonce", "body", "in_reply_to")
text = st.text(max_size=12)
tuples = st.tuples(
    text, text, text, text, st.integers(-(2**63), 2**63 - 1), st.binary(max_size=20), st.binary(max_size=20),
    st.binary(max_size=40),
)  # fmt: skip


@given(tuples, tuples)
def test_distinct_field_tuples_never_share_a_signing_input(
    a: tuple[object, ...], b: tuple[object, ...]
) -> None:
    ea, eb = Envelope(**dict(zip(FIELDS, a, strict=True))), Envelope(**dict(zip(FIELDS, b, strict=True)))
    assert (signing_input(ea) == signing_input(eb)) == (a == b)


@settings(max_examples=60)
@given(st.binary(min_size=1, max_size=64), st.data())
async def test_any_body_byte_change_fails_the_signature(body: bytes, data: st.DataObject) -> None:
    clock = FakeClock(NOW)
    verifier = EnvelopeVerifier("node-b", directory(), MemoryNonceStore(), clock)
    env = request(body=body)
    i = data.draw(st.integers(0, len(body) - 1))
    bit = data.draw(st.integers(0, 7))
    env.body = body[:i] + bytes([body[i] ^ (1 << bit)]) + body[i + 1 :]
    with pytest.raises(EnvelopeRejected, match="bad_signature"):
        await verifier.verify_request(env, DELIVER)


MUTATIONS = {
    "sender": st.just("node-b"),
    "key_id": st.just(KEYS["a2"].key_id),
    "destination": st.text(min_size=1, max_size=8),
    "method": st.text(min_size=1, max_size=8),
    "created_at_ms": st.integers(NOW - 30_000, NOW + 30_000),
    "nonce": st.binary(min_size=16, max_size=16),
    "body": st.binary(max_size=8),
    "in_reply_to": st.binary(min_size=1, max_size=32),
}


@settings(max_examples=100)
@given(st.sampled_from(sorted(MUTATIONS)).flatmap(lambda f: st.tuples(st.just(f), MUTATIONS[f])))
async def test_any_change_to_a_signed_field_fails_verification(change: tuple[str, object]) -> None:
    name, value = change
    env = request(nonce=bytes(16))
    if getattr(env, name) == value:
        return
    setattr(env, name, value)
    verifier = EnvelopeVerifier("node-b", directory(), MemoryNonceStore(), FakeClock(NOW))
    with pytest.raises(EnvelopeRejected):
        await verifier.verify_request(env, DELIVER)
