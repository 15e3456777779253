"""One bad envelope in a batch spoils only itself, and nothing a peer refuses is settled in
silence (issue 9): per-envelope verification at the receiver, dead letters at the sender."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY
from sqlmodel import Session, select
from yrd.envelope.v1.envelope_pb2 import Envelope
from yrd.peer.v1 import peer_pb2, peer_pb2_grpc

from core.clock import SystemClock
from core.keys import NodeKey
from node.delivery.outbox import DeadLetter, dead_letters, enqueue, redrive
from node.delivery.peer_server import envelope_item_id
from node.delivery.relaying import DELIVER, NOTIFY_STATUS
from node.grpc_errors import REASON_KEY
from node.models import InboundApplication, OutboxEntry
from node.trust.envelope import EnvelopeVerifier, request_digest, seal_envelope
from node.trust.nonces import MemoryNonceStore
from simulations.local_federation import PROVINCES
from simulations.sample_applications import application_body
from tests.support.federation import Federation, allow_all_specs, node_channel

SERVICE = "zj.medical.cross-region-filing"
Outcome = peer_pb2.ReceiptOutcome


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    f = await Federation(tmp_path, allow_all_specs(tmp_path, PROVINCES[1:3])).start()
    try:
        yield f
    finally:
        await f.close()


def reason(e: grpc.aio.AioRpcError) -> str:
    return dict(e.trailing_metadata() or ()).get(REASON_KEY, "")


async def queued_transfers(fed: Federation, count: int) -> tuple[NodeKey, list[tuple[str, bytes]]]:
    """Real DeliverItems from jiangsu's outbox, with jiangsu stopped so only the test sends them."""
    await fed.stop_node("zhejiang")
    jiangsu = fed.nodes["jiangsu"]
    defn = jiangsu.index.get(SERVICE)
    for i in range(count):
        status, created = await fed.submit("jiangsu", application_body(defn, random.Random(i)), f"v{i}")
        assert status == 201, created
    rows = await jiangsu.db.run(
        lambda s: s.exec(
            select(OutboxEntry).where(OutboxEntry.method == DELIVER).order_by(OutboxEntry.id)
        ).all()
    )
    key = jiangsu.trust.key
    await fed.stop_node("jiangsu")
    await fed.start_node("zhejiang")
    return key, [(r.item_id, r.body) for r in rows]


async def test_a_batch_with_one_forged_envelope_stores_the_others(fed: Federation) -> None:
    key, items = await queued_transfers(fed, 3)
    now = SystemClock().now_ms()
    envs = [
        seal_envelope(key, sender="jiangsu", destination="zhejiang", method=DELIVER, body=body, now_ms=now)
        for _, body in items
    ]
    forged = Envelope()
    forged.CopyFrom(envs[1])
    forged.signature = bytes(64)
    zj = fed.nodes["zhejiang"]
    verifier = EnvelopeVerifier("jiangsu", lambda: zj.trust.manifest, MemoryNonceStore(), SystemClock())
    async with node_channel(zj) as ch:
        stub = peer_pb2_grpc.PeerServiceStub(ch)
        reply = await stub.Deliver(peer_pb2.DeliverRequest(envelopes=[envs[0], forged, envs[2]]))
        assert len(reply.receipts) == 3
        for req, rep in zip([envs[0], forged, envs[2]], reply.receipts, strict=True):
            verifier.verify_response(rep, req)  # every item answered, signed and bound to its envelope
        receipts = [peer_pb2.Receipt.FromString(r.body) for r in reply.receipts]
        assert [r.outcome for r in receipts] == [
            Outcome.RECEIPT_OUTCOME_ACCEPTED,
            Outcome.RECEIPT_OUTCOME_REJECTED,
            Outcome.RECEIPT_OUTCOME_ACCEPTED,
        ]
        assert (receipts[1].item_id, receipts[1].reason_code) == (envelope_item_id(forged), "bad_signature")
        assert receipts[1].item_id == "env:" + request_digest(forged).hex()
        assert [receipts[0].item_id, receipts[2].item_id] == [items[0][0], items[2][0]]
        stored = await zj.db.run(lambda s: set(s.exec(select(InboundApplication.id)).all()))
        assert stored == {items[0][0], items[2][0]}

        # The forgery used up no nonce: the genuine envelope it copied goes through unchanged.
        again = await stub.Deliver(peer_pb2.DeliverRequest(envelopes=[envs[1]]))
        receipt = peer_pb2.Receipt.FromString(again.receipts[0].body)
        assert (receipt.outcome, receipt.item_id) == (Outcome.RECEIPT_OUTCOME_ACCEPTED, items[1][0])

        # A call in which nothing is acted on is refused whole, and records nothing.
        for batch, code in (([envs[0], envs[2]], "nonce_replayed"), ([forged], "bad_signature")):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Deliver(peer_pb2.DeliverRequest(envelopes=batch))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert reason(err.value) == code


async def test_one_batch_holding_an_application_twice_stores_it_once(fed: Federation) -> None:
    """Within one batch's transaction: a second copy (its own nonce) finds the row the first
    stored and is a duplicate; an envelope repeated verbatim is a replay of its own nonce."""
    key, items = await queued_transfers(fed, 1)
    now = SystemClock().now_ms()
    body = items[0][1]
    first, copy = (
        seal_envelope(key, sender="jiangsu", destination="zhejiang", method=DELIVER, body=body, now_ms=now)
        for _ in range(2)
    )
    zj = fed.nodes["zhejiang"]
    async with node_channel(zj) as ch:
        reply = await peer_pb2_grpc.PeerServiceStub(ch).Deliver(
            peer_pb2.DeliverRequest(envelopes=[first, copy, first])
        )
    receipts = [peer_pb2.Receipt.FromString(r.body) for r in reply.receipts]
    assert [(r.outcome, r.reason_code) for r in receipts] == [
        (Outcome.RECEIPT_OUTCOME_ACCEPTED, "accepted"),
        (Outcome.RECEIPT_OUTCOME_DUPLICATE, "duplicate"),
        (Outcome.RECEIPT_OUTCOME_REJECTED, "nonce_replayed"),
    ]
    rows = await zj.db.run(lambda s: list(s.exec(select(InboundApplication)).all()))
    assert [(r.id, r.status) for r in rows] == [(items[0][0], "completed")]


async def test_an_envelope_addressed_elsewhere_gets_an_answer_its_sender_cannot_take(
    fed: Federation,
) -> None:
    key, items = await queued_transfers(fed, 2)
    now = SystemClock().now_ms()
    good = seal_envelope(
        key, sender="jiangsu", destination="zhejiang", method=DELIVER, body=items[0][1], now_ms=now
    )
    astray = seal_envelope(
        key, sender="jiangsu", destination="anhui", method=DELIVER, body=items[1][1], now_ms=now
    )
    zj = fed.nodes["zhejiang"]
    verifier = EnvelopeVerifier("jiangsu", lambda: zj.trust.manifest, MemoryNonceStore(), SystemClock())
    async with node_channel(zj) as ch:
        reply = await peer_pb2_grpc.PeerServiceStub(ch).Deliver(
            peer_pb2.DeliverRequest(envelopes=[good, astray])
        )
    verifier.verify_response(reply.receipts[0], good)
    refusal = peer_pb2.Receipt.FromString(reply.receipts[1].body)
    assert (refusal.reason_code, refusal.item_id) == ("wrong_destination", envelope_item_id(astray))
    assert reply.receipts[1].in_reply_to == request_digest(astray)
    assert reply.receipts[1].sender == "zhejiang"


def dead_lettered(code: str) -> float:
    return REGISTRY.get_sample_value("yrd_outbox_dead_lettered_total", {"reason": code}) or 0.0


def status_item(app_id: str, now_ms: int) -> bytes:
    update = peer_pb2.StatusUpdate(
        application_id=app_id, sequence=1, status=peer_pb2.APPLICATION_STATUS_DELIVERED, changed_at_ms=now_ms
    )
    return peer_pb2.StatusItem(status=update).SerializeToString()


async def test_a_status_update_the_origin_refuses_becomes_a_dead_letter(
    fed: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="node.delivery")
    zj = fed.nodes["zhejiang"]
    status, created = await fed.submit(
        "jiangsu", application_body(fed.nodes["jiangsu"].index.get(SERVICE), random.Random(7)), "real"
    )
    assert status == 201, created
    await fed.wait_status("jiangsu", created["id"], {"completed"})
    before = dead_lettered("unknown_application")
    now = zj.clock.now_ms()

    def queue_both(s: Session) -> None:
        # One batch: a repeat of a real update (answered DUPLICATE) and one for no application.
        for app_id in (created["id"], "no-such-application"):
            enqueue(
                s,
                next_hop="jiangsu",
                destination="jiangsu",
                method=NOTIFY_STATUS,
                item_id=app_id,
                body=status_item(app_id, now),
                now_ms=now,
            )

    await zj.db.run(queue_both)
    zj.delivery.wake("jiangsu")
    letters = await wait_dead_letters(fed, "zhejiang", 1)
    assert [(d.item_id, d.peer, d.reason, d.attempts) for d in letters] == [
        ("no-such-application", "jiangsu", "unknown_application", 1)
    ]
    good = await zj.db.run(
        lambda s: s.exec(select(OutboxEntry).where(OutboxEntry.item_id == created["id"])).all()
    )
    # Settled from the same call, sent once: nothing is re-sent that was answered.
    assert {(e.method, e.state, e.attempts) for e in good if e.body == status_item(created["id"], now)} == {
        (NOTIFY_STATUS, "done", 1)
    }
    assert dead_lettered("unknown_application") == before + 1
    warned = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "dead letter" in r.getMessage()
    ]
    assert len(warned) == 1 and "no-such-application" in warned[0] and "unknown_application" in warned[0]
    # An operator re-drives it; refused again, it is a dead letter again, counted again.
    assert await zj.db.run(lambda s: redrive(s, letters[0].id, zj.clock.now_ms()))
    zj.delivery.wake("jiangsu")
    letters = await wait_dead_letters(fed, "zhejiang", 1, attempts=2)
    assert dead_lettered("unknown_application") == before + 2


async def wait_dead_letters(fed: Federation, node_id: str, count: int, attempts: int = 1) -> list[DeadLetter]:
    node = fed.nodes[node_id]
    for _ in range(400):
        letters = await node.db.run(lambda s: dead_letters(s, 10))
        if len(letters) >= count and all(d.attempts >= attempts for d in letters):
            return letters
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {count} dead letter(s) at {node_id}")
