"""QueryData through a relay (docs/protocol.md 3.3 and 14.1), checked against a second
implementation of the relay's side written from the document alone
(tests/independent/ref_query_relay.py).

Zhejiang is reached only through Jiangsu, as in tests/test_sharing_relayed.py, and Anhui only
through Shanghai (so that "a destination relayed by another member" has a case). Every envelope
is built and signed here by the independent code from the seeds and the manifest the federation
was laid out with; the node is a black box behind its gRPC port. For each case the reference
predicts who decides the call (the relay, or the holder behind it) and with which code, and the
test compares that with what a caller observes: the gRPC status and `yrd-reason` trailer, or a
response envelope that verifies (section 4) as the holder's answer. A relay that forwards returns
the holder's response or the holder's status (14.1); where the two sides could give the same
status (a holder's `clock_skew` against a relay that checked the clock itself), the relay's audit
records of 14.1 ("in" from the asker, "out" to D) tell a forwarded call from a refused one.

Disagreements with the node are marked xfail(strict=True) naming the gap of
tests/independent/QUERY_RELAY_GAPS.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from nacl import bindings
from yrd.envelope.v1.envelope_pb2 import Envelope as PbEnvelope
from yrd.peer.v1 import peer_pb2, peer_pb2_grpc

from simulations.local_federation import PROVINCES
from tests.independent.primitives import public_key_for
from tests.independent.ref_manifest import Manifest, verify_anchor
from tests.independent.ref_protocol import (
    Envelope,
    NonceStore,
    envelope_digest,
    open_sealed,
    read_envelope,
    seal_with_ephemeral,
    signed_request,
    verify_response,
)
from tests.independent.ref_query_relay import (
    QUERY_DATA,
    Addressee,
    Forward,
    Prediction,
    Refuse,
    predict_call,
    relay_decision,
)
from tests.support.federation import Federation, grpc_reason, node_channel
from tests.test_sharing_relayed import relay_records

pytestmark = pytest.mark.asyncio(loop_scope="module")

DELIVER = "/yrd.peer.v1.PeerService/Deliver"
GET_CATALOGUE = "/yrd.peer.v1.PeerService/GetCatalogue"
RELAY, HOLDER, ASKER = "jiangsu", "zhejiang", "shanghai"
PERSON = "310101199003071230"  # has records in every province (registry/samples/data_records)
RESOURCE = {"zhejiang": "zj.vaccination", "jiangsu": "js.nucleic-acid", "shanghai": "sh.health-code"}
HOUR_MS = 3_600_000
# 14.1: the holder's refusals of a DataQuery that fails its form checks (gRPC INVALID_ARGUMENT).
# `malformed_body` for bytes that are no DataQuery at all is assumed (gap 5).
QUERY_CODES = frozenset((
    "invalid_query_id", "sender_mismatch", "invalid_department", "invalid_purpose", "invalid_resources",
    "invalid_fields", "stale_query", "invalid_subject_kind", "sealed_payload_invalid", "invalid_subject",
    "invalid_consent", "invalid_asked_by", "malformed_body",
))  # fmt: skip


@dataclasses.dataclass
class World:
    fed: Federation
    manifest: Manifest  # the relay's trusted manifest, as the independent code reads it
    seeds: dict[str, bytes]

    def key_window(self, node_id: str) -> tuple[int, int]:
        member = self.manifest.member(node_id)
        assert member is not None and len(member.keys) == 1
        return member.keys[0].not_before_ms, member.keys[0].not_after_ms


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    relays = {"zhejiang": "jiangsu", "anhui": "shanghai"}
    specs = [dataclasses.replace(s, relay=relays.get(s.node_id, "")) for s in PROVINCES]
    root = tmp_path_factory.mktemp("query-relay")
    fed = await Federation(root, specs).start()
    try:
        # The inputs of the independent side: the laid-out files, read without node code.
        manifest = verify_anchor((root / RELAY / "anchor.manifest").read_bytes())
        seeds = {s.node_id: _read_seed(root / s.node_id / "node.key") for s in specs}
        yield World(fed, manifest, seeds)
    finally:
        await fed.close()


def _read_seed(path: Path) -> bytes:
    text = path.read_text().strip()
    assert text.startswith("ed25519:"), "an unsealed key file of the test layout"
    return bytes.fromhex(text.removeprefix("ed25519:"))


# Building envelopes, with the independent code only.


def now_ms() -> int:
    return int(time.time() * 1000)


def x25519_public(ed25519_public: bytes) -> bytes:
    """5.1: the sealing key of a member is derived from its Ed25519 key."""
    return bytes(bindings.crypto_sign_ed25519_pk_to_curve25519(ed25519_public))


def data_query(w: World, *, asker: str, holder: str, at_ms: int) -> bytes:
    """A well-formed DataQuery (14.1) for one resource of `holder`, with the subject's consent."""
    consent = peer_pb2.DataConsent(
        given_by="张三",
        subject_id=PERSON,
        resources=[RESOURCE[holder]],
        purpose="health-check",
        until_ms=at_ms + 24 * HOUR_MS,
        recorded_at_ms=at_ms,
    )
    subject = peer_pb2.DataSubject(subject_id=PERSON, consent=consent, asked_by="clerk")
    recipient = x25519_public(public_key_for(w.seeds[holder]))
    sealed = seal_with_ephemeral(subject.SerializeToString(), recipient, os.urandom(32))
    return peer_pb2.DataQuery(
        query_id=f"q-{at_ms:012x}{os.urandom(8).hex()}",
        asker_node=asker,
        asker_department="counter",
        purpose="health-check",
        asks=[peer_pb2.DataAsk(resource_id=RESOURCE[holder])],
        asked_at_ms=at_ms,
        subject_kind="person",
        sealed_subject=sealed,
    ).SerializeToString()


def signed(
    w: World,
    *,
    sender: str = ASKER,
    destination: str = HOLDER,
    method: str = QUERY_DATA,
    created_at_ms: int | None = None,
    body: bytes | None = None,
    seed: bytes | None = None,
    nonce: bytes | None = None,
    in_reply_to: bytes = b"",
) -> Envelope:
    """`sender`'s envelope signed with its own seed (or `seed`, whose key id it then names)."""
    at = now_ms() if created_at_ms is None else created_at_ms
    seed = seed if seed is not None else w.seeds.get(sender, os.urandom(32))
    if body is None:  # a query for the holder it names, or for Zhejiang when it names none here
        holder = destination if destination in RESOURCE else HOLDER
        body = data_query(w, asker=sender, holder=holder, at_ms=now_ms())
    return signed_request(
        sender=sender,
        seed=seed,
        destination=destination,
        method=method,
        body=body,
        at_ms=at,
        nonce=nonce,
        in_reply_to=in_reply_to,
    )


def flip(data: bytes, index: int = 0) -> bytes:
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1 :]


def to_pb(env: Envelope) -> PbEnvelope:
    return PbEnvelope(**{f.name: getattr(env, f.name) for f in dataclasses.fields(env)})


# Observing the node.


@dataclasses.dataclass(frozen=True)
class Observed:
    status: str  # a grpc.StatusCode name, "OK" for an answer
    reason: str  # the yrd-reason trailer
    response: Envelope | None
    relayed: list[tuple[str, str, str]]  # the relay's new "relayed ..." audit records


async def call(w: World, env: Envelope, receiver: str = RELAY) -> Observed:
    before = await relay_records(w.fed.nodes[RELAY])
    async with node_channel(w.fed.nodes[receiver]) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        try:
            answer = await stub.QueryData(peer_pb2.QueryDataRequest(envelope=to_pb(env)), timeout=10)
        except grpc.aio.AioRpcError as err:
            status, reason, response = err.code().name, grpc_reason(err), None
        else:
            status, reason, response = "OK", "", read_envelope(answer.envelope.SerializeToString())
    after = await relay_records(w.fed.nodes[RELAY])
    return Observed(status, reason, response, after[len(before) :])


def expected_audit(
    env: Envelope, prediction: Prediction, receiver: str, body: str
) -> list[tuple[str, str, str]]:
    """14.1: "for every query it passes on, whatever D answers", the relay appends "in" from the
    asker and "out" to D, details `relayed to D` and `relayed from O: S`, S the name of the gRPC
    status D's call ended with (OK for an answer). A call the relay refuses or answers itself
    leaves none."""
    if receiver != RELAY or not prediction.forwarded:
        return []
    if prediction.refusal is not None:
        status = prediction.refusal.grpc_status
    else:
        status = "INVALID_ARGUMENT" if body == "refused" else "OK"
    return [
        ("in", env.sender, f"relayed to {env.destination}"),
        ("out", env.destination, f"relayed from {env.sender}: {status}"),
    ]


def check(
    w: World, env: Envelope, seen: Observed, prediction: Prediction, *, receiver: str, body: str
) -> None:
    """Compare the node with the prediction. `body` is what the deciding member makes of a query
    whose envelope passed: "answer" (a DataAnswer) or "refused" (a DataQuery code of 14.1)."""
    got = (seen.status, seen.reason)
    if prediction.refusal is not None:
        assert got == (prediction.refusal.grpc_status, prediction.refusal.code), (prediction, seen)
    elif body == "refused":
        assert seen.status == "INVALID_ARGUMENT" and seen.reason in QUERY_CODES, (prediction, seen)
    else:
        assert got == ("OK", ""), (prediction, seen)
        assert seen.response is not None
        # Section 4: the answer is the deciding member's, bound to I, for the asker.
        verify_response(
            seen.response,
            request=env,
            manifest=w.manifest,
            receiver=env.sender,
            now_ms=now_ms(),
            max_skew_ms=30_000,
        )
        assert seen.response.sender == prediction.answered_by
        answer = peer_pb2.DataAnswer.FromString(seen.response.body)
        assert peer_pb2.DataQuery.FromString(env.body).query_id == answer.query_id
        [item] = answer.items
        assert item.outcome in ("answered", "no_record", "refused"), item
        if item.outcome == "answered":
            # Sealed to the asker (14.1): it opens with the asker's seed, so nobody re-made it.
            record = peer_pb2.DataRecord.FromString(open_sealed(item.sealed_record, w.seeds[env.sender]))
            assert record.fields_json
    assert seen.relayed == expected_audit(env, prediction, receiver, body), seen


def predict(
    w: World,
    env: Envelope,
    receiver: str = RELAY,
    *,
    receiver_nonces: NonceStore | None = None,
    holder_nonces: NonceStore | None = None,
) -> Prediction:
    return predict_call(
        env,
        manifest=w.manifest,
        receiver=receiver,
        now_ms=now_ms(),
        receiver_nonces=receiver_nonces,
        holder_nonces=holder_nonces,
    )


# The single-call cases: (name, builder, receiver, what the decider makes of the body).

Build = Callable[[World], Envelope]


def _not_before(w: World) -> int:
    return w.key_window(ASKER)[0]


def _not_after(w: World) -> int:
    return w.key_window(ASKER)[1]


CASES: list[tuple[str, Build, str, str]] = [
    ("valid", signed, RELAY, "answer"),
    ("valid-empty-query", lambda w: signed(w, body=b""), RELAY, "refused"),
    ("body-not-a-data-query", lambda w: signed(w, body=b"\xff\xff\xff"), RELAY, "refused"),
    ("from-the-relay-itself", lambda w: signed(w, sender=RELAY), RELAY, "answer"),
    ("from-another-relayed-member", lambda w: signed(w, sender="anhui"), RELAY, "answer"),
    ("to-the-relay-itself", lambda w: signed(w, destination=RELAY), RELAY, "answer"),
    # Addressed to the receiver, so 3.2 whole: the relay's own clock decides, nothing is passed on.
    (
        "to-the-relay-itself-hour-old",
        lambda w: signed(w, destination=RELAY, created_at_ms=now_ms() - HOUR_MS),
        RELAY,
        "-",
    ),
    ("holder-called-directly", signed, HOLDER, "answer"),
    ("to-a-member-without-relay", lambda w: signed(w, sender="anhui", destination=ASKER), RELAY, "-"),
    ("to-a-member-relayed-by-another", lambda w: signed(w, destination="anhui"), RELAY, "-"),
    ("to-a-non-member", lambda w: signed(w, destination="hainan"), RELAY, "-"),
    ("relayed-receiver-relays-for-nobody", lambda w: signed(w, destination=ASKER), HOLDER, "-"),
    ("unknown-sender", lambda w: signed(w, sender="hainan"), RELAY, "-"),
    ("unknown-key", lambda w: signed(w, seed=os.urandom(32)), RELAY, "-"),
    ("key-of-another-member", lambda w: signed(w, seed=w.seeds["anhui"]), RELAY, "-"),
    ("before-key-window", lambda w: signed(w, created_at_ms=_not_before(w) - 1), RELAY, "-"),
    ("at-key-window-end", lambda w: signed(w, created_at_ms=_not_after(w)), RELAY, "-"),
    ("flipped-body-byte", lambda w: dataclasses.replace(e := signed(w), body=flip(e.body, 5)), RELAY, "-"),
    (
        "flipped-signature-byte",
        lambda w: dataclasses.replace(e := signed(w), signature=flip(e.signature)),
        RELAY,
        "-",
    ),
    (
        "re-addressed-after-signing",
        lambda w: dataclasses.replace(signed(w, destination=RELAY), destination=HOLDER),
        RELAY,
        "-",
    ),
    ("signed-for-deliver", lambda w: signed(w, method=DELIVER), RELAY, "-"),
    ("signed-for-get-catalogue", lambda w: signed(w, method=GET_CATALOGUE), RELAY, "-"),
    ("response-with-in-reply-to", lambda w: signed(w, in_reply_to=os.urandom(32)), RELAY, "-"),
    ("short-nonce", lambda w: signed(w, nonce=os.urandom(15)), RELAY, "-"),
    ("empty-method", lambda w: signed(w, method=""), RELAY, "-"),
    (
        "short-signature",
        lambda w: dataclasses.replace(e := signed(w), signature=e.signature[:63]),
        RELAY,
        "-",
    ),
    # 3.3: no skew step at the relay; the holder's 3.2 step 8 refuses, and the relay returns that.
    ("hour-old", lambda w: signed(w, created_at_ms=now_ms() - HOUR_MS), RELAY, "-"),
    ("hour-ahead", lambda w: signed(w, created_at_ms=now_ms() + HOUR_MS), RELAY, "-"),
    ("back-dated-to-key-start", lambda w: signed(w, created_at_ms=_not_before(w)), RELAY, "-"),
    # The order of the 3.3 table: the first failing step decides.
    (
        "order-form-before-key",
        lambda w: signed(w, seed=os.urandom(32), in_reply_to=os.urandom(32)),
        RELAY,
        "-",
    ),
    ("order-key-before-role", lambda w: signed(w, seed=os.urandom(32), destination="hainan"), RELAY, "-"),
    ("order-role-before-method", lambda w: signed(w, destination="anhui", method=DELIVER), RELAY, "-"),
    (
        "order-role-before-signature",
        lambda w: dataclasses.replace(e := signed(w, destination="anhui"), body=flip(e.body, 5)),
        RELAY,
        "-",
    ),
    (
        "order-method-before-signature",
        lambda w: dataclasses.replace(e := signed(w, method=DELIVER), body=flip(e.body, 5)),
        RELAY,
        "-",
    ),
]


@pytest.mark.parametrize(("name", "build", "receiver", "body"), [pytest.param(*c, id=c[0]) for c in CASES])
async def test_case(world: World, name: str, build: Build, receiver: str, body: str) -> None:
    env = build(world)
    prediction = predict(world, env, receiver)
    check(world, env, await call(world, env, receiver), prediction, receiver=receiver, body=body)


# Cases that need a call before them.


async def test_a_replayed_query_goes_through_and_the_holder_refuses_it(world: World) -> None:
    """3.3: the relay neither looks up nor records I.nonce; the holder does (14.1)."""
    env = signed(world)
    holder_nonces = NonceStore()
    first = predict(world, env, holder_nonces=holder_nonces)
    check(world, env, await call(world, env), first, receiver=RELAY, body="answer")
    again = predict(world, env, holder_nonces=holder_nonces)
    assert again.forwarded and again.refusal == Refuse("nonce_replayed")
    check(world, env, await call(world, env), again, receiver=RELAY, body="-")


async def test_a_nonce_the_relay_has_seen_does_not_stop_a_forwarded_query(world: World) -> None:
    """The relay records (asker, N) as an addressee; a query for the holder under the same nonce
    is still passed on, since the relay has no nonce step (3.3), and the holder has not seen N."""
    nonce = os.urandom(16)
    relay_nonces, holder_nonces = NonceStore(), NonceStore()
    own = signed(world, destination=RELAY, nonce=nonce)
    assert isinstance(relay_decision(own, manifest=world.manifest, receiver=RELAY), Addressee)
    first = predict(world, own, receiver_nonces=relay_nonces)
    check(world, own, await call(world, own), first, receiver=RELAY, body="answer")
    passed_on = signed(world, nonce=nonce)
    assert relay_decision(passed_on, manifest=world.manifest, receiver=RELAY) == Forward(HOLDER)
    second = predict(world, passed_on, receiver_nonces=relay_nonces, holder_nonces=holder_nonces)
    check(world, passed_on, await call(world, passed_on), second, receiver=RELAY, body="answer")


async def test_the_holders_real_answer_cannot_be_passed_off_as_a_query(world: World) -> None:
    """3.3 step 1: a signed response (in_reply_to set) is no request; the relay refuses it first."""
    env = signed(world)
    seen = await call(world, env)
    assert seen.status == "OK" and seen.response is not None
    smuggled = seen.response
    assert smuggled.in_reply_to == envelope_digest(env)
    prediction = predict(world, smuggled)
    assert prediction == Prediction(answered_by=RELAY, forwarded=False, refusal=Refuse("malformed_envelope"))
    check(world, smuggled, await call(world, smuggled), prediction, receiver=RELAY, body="-")


async def test_a_silent_holder_still_leaves_the_relays_records(world: World) -> None:
    """14.1: the relay calls D "within what is left of the asker's gRPC deadline", and records
    every query it passes on "whatever D answers". D's port accepts connections and never
    answers; the caller's 1 s deadline passes. The relay's call to D then ends too (by the
    deadline, or cancelled with the caller's call): 14.1 names no status for that, so either
    name is taken in `relayed from O: S`."""
    env = signed(world)
    assert predict(world, env).forwarded
    host, _, port = world.fed.configs[HOLDER].grpc_listen.rpartition(":")
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accept, read nothing, answer nothing

    await world.fed.stop_node(HOLDER)
    silent = await asyncio.start_server(hold, host, int(port))
    try:
        # The relay's channel to D may still be backing off from a refused connection (something
        # of its own tried D in between): it then fails the call at once, UNAVAILABLE, and
        # reaches the silent port only after the backoff, so the set-up is tried again.
        for _ in range(3):
            before = await relay_records(world.fed.nodes[RELAY])
            started = time.monotonic()
            async with node_channel(world.fed.nodes[RELAY]) as channel:
                stub = peer_pb2_grpc.PeerServiceStub(channel)
                try:
                    await stub.QueryData(peer_pb2.QueryDataRequest(envelope=to_pb(env)), timeout=1.0)
                except grpc.aio.AioRpcError as err:
                    code = err.code()
                else:
                    code = grpc.StatusCode.OK
            if code == grpc.StatusCode.DEADLINE_EXCEEDED and held:
                break
            await asyncio.sleep(1.1)
        else:
            # Not the situation this test is about (the relay never reached the silent port).
            raise RuntimeError(f"set-up: the call ended {code.name}, {len(held)} connections held")
        records: list[tuple[str, str, str]] = []
        while time.monotonic() - started < 3.0 and len(records) < 2:
            await asyncio.sleep(0.05)
            records = (await relay_records(world.fed.nodes[RELAY]))[len(before) :]
        assert records[:1] == [("in", ASKER, f"relayed to {HOLDER}")], records
        ended = [f"relayed from {ASKER}: {status}" for status in ("DEADLINE_EXCEEDED", "CANCELLED")]
        assert [(r[0], r[1], r[2] in ended) for r in records[1:]] == [("out", HOLDER, True)], records
    finally:
        for writer in held:
            writer.close()
        silent.close()
        await silent.wait_closed()
        await world.fed.start_node(HOLDER)


async def test_a_holder_that_is_down(world: World) -> None:
    """The relay's checks pass, so it calls D and, D being down, gets no answer. 14.1 has it
    record the call whatever D answers (`relayed from O: S`) and return "D's gRPC status", which
    an absent D does not have (gap 2): what it returns is the status its own call to D ended
    with, here UNAVAILABLE without a `yrd-reason` trailer (7.1: no code, "try again later")."""
    env = signed(world)
    assert predict(world, env).forwarded
    await world.fed.stop_node(HOLDER)
    try:
        seen = await call(world, env)
    finally:
        await world.fed.start_node(HOLDER)
    assert (seen.status, seen.reason, seen.response) == ("UNAVAILABLE", "", None), seen
    assert seen.relayed == [
        ("in", ASKER, f"relayed to {HOLDER}"),
        ("out", HOLDER, f"relayed from {ASKER}: {seen.status}"),
    ]
