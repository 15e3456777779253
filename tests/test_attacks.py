"""Attacks on real in-process nodes: replays, re-addressed envelopes, revoked and removed
members, forged manifests, a tampering relay, floods, oversized batches and hostile strings.

Each test asserts what must hold whatever the details of today's code: the attack is refused
with a reason, nothing is acted on twice or stored half, the node keeps serving others, and
nothing is answered with an internal error.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from yrd.catalogue.v1 import catalogue_pb2
from yrd.envelope.v1.envelope_pb2 import Envelope
from yrd.federation.v1 import manifest_pb2 as mpb
from yrd.peer.v1 import peer_pb2, peer_pb2_grpc

from core.errors import ManifestRejected
from core.keys import NodeKey, load_key
from node.app import Node
from node.grpc_errors import REASON_KEY
from node.trust.envelope import request_digest, seal_envelope
from registry.catalogue import ServiceDefinition, catalogue_digest
from registry.manifest import TrustedManifest, fingerprint, sign_manifest
from simulations.local_federation import PROVINCES
from simulations.sample_applications import application_body
from tests.support.federation import Federation, allow_all_specs, node_channel

DELIVER = "/yrd.peer.v1.PeerService/Deliver"
WORKLIST_SERVICE = "zj.industrial-licence"  # owned by zhejiang, decided by a clerk there
NODES = ("jiangsu", "zhejiang", "anhui")


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    """Jiangsu and Zhejiang reached directly, Anhui only through Zhejiang (its relay)."""
    specs = [
        dataclasses.replace(s, relay="zhejiang") if s.node_id == "anhui" else s
        for s in allow_all_specs(tmp_path, PROVINCES)
        if s.node_id in NODES
    ]
    f = await Federation(tmp_path, specs).start()
    try:
        yield f
    finally:
        await f.close()


def reason(e: grpc.aio.AioRpcError) -> str:
    return dict(e.trailing_metadata() or ()).get(REASON_KEY, "")


def sealed(node: Node, destination: str, body: bytes = b"", key: NodeKey | None = None) -> Envelope:
    """A fresh envelope from ``node`` (an empty DeliverItem by default: answered, never acted on)."""
    return seal_envelope(
        key or node.trust.key,
        sender=node.trust.node_id,
        destination=destination,
        method=DELIVER,
        body=body or peer_pb2.DeliverItem().SerializeToString(),
        now_ms=node.clock.now_ms(),
    )


async def deliver(node: Node, envelopes: list[Envelope]) -> peer_pb2.DeliverResponse:
    async with node_channel(node) as ch:
        answer: peer_pb2.DeliverResponse = await peer_pb2_grpc.PeerServiceStub(ch).Deliver(
            peer_pb2.DeliverRequest(envelopes=envelopes)
        )
        return answer


async def refused(node: Node, envelopes: list[Envelope]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await deliver(node, envelopes)
    assert err.value.code() != grpc.StatusCode.INTERNAL, err.value
    return err.value.code(), reason(err.value)


def record_deliveries(node: Node) -> list[Envelope]:
    """Every envelope ``node`` verifies on Deliver, as an eavesdropper on the wire would see it."""
    seen: list[Envelope] = []
    verifier = node.sync.verifier
    original = verifier.check_request

    def recording(env: Envelope, method: str) -> None:
        if method == DELIVER:
            seen.append(copy.deepcopy(env))
        original(env, method)

    verifier.check_request = recording  # type: ignore[method-assign]
    return seen


async def submit_worklist_application(fed: Federation, key: str) -> str:
    body = application_body(fed.nodes["jiangsu"].index.get(WORKLIST_SERVICE), random.Random(key))
    status, created = await fed.submit("jiangsu", body, key)
    assert status == 201, created
    await fed.wait_status("jiangsu", created["id"], {"in_review"})
    return str(created["id"])


async def worklist_ids(fed: Federation) -> list[str]:
    status, work = await fed.call("zhejiang", "GET", "/api/v1/worklist", user="supervisor")
    assert status == 200, work
    return [a["id"] for a in work["applications"]]


# --- envelopes -------------------------------------------------------------------------------------


async def test_replayed_and_readdressed_envelopes_are_refused(fed: Federation) -> None:
    zhejiang, anhui = fed.nodes["zhejiang"], fed.nodes["anhui"]
    wire = record_deliveries(zhejiang)
    app_id = await submit_worklist_application(fed, "replay-1")
    captured = [e for e in wire if e.sender == "jiangsu"]
    assert captured, "the application travelled in no envelope"

    # The very bytes that carried the application, sent again: refused, stored once.
    assert await refused(zhejiang, captured[:1]) == (grpc.StatusCode.UNAUTHENTICATED, "nonce_replayed")
    assert (await worklist_ids(fed)).count(app_id) == 1

    # Re-addressed to another member: the destination is signed, so the signature breaks.
    moved = copy.deepcopy(captured[0])
    moved.destination = "anhui"
    assert await refused(anhui, [moved]) == (grpc.StatusCode.UNAUTHENTICATED, "bad_signature")
    # Honestly addressed to Zhejiang but handed to Anhui: not for Anhui.
    assert await refused(anhui, captured[:1]) == (grpc.StatusCode.UNAUTHENTICATED, "wrong_destination")


async def test_an_oversized_batch_is_refused_whole_and_consumes_nothing(fed: Federation) -> None:
    jiangsu, zhejiang = fed.nodes["jiangsu"], fed.nodes["zhejiang"]
    batch = [sealed(jiangsu, "zhejiang") for _ in range(zhejiang.config.limits.max_batch + 1)]
    code, why = await refused(zhejiang, batch)
    assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert why == "batch_too_large"
    # No envelope of the refused batch used up its nonce: each still goes through alone.
    answer = await deliver(zhejiang, batch[:1])
    assert answer.receipts[0].in_reply_to == request_digest(batch[0])


async def test_one_forged_envelope_does_not_sink_the_honest_ones_in_its_batch(fed: Federation) -> None:
    jiangsu, zhejiang = fed.nodes["jiangsu"], fed.nodes["zhejiang"]
    good = [sealed(jiangsu, "zhejiang") for _ in range(2)]
    forged = sealed(jiangsu, "zhejiang", key=NodeKey.generate())
    answer = await deliver(zhejiang, [good[0], forged, good[1]])
    answered = {r.in_reply_to for r in answer.receipts}
    assert {request_digest(g) for g in good} <= answered


async def test_a_flood_from_one_member_does_not_starve_another(fed: Federation) -> None:
    jiangsu, zhejiang, anhui = fed.nodes["jiangsu"], fed.nodes["zhejiang"], fed.nodes["anhui"]
    flood = [sealed(jiangsu, "zhejiang") for _ in range(60)]
    lone = sealed(anhui, "zhejiang")
    async with node_channel(zhejiang) as ch:
        stub = peer_pb2_grpc.PeerServiceStub(ch)
        calls = [stub.Deliver(peer_pb2.DeliverRequest(envelopes=[e])) for e in flood]
        calls.append(stub.Deliver(peer_pb2.DeliverRequest(envelopes=[lone])))
        answers = await asyncio.gather(*calls, return_exceptions=True)
    # Throttling the flood is allowed (RESOURCE_EXHAUSTED); failing the other member is not.
    for got in answers[:-1]:
        if isinstance(got, grpc.aio.AioRpcError):
            assert got.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, got
        else:
            assert not isinstance(got, BaseException), got
    lone_answer = answers[-1]
    assert isinstance(lone_answer, peer_pb2.DeliverResponse), lone_answer
    (reply,) = lone_answer.receipts
    anhui.sync.verifier.verify_response(reply, lone)  # signed by Zhejiang, bound to this request
    assert peer_pb2.Receipt.FromString(reply.body).reason_code == "malformed_body"  # an empty item


async def test_bytes_that_are_no_request_message_leave_the_node_serving(fed: Federation) -> None:
    async with node_channel(fed.nodes["zhejiang"]) as ch:
        raw = ch.unary_unary(DELIVER)
        with pytest.raises(grpc.aio.AioRpcError):
            await raw(b"\x0a\xff\xff\xff\xff\x0f")
    answer = await deliver(fed.nodes["zhejiang"], [sealed(fed.nodes["jiangsu"], "zhejiang")])
    assert len(answer.receipts) == 1


async def test_bytes_that_are_no_request_message_are_the_callers_fault(
    fed: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    async with node_channel(fed.nodes["zhejiang"]) as ch:
        raw = ch.unary_unary(DELIVER)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await raw(b"\x0a\xff\xff\xff\xff\x0f")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "DecodeError" not in (err.value.details() or "")
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


# --- the manifest ----------------------------------------------------------------------------------


def node_keys(fed: Federation) -> dict[str, NodeKey]:
    return {n: load_key(fed.root / n / "node.key") for n in NODES}


def successor(
    fed: Federation, current: mpb.Manifest, signers: tuple[str, ...], **change: Any
) -> mpb.SignedManifest:
    manifest = copy.deepcopy(current)
    manifest.version = current.version + 1
    for name, edit in change.items():
        edit(manifest) if callable(edit) else setattr(manifest, name, edit)
    signed = mpb.SignedManifest(manifest=manifest.SerializeToString())
    keys = node_keys(fed)
    for name in signers:
        signed = sign_manifest(signed, name, keys[name])
    return signed


async def test_a_revoked_key_and_then_a_removed_member_are_refused(fed: Federation) -> None:
    jiangsu, zhejiang = fed.nodes["jiangsu"], fed.nodes["zhejiang"]
    now = zhejiang.clock.now_ms()

    def revoke_jiangsu(m: mpb.Manifest) -> None:
        next(x for x in m.members if x.node_id == "jiangsu").keys[0].status = mpb.KEY_STATUS_REVOKED

    revoked = successor(fed, zhejiang.trust.manifest.manifest, ("zhejiang", "anhui"), edit=revoke_jiangsu)
    assert zhejiang.trust.accept_successor(revoked, now)
    assert await refused(zhejiang, [sealed(jiangsu, "zhejiang")]) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "key_revoked",
    )

    def remove_jiangsu(m: mpb.Manifest) -> None:
        kept = [x for x in m.members if x.node_id != "jiangsu"]
        del m.members[:]
        m.members.extend(kept)

    removed = successor(fed, zhejiang.trust.manifest.manifest, ("zhejiang", "anhui"), edit=remove_jiangsu)
    assert zhejiang.trust.accept_successor(removed, now)
    assert await refused(zhejiang, [sealed(jiangsu, "zhejiang")]) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "unknown_sender",
    )


async def test_a_forged_manifest_below_quorum_is_refused_and_the_old_one_kept(fed: Federation) -> None:
    jiangsu, zhejiang = fed.nodes["jiangsu"], fed.nodes["zhejiang"]
    before = zhejiang.trust.manifest
    store = zhejiang.gossip.store
    stored = store.read_bytes() if store.exists() else None
    intruder = NodeKey.generate()

    def add_intruder_key(m: mpb.Manifest) -> None:
        member = next(x for x in m.members if x.node_id == "jiangsu")
        extra = copy.deepcopy(member.keys[0])
        extra.key_id, extra.public_key = intruder.key_id, intruder.public_key
        member.keys.append(extra)
        m.threshold = 1

    forged = successor(fed, before.manifest, ("jiangsu",), edit=add_intruder_key)
    # Jiangsu turns rogue and offers its forgery by gossip (bypassing its own checks).
    jiangsu.trust.manifest = TrustedManifest(
        signed=forged,
        manifest=mpb.Manifest.FromString(forged.manifest),
        fingerprint=fingerprint(forged.manifest),
    )
    with pytest.raises(ManifestRejected) as err:
        await zhejiang.gossip.ask("jiangsu")
    assert err.value.code == "no_quorum_of_previous"
    assert zhejiang.trust.manifest is before
    assert (store.read_bytes() if store.exists() else None) == stored
    # The intruder's key stays unknown at Zhejiang.
    assert await refused(zhejiang, [sealed(jiangsu, "zhejiang", key=intruder)]) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "unknown_key",
    )


# --- the catalogue ---------------------------------------------------------------------------------


async def test_a_catalogue_entry_altered_by_a_relay_is_refused(fed: Federation) -> None:
    jiangsu, zhejiang = fed.nodes["jiangsu"], fed.nodes["zhejiang"]
    anhui_services = [d.service_id for d in jiangsu.index.all() if d.owner.startswith("34")]
    assert anhui_services, "Jiangsu learnt no Anhui service through its relay"
    target = anhui_services[0]

    original = jiangsu.index.get(target).time_limit_days

    # Zhejiang, relaying Anhui's entries, lengthens one service's time limit and keeps the signature.
    catalogue = catalogue_pb2.Catalogue.FromString(zhejiang.sync.served()[1])
    entry = next(
        e for e in catalogue.entries if ServiceDefinition.FromString(e.definition).service_id == target
    )
    defn = ServiceDefinition.FromString(entry.definition)
    defn.time_limit_days = original + 30
    entry.definition = defn.SerializeToString(deterministic=True)
    altered = catalogue.SerializeToString()
    zhejiang.sync._served_bytes, zhejiang.sync._served_digest = altered, catalogue_digest(altered)

    await jiangsu.sync.pull("zhejiang")
    known = {d.service_id: d for d in jiangsu.index.all()}
    assert target not in known or known[target].time_limit_days == original
    # Everything else Zhejiang passed on, untouched, is still taken.
    assert {d.service_id for d in known.values() if d.owner.startswith(("33", "34"))} >= {
        s for s in anhui_services if s != target
    }


# --- hostile strings at the HTTP counter -------------------------------------------------------------

HOSTILE = [
    "'; DROP TABLE application;--",
    "../../etc/passwd",
    "%00",
    "a\x00b",
    "{{7*7}}",
    "${jndi:ldap://x/a}",
    "<script>alert(1)</script>",
    "\u202egnp.exe",  # right-to-left override
    "x" * 5000,
]
FIELDS: dict[str, Any] = {
    "service_id": lambda b, v: b.__setitem__("service_id", v),
    "applicant.name": lambda b, v: b["applicant"].__setitem__("name", v),
    "applicant.id_number": lambda b, v: b["applicant"].__setitem__("id_number", v),
    "purpose": lambda b, v: b.__setitem__("purpose", v),
    "form.company_name": lambda b, v: b["form"].__setitem__("company_name", v),
    "form.production_address": lambda b, v: b["form"].__setitem__("production_address", v),
    "form.application_type": lambda b, v: b["form"].__setitem__("application_type", v),
    "attachments[0].material": lambda b, v: b["attachments"][0].__setitem__("material", v),
    "attachments[0].filename": lambda b, v: b["attachments"][0].__setitem__("filename", v),
    "attachments[0].content_type": lambda b, v: b["attachments"][0].__setitem__("content_type", v),
}


async def test_hostile_strings_in_every_text_field_are_stored_verbatim_or_refused(fed: Federation) -> None:
    base = application_body(fed.nodes["jiangsu"].index.get(WORKLIST_SERVICE), random.Random(7))
    accepted: list[tuple[str, str, str]] = []
    for field, put in FIELDS.items():
        for i, value in enumerate(HOSTILE):
            body = copy.deepcopy(base)
            put(body, value)
            status, answer = await fed.submit("jiangsu", body, f"hostile-{field}-{i}")
            assert status < 500, (field, value, answer)
            if status == 201:
                accepted.append((answer["id"], field, value))
            else:
                assert 400 <= status < 500 and answer["status"] == status, answer
    # Hostile idempotency keys too.
    for i, value in enumerate(HOSTILE[:-1]):
        status, answer = await fed.submit("jiangsu", copy.deepcopy(base), value.replace("\x00", "") + str(i))
        assert status < 500, (value, answer)

    # What was accepted reaches the owner exactly as typed (or is refused there on arrival).
    assert accepted, "every hostile string was refused: the verbatim check would check nothing"
    arrived = []
    for app_id, _, _ in accepted:
        view = await fed.wait_status("jiangsu", app_id, {"in_review", "rejected", "needs_materials"})
        if view["status"] == "in_review":
            arrived.append(app_id)
    status, work = await fed.call("zhejiang", "GET", "/api/v1/worklist", user="supervisor")
    assert status == 200
    views = {a["id"]: a for a in work["applications"]}
    assert set(arrived) <= set(views)
    for app_id, field, value in accepted:
        if app_id in views:
            got: Any = views[app_id]
            for part in field.replace("[0]", ".0").split("."):
                got = got[int(part)] if isinstance(got, list) else got[part]
            assert got == value, (field, value, got)


async def test_a_lone_surrogate_is_a_client_error(fed: Federation) -> None:
    base = application_body(fed.nodes["jiangsu"].index.get(WORKLIST_SERVICE), random.Random(8))
    assert fed.http is not None
    for field in ("service_id", "company_name"):
        text = json.dumps(base).replace(
            json.dumps(base["form"]["company_name"])
            if field == "company_name"
            else json.dumps(base["service_id"]),
            '"\\ud800"',
            1,
        )
        async with fed.http.post(
            fed.url("jiangsu", "/api/v1/applications"),
            data=text.encode(),
            headers={
                "Authorization": f"Bearer {fed.tokens['jiangsu']}",
                "Idempotency-Key": f"surrogate-{field}",
                "Content-Type": "application/json",
            },
        ) as r:
            assert 400 <= r.status < 500, (field, r.status, await r.text())
