"""The holder's side of data sharing (docs/sharing.md): answering a consented query for the
resources this node holds, taking data requests in, and its departments' decisions on them.

A query is answered resource by resource, each after every check: the catalogue entry (sharing
class, subject kind, fields), the person's consent, the grant for a conditional resource, this
node's policy (kind: data) with its obligations, and only then the record, sealed to the asker.
Every resource asked leaves a disclosure record and a meter tick in the same transaction as the
answer, so nothing is disclosed that the log does not show.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select
from yrd.catalogue.v1 import catalogue_pb2
from yrd.peer.v1 import peer_pb2

from core.clock import Clock
from core.db import Database, conflict_insert
from core.errors import Conflict, InvalidInput, NotFound, PolicyDenied, YrdError, clip
from node import metrics
from node.cases.deadlines import iso
from node.cases.policy_gate import PolicyGate
from node.delivery.outbox import enqueue
from node.delivery.peer_client import parse_body
from node.delivery.peer_server import item_receipt
from node.delivery.relaying import NOTIFY_STATUS, address
from node.models import DataDisclosure, DataGrant, DataMeter, DataRecordRow
from node.sharing.checks import (
    QUERY_ID,
    REQUEST_ID,
    Ask,
    DataRequestIn,
    QueryRequest,
    check_line,
    check_query,
    check_request,
    consent_of,
    consent_problem,
    resource_problem,
    split,
    subject_ref,
)
from node.sharing.records import read_records_file, store_records
from node.trust.envelope import DEFAULT_MAX_SKEW_MS
from node.trust.keyring import Trust
from node.trust.sealing import seal, unseal
from policies.model import NO_OBLIGATIONS, Obligations
from policies.obligations import apply_obligations
from registry.data_catalogue import SHARING

log = logging.getLogger(__name__)

Outcome = peer_pb2.ReceiptOutcome
CST_MS = 8 * 3_600_000
# Applies a holder's update to a request its own node made (a department asking its own
# province), in the caller's transaction: the asker's code, injected to keep one direction.
ApplyUpdate = Callable[[Session, str, peer_pb2.DataRequestUpdate], peer_pb2.Receipt]


class _Refused(Exception):
    def __init__(self, code: str, reason: str, rule_id: str = "") -> None:
        super().__init__(reason)
        self.code, self.reason, self.rule_id = code, reason, rule_id


def meter_day(at_ms: int) -> str:
    """The day a call counts on: the calendar day in China Standard Time."""
    return datetime.fromtimestamp((at_ms + CST_MS) / 1000, tz=UTC).date().isoformat()


def grant_view(g: DataGrant) -> dict[str, Any]:
    return {
        "id": g.id,
        "side": "holder",
        "asker_node": g.asker_node,
        "department": g.asker_department,
        "resource_id": g.resource_id,
        "fields": list(split(g.fields)),
        "purpose": g.purpose,
        "legal_basis": g.legal_basis,
        "until": iso(g.until_ms),
        "requested_by": g.requested_by,
        "requested_at": iso(g.requested_at_ms),
        "status": g.status,
        "granted_fields": list(split(g.granted_fields)),
        "granted_until": iso(g.granted_until_ms) if g.granted_until_ms else None,
        "decided_by": g.decided_by,
        "decided_at": iso(g.decided_at_ms) if g.decided_at_ms else None,
        "note": g.note,
    }


class DataHolder:
    def __init__(
        self,
        *,
        db: Database,
        trust: Trust,
        resources: Sequence[catalogue_pb2.DataResource],
        policy: PolicyGate,
        clock: Clock,
        wake: Callable[[str], None],
        secret: bytes,
        max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
    ) -> None:
        self.db, self.trust, self.policy, self.clock, self.wake = db, trust, policy, clock, wake
        self.resources = {r.resource_id: r for r in resources}
        self.max_skew_ms = max_skew_ms
        self.secret = secret  # the subject digests' key (node/trust/secret.py)
        self.apply_local_update: ApplyUpdate | None = None  # set by the composition root

    def ref(self, subject_kind: str, subject_id: str) -> str:
        return subject_ref(self.secret, subject_kind, subject_id)

    # -- queries ---------------------------------------------------------------------------------

    async def answer(self, sender: str, q: peer_pb2.DataQuery) -> peer_pb2.DataAnswer:
        """The answer to one query from ``sender`` (authenticated by its envelope, or this node
        itself). A query whose shape fails is refused whole with an InvalidInput; otherwise each
        resource is answered or refused on its own."""
        now = self.clock.now_ms()
        if q.asker_node != sender:
            raise InvalidInput(
                f"a query from {clip(sender)} names {clip(q.asker_node)} as asker",
                code="sender_mismatch",
                field="asker_node",
            )
        if not QUERY_ID.fullmatch(q.query_id):
            raise InvalidInput("not a query id", code="invalid_query_id", field="query_id")
        if abs(now - q.asked_at_ms) > self.max_skew_ms:
            raise InvalidInput("asked too long ago or in the future", code="stale_query", field="asked_at_ms")
        check_line(q.asker_department, 200, "invalid_department", "asker_department")
        subject = parse_body(peer_pb2.DataSubject, unseal(self.trust.opening_keys(), q.sealed_subject))
        req = QueryRequest(
            subject_kind=q.subject_kind,
            subject_id=subject.subject_id,
            purpose=q.purpose,
            asks=tuple(Ask(a.resource_id, tuple(a.fields)) for a in q.asks),
            consent=consent_of(subject.consent) if subject.HasField("consent") else None,
        )
        check_query(req, now)
        check_line(subject.asked_by, 200, "invalid_asked_by", "asked_by")
        items = await self.db.run(
            lambda s: [
                self._item(s, sender, q.query_id, q.asker_department, subject.asked_by, req, ask, now)
                for ask in req.asks
            ]
        )
        return peer_pb2.DataAnswer(query_id=q.query_id, items=items, answered_at_ms=now)

    def _item(
        self,
        s: Session,
        asker: str,
        query_id: str,
        department: str,
        asked_by: str,
        req: QueryRequest,
        ask: Ask,
        now: int,
    ) -> peer_pb2.DataItem:
        res = self.resources.get(ask.resource_id)
        item = peer_pb2.DataItem(resource_id=ask.resource_id)
        fields: list[str] = []
        try:
            if res is None:
                raise _Refused(
                    "unknown_resource", f"{clip(ask.resource_id)} is not held by {self.trust.node_id}"
                )
            fields = list(ask.fields) or [f.name for f in res.fields]
            basis, fields = self._basis(s, asker, department, req, res, fields, now)
            obligations = self._policy(s, asker, res, req, fields, now)
            record = s.get(DataRecordRow, (res.resource_id, self.ref(req.subject_kind, req.subject_id)))
            item.basis = basis
            if record is None:
                item.outcome, fields = "no_record", []
            else:
                stored = json.loads(record.fields_json)
                picked = apply_obligations({f: stored[f] for f in fields if f in stored}, obligations)
                fields = list(picked)
                sealed = peer_pb2.DataRecord(
                    fields_json=json.dumps(picked, ensure_ascii=False).encode(),
                    updated_at_ms=record.updated_at_ms,
                )
                item.outcome = "answered"
                item.sealed_record = seal(self.trust.public_key_of(asker, now), sealed.SerializeToString())
            item.fields.extend(fields)
        except _Refused as r:
            item.outcome, item.reason_code, item.reason, item.rule_id = "refused", r.code, r.reason, r.rule_id
            item.basis, fields = "", []
        self._account(s, asker, department, asked_by, query_id, req, item, now, known=res is not None)
        return item

    def _basis(
        self,
        s: Session,
        asker: str,
        department: str,
        req: QueryRequest,
        res: catalogue_pb2.DataResource,
        fields: list[str],
        now: int,
    ) -> tuple[str, list[str]]:
        """Why this asker may see this resource (consent, a grant) and which fields of it."""
        problem = resource_problem(res, req.subject_kind, fields)
        if problem is not None:
            raise _Refused(*problem)
        basis = "request"
        if req.subject_kind == "person":
            problem = consent_problem(req.consent, req.subject_id, res.resource_id, req.purpose, now)
            if problem is not None:
                raise _Refused(*problem)
            basis = "consent"
        if res.sharing != "conditional":
            return basis, fields
        grant = s.exec(
            select(DataGrant)
            .where(
                DataGrant.asker_node == asker,
                DataGrant.asker_department == department,
                DataGrant.resource_id == res.resource_id,
                DataGrant.status == "approved",
                col(DataGrant.granted_until_ms) > now,
            )
            .order_by(col(DataGrant.decided_at_ms).desc())
        ).first()
        if grant is None:
            raise _Refused(
                "no_grant",
                f"{SHARING['conditional']}: {res.resource_id} is shared once {res.department} grants a "
                f"data request of {asker}/{department}",
            )
        if grant.purpose != req.purpose:
            raise _Refused("grant_purpose", f"grant {grant.id} is for {clip(grant.purpose)}")
        granted = set(split(grant.granted_fields))
        fields = [f for f in fields if f in granted]
        if not fields:
            raise _Refused("fields_not_granted", f"grant {grant.id} covers none of the fields asked")
        return f"{basis}+grant:{grant.id}", fields

    def _policy(
        self,
        s: Session,
        asker: str,
        res: catalogue_pb2.DataResource,
        req: QueryRequest,
        fields: list[str],
        now: int,
    ) -> Obligations:
        """This node's policy, unless the asker is this node: its own counter crosses no boundary."""
        if asker == self.trust.node_id:
            return NO_OBLIGATIONS
        consent = req.consent is not None and req.subject_kind == "person"
        try:
            decision = self.policy.data_inbound(s, asker, res, req.purpose, frozenset(fields), consent, now)
        except PolicyDenied as e:
            raise _Refused(e.code, e.reason, str(e.extra.get("rule_id", ""))) from e
        return decision.obligations

    def _account(
        self,
        s: Session,
        asker: str,
        department: str,
        asked_by: str,
        query_id: str,
        req: QueryRequest,
        item: peer_pb2.DataItem,
        now: int,
        *,
        known: bool,
    ) -> None:
        """The disclosure record and the meter tick of one resource asked."""
        s.add(
            DataDisclosure(
                side="holder",
                query_id=query_id,
                at_ms=now,
                asker_node=asker,
                asker_department=department,
                asked_by=asked_by,
                holder_node=self.trust.node_id,
                resource_id=item.resource_id,
                subject_ref=self.ref(req.subject_kind, req.subject_id),
                purpose=req.purpose,
                basis=item.basis,
                fields=",".join(item.fields),
                outcome=item.outcome,
                reason_code=item.reason_code,
            )
        )
        resource = item.resource_id if known else "unknown"
        values = {
            "day": meter_day(now),
            "resource_id": resource,
            "asker_node": asker,
            "outcome": item.outcome,
        }
        stmt = conflict_insert(s, DataMeter).values(**values, calls=1)
        s.execute(
            stmt.on_conflict_do_update(index_elements=list(values), set_={"calls": col(DataMeter.calls) + 1})
        )
        metrics.DATA_CALLS.labels(resource=resource, asker=asker, outcome=item.outcome).inc()

    # -- requests and grants ---------------------------------------------------------------------

    def accept_request(
        self, s: Session, sender: str, t: peer_pb2.DataRequestTransfer, now: int
    ) -> peer_pb2.Receipt:
        """Store a request for a conditional resource once, pending its department's decision;
        checked as this node's own counter checks one. Called inside the batch's transaction."""
        try:
            self._check_transfer(sender, t, now)
        except YrdError as e:
            log.info("refused data request from %s: %s", sender, e.code)
            return item_receipt(t.request_id, Outcome.RECEIPT_OUTCOME_REJECTED, e.code, e.reason, now)
        existing = s.get(DataGrant, t.request_id)
        if existing is not None:
            if existing.asker_node != sender:
                return item_receipt(
                    t.request_id, Outcome.RECEIPT_OUTCOME_REJECTED, "duplicate_request", "id in use", now
                )
            return item_receipt(t.request_id, Outcome.RECEIPT_OUTCOME_DUPLICATE, "", "", now)
        s.add(
            DataGrant(
                id=t.request_id,
                asker_node=sender,
                asker_department=t.asker_department,
                resource_id=t.resource_id,
                fields=",".join(t.fields),
                purpose=t.purpose,
                legal_basis=t.legal_basis,
                until_ms=t.until_ms,
                requested_at_ms=t.requested_at_ms,
                requested_by=t.requested_by,
                received_at_ms=now,
                status="pending",
            )
        )
        metrics.DATA_REQUESTS.labels(step="received").inc()
        return item_receipt(t.request_id, Outcome.RECEIPT_OUTCOME_ACCEPTED, "", "", now)

    def _check_transfer(self, sender: str, t: peer_pb2.DataRequestTransfer, now: int) -> None:
        if t.asker_node != sender:
            raise InvalidInput("the asker is not the sender", code="sender_mismatch", field="asker_node")
        if not REQUEST_ID.fullmatch(t.request_id):
            raise InvalidInput("not a request id", code="invalid_request_id", field="request_id")
        check_line(t.asker_department, 200, "invalid_department", "asker_department")
        check_line(t.requested_by, 200, "invalid_requested_by", "requested_by")
        req = DataRequestIn(t.resource_id, tuple(t.fields), t.purpose, t.legal_basis, t.until_ms)
        check_request(req, now)
        res = self.resources.get(t.resource_id)
        if res is None:
            raise NotFound(
                f"{clip(t.resource_id)} is not held here", code="unknown_resource", field="resource_id"
            )
        if res.sharing != "conditional":
            why = res.legal_reason if res.sharing == "not_shared" else "shared on request, no grant needed"
            raise InvalidInput(f"{SHARING[res.sharing]}: {why}", code="not_conditional", field="resource_id")
        problem = resource_problem(res, res.subject_kind, t.fields)
        if problem is not None:
            raise InvalidInput(problem[1], code=problem[0], field="fields")

    def department_of(self, grant: DataGrant) -> str:
        res = self.resources.get(grant.resource_id)
        return res.department if res is not None else ""

    async def list_grants(self, department: str | None) -> list[dict[str, Any]]:
        """The requests this node received, newest first; ``department``: only its resources."""

        def read(s: Session) -> list[DataGrant]:
            rows = s.exec(select(DataGrant).order_by(col(DataGrant.received_at_ms).desc()).limit(500)).all()
            return [g for g in rows if department is None or self.department_of(g) == department]

        return [grant_view(g) for g in await self.db.run(read)]

    async def decide(
        self,
        who: str,
        department: str | None,
        grant_id: str,
        *,
        approve: bool,
        fields: tuple[str, ...],
        until_ms: int | None,
        note: str,
    ) -> dict[str, Any]:
        """The holder department approves (perhaps fewer fields, a shorter term) or refuses."""
        now = self.clock.now_ms()

        def work(s: Session) -> tuple[DataGrant, str]:
            g = self._grant_of(s, grant_id, department)
            if g.status != "pending":
                raise Conflict(f"request {grant_id} is already {g.status}", code="already_decided")
            if approve:
                asked = split(g.fields)
                granted = fields or asked
                outside = [f for f in granted if f not in asked]
                if outside:
                    raise InvalidInput(
                        f"{clip(outside[0])} was not asked for", code="fields_not_asked", field="fields"
                    )
                until = min(until_ms or g.until_ms, g.until_ms)
                if until <= now:
                    raise InvalidInput("the grant would have ended", code="invalid_until", field="until")
                g.granted_fields, g.granted_until_ms = ",".join(granted), until
            g.status = "approved" if approve else "refused"
            g.decided_by, g.decided_at_ms, g.note = who, now, note
            return g, self._send_update(s, g, now)

        return await self._changed(work, "approved" if approve else "refused")

    async def revoke(self, who: str, department: str | None, grant_id: str, note: str) -> dict[str, Any]:
        """A grant stops at once here; the asker learns through the outbox."""
        now = self.clock.now_ms()

        def work(s: Session) -> tuple[DataGrant, str]:
            g = self._grant_of(s, grant_id, department)
            if g.status != "approved":
                raise Conflict(f"request {grant_id} is {g.status}, not a grant", code="not_granted")
            g.status, g.decided_by, g.decided_at_ms, g.note = "revoked", who, now, note
            return g, self._send_update(s, g, now)

        return await self._changed(work, "revoked")

    async def _changed(self, work: Callable[[Session], tuple[DataGrant, str]], step: str) -> dict[str, Any]:
        g, hop = await self.db.run(work)
        metrics.DATA_REQUESTS.labels(step=step).inc()
        if hop:
            self.wake(hop)
        return grant_view(g)

    def _grant_of(self, s: Session, grant_id: str, department: str | None) -> DataGrant:
        g = s.get(DataGrant, grant_id)
        if g is None or (department is not None and self.department_of(g) != department):
            raise NotFound(f"no data request {clip(grant_id)}", code="unknown_request")
        return g

    def _send_update(self, s: Session, g: DataGrant, now: int) -> str:
        """Queue the change for the asker (or apply it, when the asker is this node); the hop to wake."""
        g.sequence += 1
        update = peer_pb2.DataRequestUpdate(
            request_id=g.id,
            sequence=g.sequence,
            status=g.status,
            fields=list(split(g.granted_fields)) if g.status == "approved" else [],
            until_ms=g.granted_until_ms if g.status == "approved" else 0,
            note=g.note,
            at_ms=now,
        )
        s.add(g)
        if g.asker_node == self.trust.node_id:
            if self.apply_local_update is not None:
                self.apply_local_update(s, self.trust.node_id, update)
            return ""
        body = peer_pb2.StatusItem(data_request_update=update).SerializeToString()
        hop, body = address(self.trust, g.asker_node, NOTIFY_STATUS, body, now)
        enqueue(
            s,
            next_hop=hop,
            destination=g.asker_node,
            method=NOTIFY_STATUS,
            item_id=f"{g.id}/{g.sequence}",
            body=body,
            now_ms=now,
        )
        return hop

    # -- the operator's records --------------------------------------------------------------------

    async def load_records_file(self, path: Path) -> dict[str, int]:
        """``yrd data load``'s work in a running node: every record checked, then all stored."""
        by_resource = read_records_file(path, self.trust.node_id, self.resources)
        return await self.db.run(lambda s: store_records(s, self.secret, self.resources, by_resource))
