"""Supervision clues across an in-process federation (docs/clues.md): a Suzhou food-safety
clue taken in at Shanghai reaches Jiangsu's responsible regulator, is handled and closed with
every step shown at the source; an unacknowledged one climbs county -> city -> province ->
dispatch desk as the injected clock passes its deadlines; a two-domain clue is one joint task;
a member's invalid clue is refused with its code and not stored."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import VerifyKey
from prometheus_client import REGISTRY
from sqlmodel import Session, select
from yrd.peer.v1 import peer_pb2, peer_pb2_grpc

from core.clock import FakeClock
from node.delivery.outbox import pending_count
from node.models import ClueCase, ClueTask
from node.trust.envelope import seal_envelope, signing_input
from node.trust.sealing import seal
from registry.dispatch import credit_code_check_character
from simulations.local_federation import PROVINCES
from tests.support.federation import PASSWORD, Federation, allow_all_specs, node_channel

DELIVER = "/yrd.peer.v1.PeerService/Deliver"
Outcome = peer_pb2.ReceiptOutcome
ZJG_SMJ = "张家港市市场监督管理局"
ZJG_YJJ = "张家港市应急管理局"
SZ_SMJ = "苏州市市场监督管理局"
JS_SMJ = "江苏省市场监督管理局"
JS_DESK = "江苏省一网统管指挥调度中心"


def credit_code(body17: str = "91320582MA1N2P3Q4") -> str:
    return body17 + credit_code_check_character(body17)


class SteppedClock(FakeClock):
    """The injected FakeClock, moved only by the test; its sleep waits a little real time
    instead of advancing, so the nodes' background loops do not run the clock forward."""

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(min(seconds, 0.02))


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    specs = [s for s in allow_all_specs(tmp_path, PROVINCES) if s.node_id in ("shanghai", "jiangsu")]
    f = await Federation(tmp_path, specs, clock=SteppedClock()).start()
    js = f.nodes["jiangsu"]
    for user, dept in (("zjg-smj", ZJG_SMJ), ("zjg-yjj", ZJG_YJJ), ("sz-smj", SZ_SMJ)):
        await js.users.add_user(user, PASSWORD, "owner_clerk", department=dept)
    try:
        yield f
    finally:
        await f.close()


def clue_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "source": "citizen_report",
        "region_code": "320582",
        "domains": ["food_drug"],
        "subject": {"credit_code": credit_code()},
        "severity": "high",
        "description": "供应上海学校的食品企业生产车间卫生条件不达标",
        "reporter": {"name": "王某", "contact": "13800000000"},
        "acknowledge_within_hours": 1,
        "close_within_days": 5,
    }
    body.update(overrides)
    return body


async def submit(fed: Federation, body: dict[str, Any], key: str) -> str:
    status, created = await fed.call(
        "shanghai", "POST", "/api/v1/clues", json=body, headers={"Idempotency-Key": key}
    )
    assert status == 201, created
    assert created["owner_node"] == "jiangsu"
    return str(created["id"])


async def wait_steps(fed: Federation, clue_id: str, count: int) -> dict[str, Any]:
    """Poll the source until its history holds ``count`` steps."""
    view: dict[str, Any] = {}
    for _ in range(400):
        status, view = await fed.call("shanghai", "GET", f"/api/v1/clues/{clue_id}")
        assert status == 200, view
        if len(view["history"]) >= count:
            return view
        await asyncio.sleep(0.05)
    raise AssertionError(f"history stayed {view.get('history')}")


async def advance(fed: Federation, seconds: float) -> None:
    """Move the federation's clock once nothing is in flight between the nodes. An envelope
    signed before a jump of an hour and checked after it is refused for clock skew, and its
    sender's backoff, measured on a clock that then stands still, would never run out."""
    clock = fed.clock
    assert isinstance(clock, FakeClock)
    for _ in range(500):
        pending = [await node.db.run(pending_count) for node in fed.nodes.values()]
        if not any(pending):
            clock.advance(seconds)
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"outboxes did not drain: {pending}")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_suzhou_food_clue_from_shanghai_closes_the_loop(fed: Federation) -> None:
    clue_id = await submit(fed, clue_body(), "clue-1")
    view = await wait_steps(fed, clue_id, 2)
    assert [h["step"] for h in view["history"]] == ["submitted", "dispatched"]
    assert view["history"][1]["department"] == ZJG_SMJ and view["history"][1]["level"] == "county"
    assert [r["outcome"] for r in view["receipts"]] == ["accepted"]
    assert "detail" not in view  # the counter sees the loop, not the regulator's file

    # The regulator's queue: the county bureau sees it, with the sealed reporter opened; the
    # emergency bureau of the same county does not.
    status, queue = await fed.call("jiangsu", "GET", "/api/v1/clues", user="zjg-smj")
    assert status == 200 and [c["id"] for c in queue["clues"]] == [clue_id]
    assert queue["clues"][0]["detail"]["reporter"]["name"] == "王某"
    status, other = await fed.call("jiangsu", "GET", f"/api/v1/clues/{clue_id}", user="zjg-yjj")
    assert status == 404 and other["code"] == "unknown_clue"
    status, early = await fed.call(
        "jiangsu", "POST", f"/api/v1/clues/{clue_id}/close", json={}, user="zjg-smj"
    )
    assert status == 409 and early["code"] == "no_findings"

    path = f"/api/v1/clues/{clue_id}"
    assert (await fed.call("jiangsu", "POST", path + "/acknowledge", json={}, user="zjg-smj"))[0] == 200
    report = {
        "name": "现场检查笔录.pdf",
        "content_type": "application/pdf",
        "data": base64.b64encode(b"%PDF").decode(),
    }
    status, after = await fed.call(
        "jiangsu",
        "POST",
        path + "/findings",
        json={
            "text": "现场检查属实，责令停产整改",
            "rectification": "7日内完成整改并复查",
            "documents": [report],
        },
        user="zjg-smj",
    )
    assert status == 200, after
    status, closed = await fed.call(
        "jiangsu", "POST", path + "/close", json={"note": "复查合格"}, user="zjg-smj"
    )
    assert status == 200 and closed["status"] == "closed"

    view = await wait_steps(fed, clue_id, 7)
    steps = [h["step"] for h in view["history"]]
    assert steps == [
        "submitted",
        "dispatched",
        "acknowledged",
        "findings",
        "rectification_ordered",
        "closed",
        "completed",
    ]
    assert [h["sequence"] for h in view["history"]] == list(range(7))
    findings = view["history"][3]["findings"]  # sealed to Shanghai, opened there
    assert findings["text"] == "现场检查属实，责令停产整改"
    assert base64.b64decode(findings["documents"][0]["data"]) == b"%PDF"
    assert view["status"] == "completed"
    assert metric("yrd_clues_received_total", domain="food_drug", region="3205") >= 1
    assert metric("yrd_clues_closed_total", domain="food_drug", region="3205") >= 1

    # The same key and body again is the same clue; another body under the key is refused.
    status, again = await fed.call(
        "shanghai", "POST", "/api/v1/clues", json=clue_body(), headers={"Idempotency-Key": "clue-1"}
    )
    assert status == 201 and again["id"] == clue_id
    status, reused = await fed.call(
        "shanghai",
        "POST",
        "/api/v1/clues",
        json=clue_body(severity="low"),
        headers={"Idempotency-Key": "clue-1"},
    )
    assert status == 422 and reused["code"] == "idempotency_key_reused"


async def test_an_unacknowledged_clue_climbs_to_the_dispatch_desk(fed: Federation) -> None:
    clock = fed.clock
    assert isinstance(clock, FakeClock)
    clues = fed.nodes["jiangsu"].backend.clues
    before = metric("yrd_clues_escalated_total", domain="food_drug", region="3205")
    clue_id = await submit(fed, clue_body(), "clue-2")
    await wait_steps(fed, clue_id, 2)
    assert await clues.tick() == 0  # nothing is due yet

    for department, level in ((SZ_SMJ, "city"), (JS_SMJ, "province"), (JS_DESK, "province")):
        await advance(fed, 3601)
        await clues.tick()  # the node's own periodic check may run it first: the same
        status, view = await fed.call("jiangsu", "GET", f"/api/v1/clues/{clue_id}", user="supervisor")
        assert status == 200
        (task,) = view["tasks"]
        assert (task["department"], task["level"], task["status"]) == (department, level, "dispatched")
    assert task["escalations"] == 3
    await advance(fed, 3601)
    assert await clues.tick() == 0  # the desk is the top: it stays there, overdue and counted
    status, view = await fed.call("jiangsu", "GET", f"/api/v1/clues/{clue_id}", user="supervisor")
    assert view["tasks"][0]["overdue"] is True
    assert metric("yrd_clues_escalated_total", domain="food_drug", region="3205") == before + 3
    assert metric("yrd_clues_overdue_entries", domain="food_drug", region="3205") >= 1

    # The county bureau no longer holds it; the city bureau would have, before it moved on.
    status, _ = await fed.call("jiangsu", "GET", f"/api/v1/clues/{clue_id}", user="zjg-smj")
    assert status == 404
    view = await wait_steps(fed, clue_id, 5)
    escalations = [h for h in view["history"] if h["step"] == "escalated"]
    assert [h["department"] for h in escalations] == [SZ_SMJ, JS_SMJ, JS_DESK]


async def test_a_two_domain_clue_is_one_joint_inspection(fed: Federation) -> None:
    clue_id = await submit(fed, clue_body(domains=["food_drug", "work_safety"], source="national"), "clue-3")
    view = await wait_steps(fed, clue_id, 3)
    assert view["joint"] is True
    assert {h["department"] for h in view["history"] if h["step"] == "dispatched"} == {ZJG_SMJ, ZJG_YJJ}
    path = f"/api/v1/clues/{clue_id}"
    status, problem = await fed.call("jiangsu", "POST", path + "/acknowledge", json={}, user="supervisor")
    assert status == 400 and problem["code"] == "department_required"
    for user, text in (("zjg-smj", "食品原料台账不全"), ("zjg-yjj", "消防通道堵塞，已责令清理")):
        assert (await fed.call("jiangsu", "POST", path + "/acknowledge", json={}, user=user))[0] == 200
        status, _ = await fed.call("jiangsu", "POST", path + "/findings", json={"text": text}, user=user)
        assert status == 200
        status, now = await fed.call("jiangsu", "POST", path + "/close", json={}, user=user)
        assert status == 200
    assert now["status"] == "closed"
    status, full = await fed.call("jiangsu", "GET", path, user="supervisor")
    assert {t["department"]: t["findings"]["text"] for t in full["tasks"]} == {
        ZJG_SMJ: "食品原料台账不全",
        ZJG_YJJ: "消防通道堵塞，已责令清理",
    }
    view = await wait_steps(fed, clue_id, 10)
    assert [h["step"] for h in view["history"]].count("findings") == 2
    assert view["history"][-1]["step"] == "completed"


async def test_the_counter_refuses_a_bad_clue_before_anything_is_stored(fed: Federation) -> None:
    bad_code = credit_code()[:17] + ("0" if credit_code()[17] != "0" else "1")
    for body, code in (
        (clue_body(subject={"credit_code": bad_code}), "invalid_credit_code"),
        (clue_body(region_code="320599"), "unknown_division"),
        (clue_body(domains=["food_drug", "food_drug"]), "invalid_domain"),
        (clue_body(reporter={}), "reporter_required"),
        (clue_body(subject={"credit_code": credit_code(), "place": "张家港市某路"}), "invalid_subject"),
        (clue_body(domains=["weather"]), "bad_value"),
    ):
        status, problem = await fed.call(
            "shanghai", "POST", "/api/v1/clues", json=body, headers={"Idempotency-Key": f"bad-{code}"}
        )
        assert (status, problem["code"]) == (400, code), problem
    status, listed = await fed.call("shanghai", "GET", "/api/v1/clues", user="supervisor")
    assert listed["clues"] == []


async def test_a_members_invalid_clue_is_refused_with_its_code_and_not_stored(fed: Federation) -> None:
    sh, js = fed.nodes["shanghai"], fed.nodes["jiangsu"]
    now = sh.clock.now_ms()

    def transfer(clue_id: str, **fields: Any) -> peer_pb2.ClueTransfer:
        detail = peer_pb2.ClueDetail(description="举报", reporter_name="王某")
        t = peer_pb2.ClueTransfer(
            clue_id=clue_id,
            source_node="shanghai",
            source="citizen_report",
            region_code="320582",
            domains=["food_drug"],
            subject_credit_code=credit_code(),
            severity="high",
            reported_at_ms=now,
            acknowledge_by_ms=now + 3_600_000,
            close_by_ms=now + 86_400_000,
            sealed_detail=seal(sh.trust.public_key_of("jiangsu", now), detail.SerializeToString()),
        )
        for name, value in fields.items():
            setattr(t, name, value)
        return t

    async def deliver(t: peer_pb2.ClueTransfer) -> peer_pb2.Receipt:
        env = seal_envelope(
            sh.trust.key,
            sender="shanghai",
            destination="jiangsu",
            method=DELIVER,
            body=peer_pb2.DeliverItem(clue=t).SerializeToString(),
            now_ms=now,
        )
        async with node_channel(js) as ch:
            answer = await peer_pb2_grpc.PeerServiceStub(ch).Deliver(peer_pb2.DeliverRequest(envelopes=[env]))
        (reply,) = answer.receipts
        VerifyKey(js.trust.key.public_key).verify(signing_input(reply), reply.signature)
        return peer_pb2.Receipt.FromString(reply.body)

    bad_code = credit_code()[:17] + ("0" if credit_code()[17] != "0" else "1")
    cases = [
        (transfer("forged-1", subject_credit_code=bad_code), "invalid_credit_code"),
        (transfer("forged-2", source_node="zhejiang"), "origin_mismatch"),
        (transfer("Forged/3"), "invalid_clue_id"),
        (transfer("forged-4", region_code="310115"), "not_our_region"),
        (transfer("forged-5", close_by_ms=now + 1000), "bad_deadline"),
        (transfer("forged-6", sealed_detail=b"not sealed"), "sealed_payload_invalid"),
        (transfer("forged-7", severity="apocalyptic"), "invalid_severity"),
    ]
    for t, code in cases:
        receipt = await deliver(t)
        assert (receipt.outcome, receipt.reason_code) == (Outcome.RECEIPT_OUTCOME_REJECTED, code), t.clue_id

    def kept(s: Session) -> tuple[int, int]:
        return len(s.exec(select(ClueCase)).all()), len(s.exec(select(ClueTask)).all())

    assert await js.db.run(kept) == (0, 0)
    # A good one from the same member is stored once; its copy is a duplicate.
    good = transfer("member-clue-1")
    assert (await deliver(good)).outcome == Outcome.RECEIPT_OUTCOME_ACCEPTED
    assert (await deliver(good)).outcome == Outcome.RECEIPT_OUTCOME_DUPLICATE
    assert await js.db.run(kept) == (1, 1)


async def test_a_clue_in_the_own_region_is_dispatched_at_once_and_a_ruleless_domain_reaches_the_desk(
    fed: Federation,
) -> None:
    # Taken in at Jiangsu for Jiangsu: the receiver's code runs in the counter's transaction.
    status, created = await fed.call(
        "jiangsu", "POST", "/api/v1/clues", json=clue_body(), headers={"Idempotency-Key": "local-1"}
    )
    assert status == 201 and created["owner_node"] == "jiangsu" and created["status"] == "dispatched"
    status, view = await fed.call("jiangsu", "GET", f"/api/v1/clues/{created['id']}", user="supervisor")
    assert [h["step"] for h in view["history"]] == ["submitted", "dispatched"]
    assert view["tasks"][0]["department"] == ZJG_SMJ

    # Shanghai's rules name no department for finance: its dispatch desk takes the clue.
    body = clue_body(region_code="310115", domains=["finance"], subject={"place": "浦东新区某路某号"})
    status, created = await fed.call(
        "jiangsu", "POST", "/api/v1/clues", json=body, headers={"Idempotency-Key": "desk-1"}
    )
    assert status == 201 and created["owner_node"] == "shanghai"
    for _ in range(400):
        status, view = await fed.call("jiangsu", "GET", f"/api/v1/clues/{created['id']}")
        if len(view["history"]) >= 2:
            break
        await asyncio.sleep(0.05)
    assert view["history"][1]["department"] == "上海市城市运行管理和应急指挥中心"
    assert view["history"][1]["level"] == "province"


async def test_a_clue_not_closed_in_time_is_escalated_too(fed: Federation) -> None:
    clock = fed.clock
    assert isinstance(clock, FakeClock)
    clue_id = await submit(fed, clue_body(close_within_days=1, acknowledge_within_hours=2), "clue-6")
    await wait_steps(fed, clue_id, 2)
    path = f"/api/v1/clues/{clue_id}"
    assert (await fed.call("jiangsu", "POST", path + "/acknowledge", json={}, user="zjg-smj"))[0] == 200
    await advance(fed, 3 * 3600)
    assert await fed.nodes["jiangsu"].backend.clues.tick() == 0  # acknowledged in time
    await advance(fed, 22 * 3600)
    await fed.nodes["jiangsu"].backend.clues.tick()  # (or the node's own periodic check, first)
    fed.user_tokens.clear()  # a day has passed: the sessions of the morning have expired
    fed.tokens["shanghai"] = await fed.login("shanghai", "clerk")
    status, view = await fed.call("jiangsu", "GET", path, user="sz-smj")
    assert status == 200
    (task,) = view["tasks"]
    assert (task["department"], task["status"], task["escalations"]) == (SZ_SMJ, "acknowledged", 1)
    view = await wait_steps(fed, clue_id, 4)
    assert view["history"][-1]["step"] == "escalated"
    assert view["history"][-1]["note"] == f"not closed by {ZJG_SMJ} in time"


async def test_the_source_takes_steps_only_from_the_member_it_sent_the_clue_to(fed: Federation) -> None:
    sh, js = fed.nodes["shanghai"], fed.nodes["jiangsu"]
    clue_id = await submit(fed, clue_body(), "clue-5")
    await wait_steps(fed, clue_id, 2)
    now = js.clock.now_ms()

    async def notify(update: peer_pb2.ClueUpdate) -> peer_pb2.Receipt:
        env = seal_envelope(
            js.trust.key,
            sender="jiangsu",
            destination="shanghai",
            method="/yrd.peer.v1.PeerService/NotifyStatus",
            body=peer_pb2.StatusItem(clue_update=update).SerializeToString(),
            now_ms=now,
        )
        async with node_channel(sh) as ch:
            answer = await peer_pb2_grpc.PeerServiceStub(ch).NotifyStatus(
                peer_pb2.NotifyStatusRequest(envelopes=[env])
            )
        return peer_pb2.Receipt.FromString(answer.receipts[0].body)

    for update, code in (
        (peer_pb2.ClueUpdate(clue_id="no-such-clue", sequence=9, step="closed", at_ms=now), "unknown_clue"),
        (peer_pb2.ClueUpdate(clue_id=clue_id, sequence=9, step="bribed", at_ms=now), "malformed_status"),
        (peer_pb2.ClueUpdate(clue_id=clue_id, sequence=0, step="closed", at_ms=now), "malformed_status"),
        (
            peer_pb2.ClueUpdate(
                clue_id=clue_id, sequence=9, step="findings", at_ms=now, sealed_findings=b"junk"
            ),
            "sealed_payload_invalid",
        ),
    ):
        receipt = await notify(update)
        assert (receipt.outcome, receipt.reason_code) == (Outcome.RECEIPT_OUTCOME_REJECTED, code)
    status, view = await fed.call("shanghai", "GET", f"/api/v1/clues/{clue_id}")
    assert status == 200 and [h["step"] for h in view["history"]] == ["submitted", "dispatched"]


async def test_a_member_without_dispatch_rules_refuses_and_the_source_shows_why(tmp_path: Path) -> None:
    specs = [
        dataclasses.replace(s, dispatch=None) if s.node_id == "jiangsu" else s
        for s in allow_all_specs(tmp_path, PROVINCES)
        if s.node_id in ("shanghai", "jiangsu")
    ]
    fed = await Federation(tmp_path, specs).start()
    try:
        clue_id = await submit(fed, clue_body(), "no-rules-1")
        view = await wait_steps(fed, clue_id, 2)
        assert view["status"] == "refused"
        assert view["history"][1]["note"].startswith("no_dispatch_rules")
        assert view["receipts"][0]["outcome"] == "rejected"
    finally:
        await fed.close()
