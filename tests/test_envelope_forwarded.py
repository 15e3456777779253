"""Relayed envelopes (docs/protocol.md, section 3.3): the published vectors, then the
properties that set a forwarded envelope apart from a request: no skew, no nonce store,
and a relay that only passes on what the manifest says it relays."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from yrd.envelope.v1.envelope_pb2 import Envelope
from yrd.federation.v1 import manifest_pb2 as mpb
from yrd.federation.v1.manifest_pb2 import SignedManifest
from yrd.peer.v1 import peer_pb2

from core.clock import FakeClock
from core.errors import ENVELOPE_REASONS, EnvelopeRejected
from core.keys import NodeKey
from node.trust.envelope import EnvelopeVerifier, request_digest, seal_envelope, signing_input
from registry.manifest import TrustedManifest, sign_manifest, verify_anchor
from tests.support.vectors import SEEDS, VECTORS, envelope

FORWARDED = VECTORS["forwarded"]
DELIVER = "/yrd.peer.v1.PeerService/Deliver"
NOTIFY = "/yrd.peer.v1.PeerService/NotifyStatus"


class NoNonces:
    """A nonce store that fails the test when asked: forwarded envelopes must not use one."""

    window_ms = 60_000

    async def remember(self, sender: str, nonce: bytes, created_at_ms: int, now_ms: int) -> bool:
        raise AssertionError("a forwarded envelope consulted the nonce store")


def vector_manifest() -> TrustedManifest:
    signed = next(m for m in VECTORS["manifests"]["signed"] if m["name"] == FORWARDED["manifest"])
    return verify_anchor(SignedManifest.FromString(bytes.fromhex(signed["signed_manifest"])))


@pytest.mark.parametrize("vector", FORWARDED["cases"], ids=lambda v: v["name"])
def test_forwarded_vectors(vector: dict[str, Any]) -> None:
    inner = envelope(vector["envelope"])
    assert signing_input(inner).hex() == vector["signing_input"]
    assert request_digest(inner).hex() == vector["digest"]
    outer_body = bytes.fromhex(vector["wrapped_body"])
    item = peer_pb2.DeliverItem() if vector["method_called"] == DELIVER else peer_pb2.StatusItem()
    item.ParseFromString(outer_body)
    # A relay may re-encode the carried message (unknown fields, another field order): compare
    # what is signed and the signature, not protobuf bytes or unknown fields.
    assert item.WhichOneof("item") == "forward"
    assert signing_input(item.forward) == signing_input(inner) and item.forward.signature == inner.signature
    now = FORWARDED["now_ms"]
    verifier = EnvelopeVerifier(vector["receiver"], vector_manifest(), NoNonces(), FakeClock(now))
    method = vector["method_called"]
    if vector["expect"] == "valid":
        assert now - inner.created_at_ms > verifier.max_skew_ms
        assert NodeKey.from_seed(SEEDS[inner.key_id]).sign(signing_input(inner)) == inner.signature
        verifier.verify_forwarded(inner, method)
    else:
        with pytest.raises(EnvelopeRejected) as err:
            verifier.verify_forwarded(inner, method)
        assert err.value.code == vector["expect"]


def test_the_vectors_cover_every_forwarded_reason() -> None:
    expected = {"valid", "malformed_envelope", "unknown_sender", "unknown_key", "key_revoked"}
    expected |= {"key_not_valid", "wrong_destination", "method_mismatch", "bad_signature"}
    assert {v["expect"] for v in FORWARDED["cases"]} == expected
    assert "not_relay" not in ENVELOPE_REASONS  # 3.3: one code for "not for this node"


# --- a small federation of our own: origin a, relay r, city c (relayed by r), bystander b -------------

NOW = 1_767_225_600_000
DAY = 86_400_000
KEYS = {name: NodeKey.from_seed(hashlib.sha256(b"fwd:" + name.encode()).digest()) for name in "arcb"}


def entry(name: str, status: mpb.KeyStatus.ValueType = mpb.KEY_STATUS_ACTIVE) -> mpb.MemberKey:
    k = KEYS[name]
    return mpb.MemberKey(
        key_id=k.key_id,
        public_key=k.public_key,
        not_before_ms=NOW - DAY,
        not_after_ms=NOW + 30 * DAY,
        status=status,
    )


def federation(
    c_relay: str = "node-r", a_status: mpb.KeyStatus.ValueType = mpb.KEY_STATUS_ACTIVE
) -> TrustedManifest:
    members = [
        mpb.Member(node_id="node-a", jurisdictions=["31"], keys=[entry("a", a_status)]),
        mpb.Member(node_id="node-r", jurisdictions=["32"], keys=[entry("r")]),
        mpb.Member(node_id="node-c", jurisdictions=["3205"], keys=[entry("c")], relay=c_relay),
        mpb.Member(node_id="node-b", jurisdictions=["33"], keys=[entry("b")]),
    ]
    body = mpb.Manifest(
        federation_id="f", version=1, threshold=1, issued_at_ms=NOW, expires_at_ms=NOW + DAY, members=members
    ).SerializeToString()
    return verify_anchor(sign_manifest(mpb.SignedManifest(manifest=body), "node-r", KEYS["r"]))


def inner(destination: str = "node-c", created_at_ms: int = NOW, **over: Any) -> Envelope:
    fields: dict[str, Any] = {"sender": "node-a", "destination": destination, "method": DELIVER}
    fields.update({"body": b"app", **over})
    return seal_envelope(KEYS["a"], now_ms=created_at_ms, **fields)


def verifier(node_id: str, clock_ms: int = NOW, manifest: TrustedManifest | None = None) -> EnvelopeVerifier:
    return EnvelopeVerifier(node_id, manifest or federation(), NoNonces(), FakeClock(clock_ms))


def code_of(v: EnvelopeVerifier, env: Envelope, method: str = DELIVER) -> str:
    with pytest.raises(EnvelopeRejected) as err:
        v.verify_forwarded(env, method)
    return err.value.code


@pytest.mark.parametrize("age_ms", [0, 31_000, 20 * DAY, -DAY])
def test_age_is_not_held_against_an_inner_envelope(age_ms: int) -> None:
    env = inner(created_at_ms=NOW)
    verifier("node-r", NOW + age_ms).verify_forwarded(env, DELIVER)
    verifier("node-c", NOW + age_ms).verify_forwarded(env, DELIVER)


def test_the_key_must_be_valid_when_the_inner_envelope_was_made() -> None:
    # Freshness comes from the outer hop; the signer's key window still bounds created_at.
    assert code_of(verifier("node-r"), inner(created_at_ms=NOW + 30 * DAY)) == "key_not_valid"
    assert code_of(verifier("node-c"), inner(created_at_ms=NOW - 2 * DAY)) == "key_not_valid"


def test_a_revoked_key_is_refused_however_old_the_envelope() -> None:
    revoked = federation(a_status=mpb.KEY_STATUS_REVOKED)
    assert code_of(verifier("node-r", manifest=revoked), inner()) == "key_revoked"


def test_the_same_inner_envelope_verifies_again() -> None:
    """A relay's outbox may send it twice; the application id absorbs the copy, not a nonce."""
    env, v = inner(), verifier("node-c")
    v.verify_forwarded(env, DELIVER)
    v.verify_forwarded(env, DELIVER)


@pytest.mark.parametrize(
    ("node", "destination", "code"),
    [
        ("node-b", "node-c", "wrong_destination"),  # c's relay is r, not b
        ("node-r", "node-b", "wrong_destination"),  # b has no relay at all
        ("node-r", "node-zz", "wrong_destination"),  # not a member
    ],
)
def test_a_relay_passes_on_only_for_the_members_it_relays(node: str, destination: str, code: str) -> None:
    assert code_of(verifier(node), inner(destination)) == code


def test_the_relay_follows_the_current_manifest() -> None:
    current = [federation()]
    v = EnvelopeVerifier("node-r", lambda: current[0], NoNonces(), FakeClock(NOW))
    v.verify_forwarded(inner(), DELIVER)
    current[0] = federation(c_relay="node-b")
    assert code_of(v, inner()) == "wrong_destination"


def test_at_the_destination_it_must_be_addressed_here() -> None:
    assert code_of(verifier("node-b"), inner("node-c")) == "wrong_destination"


def test_inner_method_must_match_the_outer_call() -> None:
    assert code_of(verifier("node-c"), inner(), NOTIFY) == "method_mismatch"
    verifier("node-c").verify_forwarded(inner(method=NOTIFY), NOTIFY)


def test_a_response_cannot_travel_as_an_inner_request() -> None:
    request = inner()
    smuggled = inner(in_reply_to=request_digest(request))
    assert code_of(verifier("node-r"), smuggled) == "malformed_envelope"


def test_a_relay_cannot_readdress_an_envelope_to_itself() -> None:
    env = inner()
    env.destination = "node-r"
    assert code_of(verifier("node-r"), env) == "bad_signature"


def test_destination_is_checked_before_the_signature() -> None:
    env = inner()
    env.body = b"forged"
    assert code_of(verifier("node-b"), env) == "wrong_destination"
    assert code_of(verifier("node-r"), env) == "bad_signature"


def test_rejections_are_counted_by_reason() -> None:
    def count() -> float:
        return (
            REGISTRY.get_sample_value("yrd_envelope_rejections_total", {"reason": "wrong_destination"}) or 0.0
        )

    before = count()
    code_of(verifier("node-b"), inner())
    assert count() == before + 1


MUTATIONS = {
    "sender": st.sampled_from(["node-b", "node-r", "node-c"]),
    "key_id": st.sampled_from([KEYS[n].key_id for n in "rcb"]),
    "destination": st.text(min_size=1, max_size=8),
    "method": st.text(min_size=1, max_size=8),
    "created_at_ms": st.integers(NOW - DAY, NOW + 30 * DAY - 1),
    "nonce": st.binary(min_size=16, max_size=16),
    "body": st.binary(max_size=8),
    "in_reply_to": st.binary(min_size=1, max_size=32),
}


@settings(max_examples=100)
@given(
    st.sampled_from(sorted(MUTATIONS)).flatmap(lambda f: st.tuples(st.just(f), MUTATIONS[f])),
    st.booleans(),
)
def test_any_change_to_a_signed_field_is_refused(change: tuple[str, object], at_relay: bool) -> None:
    name, value = change
    env = inner(nonce=bytes(16))
    if getattr(env, name) == value:
        return
    setattr(env, name, value)
    with pytest.raises(EnvelopeRejected):
        verifier("node-r" if at_relay else "node-c").verify_forwarded(env, DELIVER)
