"""The decision log: every decision with its id, the rules that matched and the bundle
revision, so an operator can answer "why was this refused?" months later.

Only what the engine saw is stored, and the engine never sees form values: field NAMES,
peer, service, purpose, role and consent. Nothing here can leak an applicant's data, which
is what lets the operator API serve the log without a second review. Import this module
before ``Database.create_all`` so the ``policy_decision`` table is created.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from prometheus_client import Counter
from sqlalchemy import BigInteger
from sqlmodel import Field, Session, SQLModel, col, select

from core.db import Database
from core.statements import driver, insert_into
from policies.model import Decision, PolicyInput

DECISIONS = Counter(
    "yrd_policy_decisions_total",
    "Policy decisions recorded, by direction and outcome code",
    ["direction", "code"],
)


class PolicyDecisionRow(SQLModel, table=True):
    __tablename__ = "policy_decision"

    decision_id: str = Field(primary_key=True, max_length=40)
    at_ms: int = Field(index=True, sa_type=BigInteger)
    allowed: bool
    code: str = Field(max_length=32)
    deciding_rule: str = Field(max_length=80)
    rule_ids: str  # JSON list
    reason: str
    obligations: str  # JSON object
    bundle_revision: str = Field(max_length=160)
    direction: str = Field(max_length=8)
    peer_node: str = Field(max_length=32)
    peer_jurisdiction: str = Field(max_length=12)
    service_id: str = Field(max_length=128)
    service_owner: str = Field(max_length=12)
    service_department: str = Field(max_length=128)
    purpose: str = Field(max_length=64)
    role: str = Field(max_length=64)
    fields: str  # JSON list of field names, never values
    consent: bool


def row_for(decision: Decision, inp: PolicyInput) -> dict[str, Any]:
    """The ``policy_decision`` row of one decision, as column values."""
    return {
        "decision_id": decision.decision_id,
        "at_ms": inp.at_ms,
        "allowed": decision.allowed,
        "code": decision.code,
        "deciding_rule": decision.deciding_rule,
        # orjson: three documents per decision, two decisions per routed application, where
        # the standard library's json.dumps cost 3-5 us each (an encoder built per call).
        "rule_ids": orjson.dumps(decision.rule_ids).decode(),
        "reason": decision.reason,
        "obligations": orjson.dumps(decision.obligations.as_dict(), option=orjson.OPT_SORT_KEYS).decode(),
        "bundle_revision": decision.bundle_revision,
        "direction": inp.direction,
        "peer_node": inp.peer_node,
        "peer_jurisdiction": inp.peer_jurisdiction,
        # A clue has no service: its kind, region and domain go in the service columns
        # (docs/policies.md "Clues"), so the log keeps one table and one shape.
        "service_id": inp.service_id if inp.kind == "application" else inp.kind,
        "service_owner": inp.service_owner if inp.kind == "application" else inp.region,
        "service_department": inp.service_department if inp.kind == "application" else inp.domain,
        "purpose": inp.purpose,
        "role": inp.role,
        "fields": orjson.dumps(sorted(inp.fields)).decode(),
        "consent": inp.consent,
    }


_INSERT = insert_into(PolicyDecisionRow.__table__)  # type: ignore[attr-defined]


def row_as_dict(row: PolicyDecisionRow) -> dict[str, Any]:
    out: dict[str, Any] = row.model_dump()
    for key in ("rule_ids", "obligations", "fields"):
        out[key] = json.loads(out[key])
    return out


class DecisionLog:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, decision: Decision, inp: PolicyInput) -> None:
        """Log in a transaction of its own (the origin decides before it stores anything)."""
        await self._db.run(lambda s: self.add(s, decision, inp))

    @staticmethod
    def add(s: Session, decision: Decision, inp: PolicyInput) -> None:
        """Log inside the caller's transaction, e.g. the owner's, so the decision commits
        or rolls back with the application it decided. Written at once, on the driver
        (core/statements.py; no ORM object left for the transaction's next query to flush)."""
        driver(s).execute(_INSERT, row_for(decision, inp))
        DECISIONS.labels(inp.direction, decision.code).inc()

    async def recent(self, limit: int = 100, since_ms: int = 0) -> list[dict[str, Any]]:
        """Newest first, decided at or after ``since_ms``."""

        def query(s: Session) -> list[dict[str, Any]]:
            stmt = (
                select(PolicyDecisionRow)
                .where(PolicyDecisionRow.at_ms >= since_ms)
                .order_by(col(PolicyDecisionRow.at_ms).desc(), col(PolicyDecisionRow.decision_id))
                .limit(max(1, min(limit, 10_000)))
            )
            return [row_as_dict(r) for r in s.exec(stmt)]

        return await self._db.run(query)

    async def get(self, decision_id: str) -> dict[str, Any] | None:
        """One decision by id, e.g. the one quoted in a clerk's refusal."""

        def query(s: Session) -> dict[str, Any] | None:
            row = s.get(PolicyDecisionRow, decision_id)
            return None if row is None else row_as_dict(row)

        return await self._db.run(query)
