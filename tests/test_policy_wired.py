"""The shipped policy bundles at work between real nodes: denials with their rule ids,
stripped and masked fields, four-eyes release, and the decision log."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlmodel import Session, select
from yrd.peer.v1 import peer_pb2

from core.clock import SystemClock
from core.errors import PolicyDenied
from node.cases.deadlines import CST
from node.models import Application, AuditRecord, InboundApplication, OutboxEntry
from node.trust.sealing import unseal
from policies.decision_log import PolicyDecisionRow
from simulations.local_federation import PROVINCES
from simulations.sample_applications import application_body
from tests.support.federation import PASSWORD, Federation


class OffsetClock(SystemClock):
    """Real time shifted to a chosen local time of day, for time-window rules."""

    def __init__(self, hour: int, minute: int) -> None:
        now = dt.datetime.now(CST)
        target = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        self.offset_ms = int((target - now).total_seconds() * 1000)

    def now_ms(self) -> int:
        return super().now_ms() + self.offset_ms


async def start(tmp: Path, clock: SystemClock | None = None) -> Federation:
    fed = await Federation(tmp, PROVINCES, clock=clock).start()
    for node in fed.nodes.values():
        await node.users.add_user("clerk2", PASSWORD, "clerk")
        await node.users.add_user("operator", PASSWORD, "operator")
    return fed


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    f = await start(tmp_path)
    try:
        yield f
    finally:
        await f.close()


def body_for(fed: Federation, service_id: str, **form: object) -> dict[str, object]:
    body = application_body(fed.nodes["shanghai"].index.get(service_id), random.Random(11))
    body["form"].update(form)  # type: ignore[union-attr]
    return body


async def test_outbound_denial_names_the_rule_and_sends_nothing(fed: Federation) -> None:
    status, problem = await fed.submit("anhui", body_for(fed, "zj.industrial-licence"), "deny-1")
    assert status == 403
    assert problem["rule_id"] == "ah-out-not-yet-agreed"
    assert problem["type"].endswith("policy_denied")
    anhui = fed.nodes["anhui"]
    assert await anhui.db.run(lambda s: s.exec(select(OutboxEntry)).all()) == []
    assert await anhui.db.run(lambda s: s.exec(select(Application)).all()) == []
    zj_log = await fed.nodes["zhejiang"].db.run(lambda s: list(s.exec(select(AuditRecord)).all()))
    assert not [r for r in zj_log if r.peer == "anhui" and r.method.endswith("/Deliver")]


async def test_a_stripped_field_never_reaches_the_owner(fed: Federation) -> None:
    body = body_for(fed, "sh.medical.cross-region-filing", residence_address="杭州市西湖区文三路1号")
    status, created = await fed.submit("zhejiang", body, "strip-1")
    assert status == 201, created
    await fed.wait_status("zhejiang", created["id"], {"completed", "needs_materials"})
    shanghai = fed.nodes["shanghai"]
    row = await shanghai.db.run(lambda s: s.get(InboundApplication, created["id"]))
    assert row is not None
    payload = peer_pb2.ApplicationPayload.FromString(unseal(shanghai.trust.key, row.sealed_payload))
    form = json.loads(payload.form_json)
    assert "residence_address" not in form
    assert form["settle_city"] == body["form"]["settle_city"]  # type: ignore[index]
    assert "residence_address" not in row.fields_present


async def test_a_masked_field_arrives_masked(fed: Federation) -> None:
    body = body_for(fed, "zj.industrial-licence", contact_person="王建国")
    status, created = await fed.submit("jiangsu", body, "mask-1")
    assert status == 201, created
    await fed.wait_status("jiangsu", created["id"], {"in_review"})
    _, work = await fed.call("zhejiang", "GET", "/api/v1/worklist", user="supervisor")
    item = next(a for a in work["applications"] if a["id"] == created["id"])
    assert item["form"]["contact_person"] != "王建国"
    assert item["form"]["contact_person"].startswith("王")


async def test_four_eyes_hold_until_a_supervisor_releases(fed: Federation) -> None:
    status, created = await fed.submit("jiangsu", body_for(fed, "zj.hangzhou.hukou.migration"), "hold-1")
    assert status == 201, created
    assert created["status"] == "awaiting_approval"
    assert await fed.nodes["jiangsu"].db.run(
        lambda s: [e.state for e in s.exec(select(OutboxEntry)).all()]
    ) == ["held"]
    release = f"/api/v1/applications/{created['id']}/release"
    for other_clerk in ("clerk", "clerk2"):  # another clerk of the counter is not enough
        status, problem = await fed.call("jiangsu", "POST", release, user=other_clerk)
        assert status == 403 and problem["code"] == "role_required"
    status, released = await fed.call("jiangsu", "POST", release, user="supervisor")
    assert status == 200, released
    view = await fed.wait_status("jiangsu", created["id"], {"in_review"})
    assert [h["status"] for h in view["history"]][:2] == ["awaiting_approval", "submitted"]


async def test_decisions_are_logged_for_operators(fed: Federation) -> None:
    await fed.submit("anhui", body_for(fed, "zj.industrial-licence"), "log-1")
    fed.tokens["anhui"] = await fed.login("anhui", "operator")
    status, log = await fed.call("anhui", "GET", "/api/v1/policy/decisions?limit=10")
    assert status == 200
    denied = [d for d in log["decisions"] if not d["allowed"]]
    assert denied and denied[0]["deciding_rule"] == "ah-out-not-yet-agreed"
    assert "王" not in json.dumps(log, ensure_ascii=False)  # names never reach the log


async def test_an_allowed_submit_logs_its_decision_with_the_application_and_a_replay_its_own(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = fed.nodes["jiangsu"].db
    units: list[list[str]] = []  # the statements of each unit of work, in turn (one worker thread)
    run = db.run

    async def traced(fn: Callable[[Session], Any]) -> Any:
        def unit(s: Session) -> Any:
            units.append([])
            return fn(s)

        return await run(unit)

    def statement(_conn: object, _cursor: object, sql: str, *_rest: object) -> None:
        if units:
            units[-1].append(sql)

    monkeypatch.setattr(db, "run", traced)
    event.listen(db.engine, "before_cursor_execute", statement)
    body = body_for(fed, "zj.medical.cross-region-filing")
    status, created = await fed.submit("jiangsu", body, "one-unit-1")
    event.remove(db.engine, "before_cursor_execute", statement)
    monkeypatch.undo()
    assert status == 201, created
    logging = [u for u in units if any(sql.startswith("INSERT INTO policy_decision") for sql in u)]
    assert len(logging) == 1 and any(sql.startswith("INSERT INTO application ") for sql in logging[0])
    # The key is checked in that same unit, by the INSERT's conflict on its unique index: no
    # transaction of its own before it, and no look-up while the key is new.
    keyed = [u for u in units if any("idempotency_key" in sql for sql in u)]
    assert keyed == logging
    assert not any("application.idempotency_key =" in sql for sql in logging[0])

    def decisions(s: Session) -> list[tuple[str, bool]]:
        return [(d.decision_id, d.allowed) for d in s.exec(select(PolicyDecisionRow)).all()]

    logged = await db.run(decisions)
    app = await db.run(lambda s: s.get(Application, created["id"]))
    assert app is not None and logged == [(app.policy_decision_id, True)]
    # A retry is found in the transaction that would store it, after the policy was asked
    # again: that decision is logged (every decision is), the application stays the first's.
    status, again = await fed.submit("jiangsu", body, "one-unit-1")
    assert again["id"] == created["id"]
    after = await db.run(decisions)
    assert len(after) == 2 and set(logged) < set(after) and all(allowed for _, allowed in after)


async def test_a_retry_the_policy_now_refuses_still_gets_its_first_answer(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = body_for(fed, "zj.medical.cross-region-filing")
    status, created = await fed.submit("jiangsu", body, "tightened-1")
    assert status == 201, created

    async def refused(*_args: object) -> None:
        raise PolicyDenied("no longer agreed", code="denied", rule_id="js-tightened")

    # Rules tightened since: the retry is refused before the submit's transaction, and only
    # then looked up on its own, to be answered as the first was; a new request is refused.
    monkeypatch.setattr(fed.nodes["jiangsu"].backend.origin.policy, "outbound", refused)
    status, again = await fed.submit("jiangsu", body, "tightened-1")
    assert status == 201 and again["id"] == created["id"]
    status, problem = await fed.submit("jiangsu", body, "tightened-2")
    assert status == 403 and problem["code"] == "denied", problem


async def test_inbound_denial_becomes_a_refusal_at_the_origin_counter(tmp_path: Path) -> None:
    fed = await start(tmp_path, OffsetClock(23, 30))  # Shanghai's housing fund settles nightly
    try:
        status, created = await fed.submit("jiangsu", body_for(fed, "sh.housing-fund.transfer"), "in-1")
        assert status == 201, created
        view = await fed.wait_status("jiangsu", created["id"], {"refused"})
        assert view["history"][-1]["rule_id"] == "sh-in-housing-fund-settlement"
        assert any(r["outcome"] == "rejected" for r in view["receipts"])
    finally:
        await fed.close()
