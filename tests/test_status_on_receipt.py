"""The changes an owner decides as it stores an application ride back on the Deliver receipt
when the origin asked for them and sent the item itself (docs/protocol.md 10.6): no status
item in the owner's outbox, no NotifyStatus leg, and the origin takes the run in with the
same checks as a NotifyStatus run, in the transaction that settles its delivery. On real
nodes (Jiangsu the origin, Zhejiang the owner) over gRPC on 127.0.0.1, on SQLite and, when
YRD_TEST_PG_URL is set, on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlmodel import Session, col, select
from yrd.envelope.v1 import envelope_pb2
from yrd.peer.v1 import peer_pb2

import node.cases.owner as owner_module
from node.app import Node
from node.delivery.relaying import DELIVER, NOTIFY_STATUS
from node.models import AuditRecord, InboundApplication, OutboxEntry, StatusEvent
from node.trust.envelope import answer
from node.trust.sealing import seal
from simulations.local_federation import PROVINCES
from simulations.sample_applications import application_body
from tests.support.federation import Federation, allow_all_specs

SERVICE = "zj.medical.cross-region-filing"  # decided by the automatic handler: four changes
WORKLIST = "zj.industrial-licence"
# What the origin shows of an automatic decision, its own submit first.
AUTO_HISTORY = [(0, "submitted"), (1, "delivered"), (2, "in_review"), (3, "approved"), (4, "completed")]
S = peer_pb2.ApplicationStatus
Outcome = peer_pb2.ReceiptOutcome


@pytest.fixture(params=["sqlite", "postgresql"])
async def fed(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Federation]:
    specs = [s for s in allow_all_specs(tmp_path, PROVINCES) if s.node_id in ("jiangsu", "zhejiang")]
    urls = {}
    if request.param == "postgresql":  # skipped unless YRD_TEST_PG_URL is set
        new_pg_schema = request.getfixturevalue("new_pg_schema")
        urls = {"jiangsu": new_pg_schema(), "zhejiang": new_pg_schema()}
    f = await Federation(tmp_path, specs, database_urls=urls).start()
    try:
        yield f
    finally:
        await f.close()


async def submit(fed: Federation, service_id: str, key: str) -> str:
    body = application_body(fed.nodes["jiangsu"].index.get(service_id), random.Random(key))
    status, created = await fed.submit("jiangsu", body, key)
    assert status == 201, created
    return str(created["id"])


def history(view: dict[str, Any]) -> list[tuple[int, str]]:
    return [(h["sequence"], h["status"]) for h in view["history"]]


async def status_items(node: Node) -> list[str]:
    """The ids of the status items ``node`` ever queued (sent or not)."""
    stmt = select(OutboxEntry.item_id).where(OutboxEntry.method == NOTIFY_STATUS)
    return await node.db.run(lambda s: sorted(s.exec(stmt).all()))


async def audited(node: Node, method: str) -> list[tuple[str, str]]:
    """(direction, detail) of ``node``'s audit records of ``method``, in order."""
    stmt = select(AuditRecord).where(AuditRecord.method == method).order_by(col(AuditRecord.seq))
    return await node.db.run(lambda s: [(r.direction, r.detail) for r in s.exec(stmt).all()])


class AnswerAs:
    """Zhejiang's PeerService as Jiangsu's sender reaches it, with a hand on each answer:
    ``tamper`` may change a receipt (re-signed with Zhejiang's key, as a buggy or hostile
    owner would sign it), ``lose`` drops the first answer after the owner acted on it."""

    def __init__(
        self,
        node: Node,
        owner: Node,
        tamper: Callable[[peer_pb2.Receipt], None] | None = None,
        lose: int = 0,
    ) -> None:
        self.real = node.delivery.channels
        self.owner, self.tamper, self.lose = owner, tamper, lose

    def peer(self, hop: str) -> AnswerAs:
        self.stub = self.real.peer(hop)
        return self

    async def close(self) -> None:
        await self.real.close()

    async def Deliver(self, request: peer_pb2.DeliverRequest, **call: Any) -> peer_pb2.DeliverResponse:
        answered = await self.stub.Deliver(request, **call)
        if self.lose:
            self.lose -= 1
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "connection reset"
            )
        if self.tamper is None:
            return answered
        replies = []
        for req, rep in zip(request.envelopes, answered.receipts, strict=True):
            receipt = peer_pb2.Receipt.FromString(rep.body)
            self.tamper(receipt)
            now = self.owner.clock.now_ms()
            replies.append(
                answer(self.owner.trust.key, req, receipt.SerializeToString(), now, sender="zhejiang")
            )
        return peer_pb2.DeliverResponse(receipts=replies)

    async def NotifyStatus(self, request: peer_pb2.NotifyStatusRequest, **call: Any) -> Any:
        return await self.stub.NotifyStatus(request, **call)


async def test_an_automatic_decision_rides_on_the_receipt_and_the_owner_queues_no_status_item(
    fed: Federation,
) -> None:
    js, zj = fed.nodes["jiangsu"], fed.nodes["zhejiang"]
    app_id = await submit(fed, SERVICE, "ride-1")
    view = await fed.wait_status("jiangsu", app_id, {"completed"})
    assert history(view) == AUTO_HISTORY
    assert view["documents"] and view["documents"][0]["name"] == "result-notice.txt"
    assert [(r["from_node"], r["outcome"]) for r in view["receipts"]] == [("zhejiang", "accepted")]
    assert await status_items(zj) == []  # nothing left the owner by NotifyStatus
    assert await audited(js, NOTIFY_STATUS) == []
    # The origin's audit names the run it took in on the receipt, as it names a status item.
    assert ("in", f"{app_id}#1-4") in await audited(js, DELIVER)
    kept = await zj.db.run(lambda s: s.get_one(InboundApplication, app_id).receipt_run)
    assert [u.sequence for u in peer_pb2.StatusRun.FromString(kept or b"").updates] == [1, 2, 3, 4]


async def test_a_lost_receipt_is_answered_as_a_duplicate_with_the_same_run_applied_once(
    fed: Federation,
) -> None:
    js, zj = fed.nodes["jiangsu"], fed.nodes["zhejiang"]
    js.delivery.channels = AnswerAs(js, zj, lose=1)  # type: ignore[assignment]
    app_id = await submit(fed, SERVICE, "ride-2")
    view = await fed.wait_status("jiangsu", app_id, {"completed"})
    assert history(view) == AUTO_HISTORY
    assert [r["outcome"] for r in view["receipts"]] == ["duplicate"]  # the first answer never came
    assert await status_items(zj) == []
    events = await js.db.run(
        lambda s: len(s.exec(select(StatusEvent).where(StatusEvent.application_id == app_id)).all())
    )
    assert events == 5
    # Jiangsu's later decision still goes the old way: only what was decided on storing rides.
    later = await submit(fed, WORKLIST, "ride-3")
    await fed.wait_status("jiangsu", later, {"in_review"})
    status, decided = await fed.call(
        "zhejiang",
        "POST",
        f"/api/v1/applications/{later}/decision",
        json={"decision": "reject", "reason": "address differs"},
        user="supervisor",
    )
    assert status == 200, decided
    await fed.wait_status("jiangsu", later, {"rejected"})
    assert await status_items(zj) == [f"{later}#3"]


def transfer(fed: Federation, app_id: str, status_on_receipt: bool) -> peer_pb2.ApplicationTransfer:
    """An application from Jiangsu to Zhejiang built by hand, as a member would build one."""
    js = fed.nodes["jiangsu"]
    defn = js.index.get(SERVICE)
    body = application_body(defn, random.Random(app_id))
    now = js.clock.now_ms()
    payload = peer_pb2.ApplicationPayload(
        applicant_name=body["applicant"]["name"],
        applicant_id_number=body["applicant"]["id_number"],
        form_json=json.dumps(body["form"], ensure_ascii=False).encode(),
        attachments=[
            peer_pb2.Attachment(
                material=a["material"], filename="scan.pdf", content_type="application/pdf", data=b"%"
            )
            for a in body["attachments"]
        ],
    )
    return peer_pb2.ApplicationTransfer(
        application_id=app_id,
        origin_node="jiangsu",
        service_id=SERVICE,
        service_version=defn.version,
        submitted_at_ms=now,
        purpose="service-delivery",
        consent=True,
        sealed_payload=seal(js.trust.public_key_of("zhejiang", now), payload.SerializeToString()),
        fields_present=sorted(body["form"]),
        status_on_receipt=status_on_receipt,
    )


async def test_a_run_too_large_for_a_receipt_goes_by_notify_status(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10.6 "Sizes": a run over the bound (here lowered below the automatic decision's, whose
    result notice is a few KiB; in service, large result documents) is not put on the receipt,
    so a full batch of receipts never nears the origin's message limit; it goes as a status
    item, and the origin ends with the same history."""
    monkeypatch.setattr(owner_module, "MAX_RUN_BYTES_ON_RECEIPT", 256)
    app_id = await submit(fed, SERVICE, "too-large-1")
    view = await fed.wait_status("jiangsu", app_id, {"completed"})
    assert history(view) == AUTO_HISTORY
    assert await status_items(fed.nodes["zhejiang"]) == [f"{app_id}#1-4"]
    kept = await fed.nodes["zhejiang"].db.run(lambda s: s.get_one(InboundApplication, app_id).receipt_run)
    assert kept is None


async def test_an_origin_that_did_not_ask_or_a_relayed_item_gets_its_changes_by_notify_status(
    fed: Federation,
) -> None:
    """At the owner: an item without ``status_on_receipt``, and one whose envelope a relay
    carried (``direct`` false), keep the outbox and get a receipt without a run; a copy of an
    item whose run rode gets the same run on its receipt, or, through a relay or not asking,
    by NotifyStatus, once."""
    zj = fed.nodes["zhejiang"]

    async def accept(t: peer_pb2.ApplicationTransfer, direct: bool) -> peer_pb2.Receipt:
        now = zj.clock.now_ms()
        return await zj.db.run(lambda s: zj.bundles.accept(s, "jiangsu", t, now, direct))

    cases = {"0a-not-asked": (False, True), "0b-relayed": (True, False), "0c-rode": (True, True)}
    receipts = {}
    for app_id, (asks, direct) in cases.items():
        receipts[app_id] = await accept(transfer(fed, app_id, asks), direct)
    assert {k: r.outcome for k, r in receipts.items()} == dict.fromkeys(
        cases, Outcome.RECEIPT_OUTCOME_ACCEPTED
    )
    assert [k for k, r in receipts.items() if r.HasField("status_run")] == ["0c-rode"]
    assert await status_items(zj) == ["0a-not-asked#1-4", "0b-relayed#1-4"]
    for asks, direct in ((True, True), (True, False), (False, True), (True, False)):
        again = await accept(transfer(fed, "0c-rode", asks), direct)
        assert again.outcome == Outcome.RECEIPT_OUTCOME_DUPLICATE
        assert again.HasField("status_run") == (asks and direct)
        if asks and direct:
            assert again.status_run == receipts["0c-rode"].status_run
    assert await status_items(zj) == ["0a-not-asked#1-4", "0b-relayed#1-4", "0c-rode#1-4"]


def _other_application(r: peer_pb2.Receipt) -> None:
    for u in r.status_run.updates:
        u.application_id = "0193a1b2c3d4e5f60718293a4b5c"


def _gap(r: peer_pb2.Receipt) -> None:
    r.status_run.updates[2].sequence = 9


def _too_long(r: peer_pb2.Receipt) -> None:
    first = r.status_run.updates[0]
    del r.status_run.updates[:]
    r.status_run.updates.extend(
        peer_pb2.StatusUpdate(
            application_id=first.application_id, status=S.APPLICATION_STATUS_IN_REVIEW, sequence=n
        )
        for n in range(1, 18)
    )


def _unknown_status(r: peer_pb2.Receipt) -> None:
    r.status_run.updates[3].status = 42  # type: ignore[assignment]


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        (_other_application, "malformed_status"),
        (_gap, "malformed_status"),
        (_too_long, "malformed_status"),
        (_unknown_status, "malformed_status"),
    ],
)
async def test_a_receipt_whose_run_fails_the_checks_is_not_usable_and_nothing_of_it_is_applied(
    fed: Federation, tamper: Callable[[peer_pb2.Receipt], None], code: str
) -> None:
    js, zj = fed.nodes["jiangsu"], fed.nodes["zhejiang"]
    js.delivery.channels = AnswerAs(js, zj, tamper=tamper)  # type: ignore[assignment]
    app_id = await submit(fed, SERVICE, f"forged-{tamper.__name__}")

    def entry(s: Session) -> OutboxEntry | None:
        return s.exec(select(OutboxEntry).where(OutboxEntry.item_id == app_id)).first()

    for _ in range(200):
        row = await js.db.run(entry)
        if row is not None and row.last_error:
            break
        await asyncio.sleep(0.05)
    assert row is not None and row.state == "pending", row
    assert row.last_error.startswith(f"no usable receipt: {code}"), row.last_error
    _, view = await fed.call("jiangsu", "GET", f"/api/v1/applications/{app_id}")
    assert history(view) == [(0, "submitted")]  # not even the receipt's own "delivered"
    assert view["receipts"] == []
    js.delivery.channels = js.delivery.channels.real  # type: ignore[attr-defined]
    await fed.wait_status("jiangsu", app_id, {"completed"})  # the re-sent copy's receipt is fine


async def test_a_run_on_a_receipt_from_another_than_the_owner_is_an_unknown_application(
    fed: Federation,
) -> None:
    """The receipt's signer is the authenticated sender of its run: a run of Jiangsu's
    application answered by Shanghai-as-relay (here: by anyone but the owner) is refused."""
    js = fed.nodes["jiangsu"]
    app_id = await submit(fed, WORKLIST, "other-signer")
    await fed.wait_status("jiangsu", app_id, {"in_review"})
    run = peer_pb2.StatusRun(
        updates=[
            peer_pb2.StatusUpdate(application_id=app_id, status=S.APPLICATION_STATUS_APPROVED, sequence=3)
        ]
    )
    receipt = peer_pb2.Receipt(item_id=app_id, outcome=Outcome.RECEIPT_OUTCOME_DUPLICATE, status_run=run)
    env = envelope_pb2.Envelope(sender="anhui").SerializeToString()
    now = js.clock.now_ms()
    problem = await js.db.run(lambda s: js.delivery.on_receipt(s, app_id, "anhui", receipt, env, now))
    assert problem is not None and problem.startswith("unknown_application")
    view = await fed.wait_status("jiangsu", app_id, {"in_review"})
    assert history(view) == [(0, "submitted"), (1, "delivered"), (2, "in_review")]
