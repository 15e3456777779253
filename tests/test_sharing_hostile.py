"""Hostile data-sharing input from a federation member (docs/sharing.md "Checks"): a signature
proves who sent a query, a request or an update, not that it is right. The holder refuses a
malformed query whole with its reason, refuses the resources it may not answer one by one, and
the asker refuses an answer that carries what it did not ask for."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from yrd.peer.v1 import peer_pb2, peer_pb2_grpc

from node.app import Node
from node.grpc_errors import REASON_KEY
from node.trust.envelope import seal_envelope
from node.trust.sealing import seal
from simulations.local_federation import PROVINCES
from tests.support.federation import Federation, node_channel

PERSON = "310101199003071230"
OTHER = "320502198506123456"
QUERY_DATA = "/yrd.peer.v1.PeerService/QueryData"
DELIVER = "/yrd.peer.v1.PeerService/Deliver"
NOTIFY = "/yrd.peer.v1.PeerService/NotifyStatus"
Outcome = peer_pb2.ReceiptOutcome


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    specs = [s for s in PROVINCES if s.node_id in ("shanghai", "jiangsu")]
    f = await Federation(tmp_path, specs).start()
    try:
        yield f
    finally:
        await f.close()


def consent(subject: str = PERSON, resources: tuple[str, ...] = ("sh.health-code",)) -> peer_pb2.DataConsent:
    return peer_pb2.DataConsent(
        given_by="张三", subject_id=subject, resources=list(resources), purpose="health-check", until_ms=2**62
    )


def data_query(
    sender: Node,
    holder: Node,
    *,
    subject: str = PERSON,
    consent_: peer_pb2.DataConsent | None = None,
    asked_by: str = "mallory",
    **over: Any,
) -> peer_pb2.DataQuery:
    now = sender.clock.now_ms()
    sealed = peer_pb2.DataSubject(subject_id=subject, consent=consent_ or consent(), asked_by=asked_by)
    fields: dict[str, Any] = {
        "query_id": "q-" + f"{now:012x}" + "0" * 16,
        "asker_node": sender.trust.node_id,
        "asker_department": "counter",
        "purpose": "health-check",
        "asks": [peer_pb2.DataAsk(resource_id="sh.health-code")],
        "asked_at_ms": now,
        "subject_kind": "person",
        "sealed_subject": seal(holder.trust.key.public_key, sealed.SerializeToString()),
    }
    fields.update(over)
    return peer_pb2.DataQuery(**fields)


async def send_query(sender: Node, holder: Node, q: peer_pb2.DataQuery) -> peer_pb2.DataAnswer:
    env = seal_envelope(
        sender.trust.key,
        sender=sender.trust.node_id,
        destination=holder.trust.node_id,
        method=QUERY_DATA,
        body=q.SerializeToString(),
        now_ms=sender.clock.now_ms(),
    )
    async with node_channel(holder) as ch:
        response = await peer_pb2_grpc.PeerServiceStub(ch).QueryData(peer_pb2.QueryDataRequest(envelope=env))
    return peer_pb2.DataAnswer.FromString(response.envelope.body)


async def refused_whole(sender: Node, holder: Node, q: peer_pb2.DataQuery) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await send_query(sender, holder, q)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return str(dict(caught.value.trailing_metadata() or ())[REASON_KEY])


async def test_a_malformed_query_is_refused_whole_with_its_reason(fed: Federation) -> None:
    js, sh = fed.nodes["jiangsu"], fed.nodes["shanghai"]
    for over, code in (
        ({"asker_node": "zhejiang"}, "sender_mismatch"),
        ({"subject": "310101199003071231"}, "invalid_subject"),
        ({"sealed_subject": b"\x00" * 80}, "sealed_payload_invalid"),
        ({"asked_at_ms": 0}, "stale_query"),
        ({"query_id": "Q/1"}, "invalid_query_id"),
        ({"asks": [peer_pb2.DataAsk(resource_id=f"sh.r{i:03d}") for i in range(17)]}, "invalid_resources"),
        ({"purpose": "Marketing!"}, "invalid_purpose"),
        ({"asker_department": "counter\x1b[2J"}, "invalid_department"),
    ):
        assert await refused_whole(js, sh, data_query(js, sh, **over)) == code, over


async def test_a_query_wrong_in_every_way_gets_the_codes_in_the_documented_order(fed: Federation) -> None:
    """docs/protocol.md 14.1 gives the order the holder checks in: each problem mended in turn
    reveals the next, so two implementations answer one query with one code."""
    js, sh = fed.nodes["jiangsu"], fed.nodes["shanghai"]
    bad_consent = consent()
    bad_consent.purpose = "Marketing!"
    problems: list[tuple[str, dict[str, Any]]] = [
        ("sender_mismatch", {"asker_node": "zhejiang"}),
        ("invalid_query_id", {"query_id": "Q/1"}),
        ("stale_query", {"asked_at_ms": 0}),
        ("invalid_department", {"asker_department": "counter\x1b[2J"}),
        ("sealed_payload_invalid", {"sealed_subject": b"\x00" * 80}),
        ("invalid_subject_kind", {"subject_kind": "thing"}),
        ("invalid_subject", {"subject": "310101199003071231"}),
        ("invalid_purpose", {"purpose": "Marketing!"}),
        ("invalid_resources", {"asks": [peer_pb2.DataAsk(resource_id=f"sh.r{i:03d}") for i in range(17)]}),
        ("invalid_consent", {"consent_": bad_consent}),
        ("invalid_asked_by", {"asked_by": ""}),
    ]
    for i, (code, _) in enumerate(problems):
        over: dict[str, Any] = {}
        for _code, problem in problems[i:]:
            over.update(problem)
        assert await refused_whole(js, sh, data_query(js, sh, **over)) == code, code


async def test_each_resource_is_refused_on_its_own(fed: Federation) -> None:
    js, sh = fed.nodes["jiangsu"], fed.nodes["shanghai"]
    asks = [
        peer_pb2.DataAsk(resource_id="sh.health-code", fields=["status"]),
        peer_pb2.DataAsk(resource_id="sh.medical-records"),
        peer_pb2.DataAsk(resource_id="js.nucleic-acid"),
        peer_pb2.DataAsk(resource_id="sh.health-code.v2"),
    ]
    answer = await send_query(js, sh, data_query(js, sh, asks=asks))
    codes = [(i.resource_id, i.outcome, i.reason_code) for i in answer.items]
    assert codes == [
        ("sh.health-code", "answered", ""),
        ("sh.medical-records", "refused", "not_shared"),
        ("js.nucleic-acid", "refused", "unknown_resource"),
        ("sh.health-code.v2", "refused", "unknown_resource"),
    ]
    assert "《医疗机构病历管理规定》" in answer.items[1].reason
    assert list(answer.items[0].fields) == ["status"]

    # A consent someone else gave, or one for another resource, covers nothing.
    answer = await send_query(js, sh, data_query(js, sh, consent_=consent(subject=OTHER)))
    assert answer.items[0].reason_code == "consent_subject"
    answer = await send_query(js, sh, data_query(js, sh, consent_=consent(resources=("zj.vaccination",))))
    assert answer.items[0].reason_code == "consent_scope"
    bad_field = [peer_pb2.DataAsk(resource_id="sh.health-code", fields=["diagnosis"])]
    answer = await send_query(js, sh, data_query(js, sh, asks=bad_field))
    assert answer.items[0].reason_code == "unknown_field"


async def test_requests_and_updates_from_a_peer_are_checked(fed: Federation) -> None:
    js, sh = fed.nodes["jiangsu"], fed.nodes["shanghai"]
    now = sh.clock.now_ms()

    def transfer(**over: Any) -> peer_pb2.DataRequestTransfer:
        fields: dict[str, Any] = {
            "request_id": "dr-" + f"{now:012x}" + "1" * 16,
            "asker_node": "shanghai",
            "asker_department": "counter",
            "resource_id": "js.social-insurance.contributions",
            "fields": ["months_paid"],
            "purpose": "service-delivery",
            "legal_basis": "《社会保险法》",
            "until_ms": now + 86_400_000,
            "requested_at_ms": now,
            "requested_by": "clerk",
        }
        fields.update(over)
        return peer_pb2.DataRequestTransfer(**fields)

    async def deliver(item: peer_pb2.DeliverItem) -> peer_pb2.Receipt:
        env = seal_envelope(
            sh.trust.key, sender="shanghai", destination="jiangsu", method=DELIVER,
            body=item.SerializeToString(), now_ms=sh.clock.now_ms(),
        )  # fmt: skip
        async with node_channel(js) as ch:
            answer = await peer_pb2_grpc.PeerServiceStub(ch).Deliver(peer_pb2.DeliverRequest(envelopes=[env]))
        return peer_pb2.Receipt.FromString(answer.receipts[0].body)

    for t, code in (
        (transfer(asker_node="zhejiang"), "sender_mismatch"),
        (transfer(resource_id="js.nucleic-acid"), "not_conditional"),
        (transfer(fields=["salary"]), "unknown_field"),
        (transfer(until_ms=now - 1), "invalid_until"),
        (transfer(request_id="../etc"), "invalid_request_id"),
    ):
        receipt = await deliver(peer_pb2.DeliverItem(data_request=t))
        assert (receipt.outcome, receipt.reason_code) == (Outcome.RECEIPT_OUTCOME_REJECTED, code), t
    good = await deliver(peer_pb2.DeliverItem(data_request=transfer()))
    assert good.outcome == Outcome.RECEIPT_OUTCOME_ACCEPTED
    again = await deliver(peer_pb2.DeliverItem(data_request=transfer()))
    assert again.outcome == Outcome.RECEIPT_OUTCOME_DUPLICATE

    # An update about a request shanghai never sent to jiangsu is refused at shanghai.
    update = peer_pb2.DataRequestUpdate(request_id="dr-" + "0" * 28, sequence=1, status="approved", at_ms=now)
    env = seal_envelope(
        js.trust.key, sender="jiangsu", destination="shanghai", method=NOTIFY,
        body=peer_pb2.StatusItem(data_request_update=update).SerializeToString(), now_ms=now,
    )  # fmt: skip
    async with node_channel(sh) as ch:
        answer = await peer_pb2_grpc.PeerServiceStub(ch).NotifyStatus(
            peer_pb2.NotifyStatusRequest(envelopes=[env])
        )
    receipt = peer_pb2.Receipt.FromString(answer.receipts[0].body)
    assert (receipt.outcome, receipt.reason_code) == (Outcome.RECEIPT_OUTCOME_REJECTED, "unknown_request")


async def test_an_answer_with_fields_not_asked_for_is_not_shown(fed: Federation) -> None:
    js, sh = fed.nodes["jiangsu"], fed.nodes["shanghai"]
    honest = js.backend.data_holder._item

    def leaky(s: Any, asker: str, *rest: Any) -> peer_pb2.DataItem:
        item = honest(s, asker, *rest)
        record = peer_pb2.DataRecord(
            fields_json=json.dumps({"result": "阴性", "home_address": "上海市某路1号"}).encode()
        )
        item.ClearField("fields")
        item.fields.extend(["result", "home_address"])
        item.sealed_record = seal(sh.trust.key.public_key, record.SerializeToString())
        return item

    js.backend.data_holder._item = leaky  # type: ignore[method-assign]
    status, view = await fed.call(
        "shanghai",
        "POST",
        "/api/v1/queries",
        json={
            "subject": {"kind": "person", "id": PERSON},
            "purpose": "health-check",
            "resources": [{"id": "js.nucleic-acid", "fields": ["result"]}],
            "consent": {
                "given_by": "张三",
                "subject_id": PERSON,
                "resources": ["js.nucleic-acid"],
                "purpose": "health-check",
                "until": "2099-01-01T00:00:00+08:00",
            },
        },
    )
    assert status == 200, view
    (item,) = view["items"]
    assert (item["outcome"], item["reason_code"], item["fields"]) == ("refused", "bad_answer", None)


async def test_an_answer_with_a_malformed_code_is_not_shown(fed: Federation) -> None:
    js = fed.nodes["jiangsu"]
    honest = js.backend.data_holder._item

    def garbled(*args: Any) -> peer_pb2.DataItem:
        item = honest(*args)
        item.outcome, item.reason_code, item.basis = "refused", "\x1b[31mgranted", "trust me"
        item.ClearField("sealed_record")
        return item

    js.backend.data_holder._item = garbled  # type: ignore[method-assign]
    status, view = await fed.call(
        "shanghai",
        "POST",
        "/api/v1/queries",
        json={
            "subject": {"kind": "person", "id": PERSON},
            "purpose": "health-check",
            "resources": [{"id": "js.nucleic-acid"}],
        },
    )
    assert status == 200, view
    assert [(i["outcome"], i["reason_code"]) for i in view["items"]] == [("refused", "bad_answer")]
