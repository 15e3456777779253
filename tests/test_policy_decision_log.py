"""The decision log stores what was decided and on what, never a form value."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, select

from core.clock import FakeClock
from core.db import Database
from policies.decision_log import DecisionLog, PolicyDecisionRow
from policies.engine import PolicyEngine
from policies.model import PolicyInput
from policies.schema import parse_bundle

BUNDLE = b"""\
node: jiangsu
revision: "5"
rules:
  - id: in-own
    effect: allow
    when: {direction: inbound, service: {owners: "32"}}
    obligations: {mask: phone}
"""
REQUEST = PolicyInput(
    direction="inbound",
    peer_node="anhui",
    peer_jurisdiction="34",
    service_id="js.social-card.apply",
    service_owner="320000",
    service_department="江苏省人力资源和社会保障厅",
    purpose="service-delivery",
    role="",
    fields=frozenset({"phone", "bank"}),
    consent=True,
    at_ms=1_767_578_400_000,
)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'node.db'}")
    database.create_all()
    yield database
    database.close()


async def test_record_then_read_back_newest_first(db: Database) -> None:
    engine = PolicyEngine(parse_bundle(BUNDLE, "b.yaml"), FakeClock())
    log = DecisionLog(db)
    allowed = engine.decide(REQUEST)
    later = dataclasses.replace(REQUEST, at_ms=REQUEST.at_ms + 1000, service_owner="310000")
    denied = engine.decide(later)
    await log.record(allowed, REQUEST)
    await log.record(denied, later)

    rows = await log.recent(limit=10)
    assert [r["decision_id"] for r in rows] == [denied.decision_id, allowed.decision_id]
    first = rows[1]
    assert first["allowed"] is True and first["rule_ids"] == ["in-own"] and first["code"] == "allowed"
    assert first["fields"] == ["bank", "phone"]
    assert first["obligations"]["mask"] == ["phone"]
    assert first["bundle_revision"] == engine.revision
    assert rows[0]["deciding_rule"] == "" and rows[0]["code"] == "default_deny"

    assert [r["decision_id"] for r in await log.recent(since_ms=later.at_ms)] == [denied.decision_id]
    assert [r["decision_id"] for r in await log.recent(limit=1)] == [denied.decision_id]
    assert (await log.get(allowed.decision_id) or {})["service_id"] == "js.social-card.apply"
    assert await log.get("pd-missing") is None


async def test_only_names_are_stored(db: Database) -> None:
    """The row has no column that could hold a value: every text column is checked."""
    engine = PolicyEngine(parse_bundle(BUNDLE, "b.yaml"), FakeClock())
    await DecisionLog(db).record(engine.decide(REQUEST), REQUEST)

    def rows(s: Session) -> list[PolicyDecisionRow]:
        return list(s.exec(select(PolicyDecisionRow)))

    (row,) = await db.run(rows)
    assert set(PolicyDecisionRow.model_fields) == {
        "decision_id",
        "at_ms",
        "allowed",
        "code",
        "deciding_rule",
        "rule_ids",
        "reason",
        "obligations",
        "bundle_revision",
        "direction",
        "peer_node",
        "peer_jurisdiction",
        "service_id",
        "service_owner",
        "service_department",
        "purpose",
        "role",
        "fields",
        "consent",
    }
    assert json.loads(row.fields) == ["bank", "phone"]


async def test_add_commits_or_rolls_back_with_the_callers_transaction(db: Database) -> None:
    engine = PolicyEngine(parse_bundle(BUNDLE, "b.yaml"), FakeClock())
    kept, dropped = engine.decide(REQUEST), engine.decide(REQUEST)
    await db.run(lambda s: DecisionLog.add(s, kept, REQUEST))

    def add_then_fail(s: Session) -> None:
        DecisionLog.add(s, dropped, REQUEST)
        raise RuntimeError("storing the application failed")

    with pytest.raises(RuntimeError):
        await db.run(add_then_fail)
    assert [r["decision_id"] for r in await DecisionLog(db).recent()] == [kept.decision_id]
