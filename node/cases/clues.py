"""Supervision clues (一网统管), both ends (docs/clues.md).

The node that takes a clue in stores it with its outbox entry in one transaction and sends it,
signed and with the reporter sealed, to the member that owns the clue's region (longest
jurisdiction prefix, relays as for applications). That member checks it again with the same
code, stores it once, and its dispatch rules give each domain's department a task; a clue of
several domains is one joint inspection shared by their departments. Every step (dispatched,
acknowledged, findings, rectification ordered, closed, escalated) goes back to the source
through the outbox, so the source holds the clue's whole history: the closed loop.

A periodic check escalates a task whose department let a deadline pass to the department one
level up (county, city, province, then the dispatch desk); it reads the injected clock only.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from collections import Counter as Tally
from collections.abc import Callable
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session, col, select
from yrd.peer.v1 import peer_pb2

from core.clock import Clock
from core.db import Database
from core.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Unavailable,
    Unprocessable,
    YrdError,
    clip,
)
from core.ids import new_id
from core.statements import Statement, driver
from node import metrics
from node.cases.clue_checks import DAY_MS, HOUR_MS, ClueRequest, check_clue, check_clue_sender, check_transfer
from node.cases.deadlines import iso
from node.cases.policy_gate import PolicyGate
from node.cases.requests import Document, Principal
from node.delivery.outbox import enqueue
from node.delivery.peer_server import item_receipt
from node.delivery.relaying import DELIVER, NOTIFY_STATUS, address
from node.models import ClueCase, ClueEvent, ClueSent, ClueTask, OutboxEntry, ReceiptRecord
from node.trust.envelope import DEFAULT_MAX_SKEW_MS
from node.trust.keyring import Trust
from node.trust.sealing import seal, unseal
from registry.dispatch import DOMAINS, DispatchRules, metric_region
from registry.divisions import name_of

log = logging.getLogger(__name__)

Outcome = peer_pb2.ReceiptOutcome
# A clue's id is minted here by core.ids.new_id (12 + 16 hex digits), never taken from a peer.
_CLUE_ID = re.compile(r"[0-9a-f]{28}")
_CLUE_SENT = ClueSent.__table__  # type: ignore[attr-defined]
_CLUE_OWNER = Statement(sa_select(_CLUE_SENT.c.owner_node).where(_CLUE_SENT.c.id == bindparam("clue_id")))
FIRST_STEP = 1  # the receiver's steps number from 1; the source's own "submitted" is 0
OPEN = ("dispatched", "acknowledged", "findings")


def _docs(documents: list[peer_pb2.Document]) -> list[dict[str, Any]]:
    return [
        {"name": d.name, "content_type": d.content_type, "data": base64.b64encode(d.data).decode()}
        for d in documents
    ]


class Clues:
    def __init__(
        self,
        *,
        db: Database,
        trust: Trust,
        rules: DispatchRules | None,
        policy: PolicyGate,
        clock: Clock,
        wake: Callable[[str], None],
        max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
        interval_s: float = 60.0,
    ) -> None:
        self.db, self.trust, self.rules, self.clock, self.wake = db, trust, rules, clock, wake
        self.policy = policy
        self.max_skew_ms, self.interval_s = max_skew_ms, interval_s
        self._task: asyncio.Task[None] | None = None
        self._gauged: dict[str, set[tuple[str, str]]] = {}  # gauge name -> labels set last time

    # -- the source: taking a clue in ----------------------------------------------------------

    async def submit(self, principal: Principal, idempotency_key: str, req: ClueRequest) -> dict[str, Any]:
        replayed = await self.db.run(
            lambda s: self._replayed(s, principal.username, idempotency_key, req.digest)
        )
        if replayed is not None:
            return _submitted(replayed)
        now = self.clock.now_ms()
        ack_by = now + req.acknowledge_within_hours * HOUR_MS
        close_by = now + req.close_within_days * DAY_MS
        check_clue(
            source=req.source,
            region_code=req.region_code,
            domains=req.domains,
            credit_code=req.subject_credit_code,
            place=req.subject_place,
            severity=req.severity,
            reported_at_ms=now,
            acknowledge_by_ms=ack_by,
            close_by_ms=close_by,
            description=req.description,
            reporter_name=req.reporter_name,
            reporter_contact=req.reporter_contact,
            now_ms=now,
            max_skew_ms=self.max_skew_ms,
        )
        owner = self.trust.manifest.owner_of(req.region_code).node_id
        if owner != self.trust.node_id:  # a clue of our own region crosses no boundary
            await self.policy.clue_outbound(
                owner, req.domains, req.region_code, req.source, principal.role, now
            )
        clue_id = new_id(now)
        detail = peer_pb2.ClueDetail(
            description=req.description,
            reporter_name=req.reporter_name,
            reporter_contact=req.reporter_contact,
            documents=[
                peer_pb2.Document(name=d.name, content_type=d.content_type, data=d.data)
                for d in req.documents
            ],
        )
        transfer = peer_pb2.ClueTransfer(
            clue_id=clue_id,
            source_node=self.trust.node_id,
            source=req.source,
            region_code=req.region_code,
            domains=list(req.domains),
            subject_credit_code=req.subject_credit_code,
            subject_place=req.subject_place,
            severity=req.severity,
            reported_at_ms=now,
            acknowledge_by_ms=ack_by,
            close_by_ms=close_by,
            sealed_detail=seal(self.trust.public_key_of(owner, now), detail.SerializeToString()),
        )
        row = ClueSent(
            id=clue_id,
            owner_node=owner,
            source=req.source,
            region_code=req.region_code,
            domains=",".join(req.domains),
            severity=req.severity,
            subject=req.subject_credit_code or req.subject_place,
            status="submitted",
            created_at_ms=now,
            acknowledge_by_ms=ack_by,
            close_by_ms=close_by,
            submitted_by=principal.username,
            idempotency_key=idempotency_key,
            digest=req.digest,
        )
        hop = ""

        def store(s: Session) -> ClueSent:
            nonlocal hop
            existing = self._replayed(s, principal.username, idempotency_key, req.digest)
            if existing is not None:
                return existing
            s.add(row)
            s.add(
                ClueEvent(clue_id=clue_id, sequence=0, step="submitted", at_ms=now, note=f"routed to {owner}")
            )
            s.flush()
            if owner == self.trust.node_id:  # our own region: the receiver's code, in this transaction
                receipt = self.accept(s, self.trust.node_id, transfer, now)
                if receipt.outcome == Outcome.RECEIPT_OUTCOME_REJECTED:
                    record_clue_event(
                        s, row, FIRST_STEP, "refused", now, note=f"{receipt.reason_code}: {receipt.reason}"
                    )
                return row
            body = peer_pb2.DeliverItem(clue=transfer).SerializeToString()
            hop, body = address(self.trust, owner, DELIVER, body, now)
            enqueue(
                s, next_hop=hop, destination=owner, method=DELIVER, item_id=clue_id, body=body, now_ms=now
            )
            return row

        try:
            stored = await self.db.run(store)
        except IntegrityError:  # a concurrent request with the same key won the race
            found = await self.db.run(
                lambda s: self._replayed(s, principal.username, idempotency_key, req.digest)
            )
            if found is None:
                raise
            stored = found
        if hop and stored.id == clue_id:
            self.wake(hop)
        return _submitted(stored)

    @staticmethod
    def _replayed(s: Session, username: str, key: str, digest: str) -> ClueSent | None:
        found = s.exec(
            select(ClueSent).where(ClueSent.submitted_by == username, ClueSent.idempotency_key == key)
        ).first()
        if found is not None and digest and found.digest != digest:
            raise Unprocessable(
                "this idempotency key was used for a different request; use a new key",
                code="idempotency_key_reused",
                field="idempotency_key",
            )
        return found

    # -- the source: what comes back -----------------------------------------------------------

    def apply_update(self, s: Session, sender: str, u: peer_pb2.ClueUpdate) -> peer_pb2.Receipt:
        """One step from the member handling the clue; only that member may send one."""
        sent = s.get(ClueSent, u.clue_id)
        if sent is None or sent.owner_node != sender:
            return peer_pb2.Receipt(
                item_id=u.clue_id[:100],
                outcome=Outcome.RECEIPT_OUTCOME_REJECTED,
                reason_code="unknown_clue",
                reason="no such clue from this node for that member",
            )
        if u.sequence < FIRST_STEP or u.step not in STEPS:
            return peer_pb2.Receipt(
                item_id=u.clue_id,
                outcome=Outcome.RECEIPT_OUTCOME_REJECTED,
                reason_code="malformed_status",
                reason="unknown step or sequence",
            )
        if u.sealed_findings and self._findings(u.sealed_findings) is None:
            return peer_pb2.Receipt(
                item_id=u.clue_id,
                outcome=Outcome.RECEIPT_OUTCOME_REJECTED,
                reason_code="sealed_payload_invalid",
                reason="the sealed findings do not open",
            )
        fresh = record_clue_event(
            s,
            sent,
            u.sequence,
            u.step,
            u.at_ms,
            department=u.department[:200],
            level=u.level[:20],
            note=u.note[:4000],
            sealed_findings=u.sealed_findings,
        )
        outcome = Outcome.RECEIPT_OUTCOME_ACCEPTED if fresh else Outcome.RECEIPT_OUTCOME_DUPLICATE
        return peer_pb2.Receipt(item_id=u.clue_id, outcome=outcome)

    @staticmethod
    def apply_receipt(
        s: Session, item_id: str, from_node: str, receipt: peer_pb2.Receipt, envelope_bytes: bytes, at_ms: int
    ) -> None:
        """Keep the receiver's signed receipt for a clue; a refusal is the clue's first step.

        Called for the receipt of every item this node delivers that is not one of its
        applications (node/app.py asks the applications first): an id not of a clue's form (a
        data request's, a bundle resubmission's) is passed over without a statement, and one
        that is is looked for with a prebuilt Core SELECT; the ORM row is loaded only when a
        refusal becomes the clue's step."""
        if not _CLUE_ID.fullmatch(item_id):
            return
        found = driver(s).first(_CLUE_OWNER, {"clue_id": item_id})
        owner_node = None if found is None else found[0]
        if owner_node is None:
            return
        s.add(
            ReceiptRecord(
                application_id=item_id,
                from_node=from_node,
                outcome=Outcome.Name(receipt.outcome).removeprefix("RECEIPT_OUTCOME_").lower(),
                reason_code=receipt.reason_code,
                reason=receipt.reason,
                rule_id=receipt.rule_id,
                received_at_ms=at_ms,
                envelope=envelope_bytes,
            )
        )
        if from_node == owner_node and receipt.outcome == Outcome.RECEIPT_OUTCOME_REJECTED:
            sent = s.get(ClueSent, item_id)  # found above, in this transaction
            if sent is not None:
                note = f"{receipt.reason_code}: {receipt.reason}"
                record_clue_event(s, sent, FIRST_STEP, "refused", receipt.received_at_ms, note=note)

    # -- the receiver ----------------------------------------------------------------------------

    def accept(self, s: Session, sender: str, t: peer_pb2.ClueTransfer, now: int) -> peer_pb2.Receipt:
        """Store one clue exactly once and give each domain's department its task; called
        inside the batch's transaction. Checked exactly as this node's counter checks a clue;
        what fails gets a REJECTED receipt with the check's code and leaves no clue behind."""
        try:
            check_clue_sender(t, sender)
        except YrdError as e:
            return self._refuse(t, sender, e)
        existing = s.get(ClueCase, t.clue_id)
        if existing is not None:
            if existing.source_node != sender:
                return item_receipt(
                    t.clue_id, Outcome.RECEIPT_OUTCOME_REJECTED, "id_taken", "clue id in use", now
                )
            return item_receipt(
                t.clue_id, Outcome.RECEIPT_OUTCOME_DUPLICATE, "duplicate", "already received", now
            )
        try:
            rules = self._admit(t, now)
            self._allowed(s, sender, t, now)
        except Unavailable as e:  # stamped ahead by a skewed source: fine once our clock catches up
            return item_receipt(t.clue_id, Outcome.RECEIPT_OUTCOME_RETRY, e.code, e.reason, now)
        except YrdError as e:
            self._tell_source(s, t, e, now)
            return self._refuse(t, sender, e)
        case = ClueCase(
            id=t.clue_id,
            source_node=sender,
            source=t.source,
            region_code=t.region_code,
            domains=",".join(t.domains),
            subject_credit_code=t.subject_credit_code,
            subject_place=t.subject_place,
            severity=t.severity,
            reported_at_ms=t.reported_at_ms,
            acknowledge_by_ms=t.acknowledge_by_ms,
            close_by_ms=t.close_by_ms,
            received_at_ms=now,
            status="open",
            sealed_detail=t.sealed_detail,
        )
        s.add(case)
        joint = len(t.domains) > 1
        for domain in t.domains:
            dept = rules.route(t.region_code, domain)
            s.add(
                ClueTask(
                    clue_id=t.clue_id,
                    domain=domain,
                    department=dept.name,
                    level=dept.level,
                    status="dispatched",
                    acknowledge_by_ms=t.acknowledge_by_ms,
                    close_by_ms=t.close_by_ms,
                )
            )
            note = DOMAINS[domain] + ("; joint inspection (联合检查)" if joint else "")
            self._step(s, case, "dispatched", now, department=dept.name, level=dept.level, note=note)
            metrics.CLUES_RECEIVED.labels(domain=domain, region=metric_region(t.region_code)).inc()
        log.info("clue %s from %s dispatched to %d department(s)", t.clue_id, sender, len(t.domains))
        return item_receipt(t.clue_id, Outcome.RECEIPT_OUTCOME_ACCEPTED, "accepted", "stored", now)

    def _admit(self, t: peer_pb2.ClueTransfer, now: int) -> DispatchRules:
        detail = self._open(t.sealed_detail)
        check_transfer(t, detail, now_ms=now, max_skew_ms=self.max_skew_ms)
        if self.trust.manifest.owner_of(t.region_code).node_id != self.trust.node_id:
            raise InvalidInput(
                "this member does not own the clue's region", code="not_our_region", field="region_code"
            )
        if self.rules is None:
            raise Unprocessable("this member has no dispatch rules", code="no_dispatch_rules")
        return self.rules

    def _allowed(self, s: Session, sender: str, t: peer_pb2.ClueTransfer, now: int) -> None:
        """The inbound policy, after the checks (so it decides on a well-formed region and domains)
        and only for a clue from another member: our own counter's clue crossed no boundary."""
        if sender != self.trust.node_id:
            self.policy.clue_inbound(s, sender, tuple(t.domains), t.region_code, t.source, now)

    def _open(self, sealed: bytes) -> peer_pb2.ClueDetail:
        detail = peer_pb2.ClueDetail()
        try:
            detail.ParseFromString(unseal(self.trust.opening_keys(), sealed))
        except Exception as e:
            raise InvalidInput("the sealed detail does not open", code="sealed_payload_invalid") from e
        return detail

    def _refuse(self, t: peer_pb2.ClueTransfer, sender: str, e: YrdError) -> peer_pb2.Receipt:
        log.info("refused clue %r from %s: %s", t.clue_id[:100], sender, e.code)
        metrics.CLUES_REFUSED.labels(reason=e.code).inc()
        reason = f"{e.field}: {e.reason}" if e.field else e.reason
        return item_receipt(
            t.clue_id[:100], Outcome.RECEIPT_OUTCOME_REJECTED, e.code, reason, self.clock.now_ms()
        )

    def _tell_source(self, s: Session, t: peer_pb2.ClueTransfer, e: YrdError, now: int) -> None:
        """The refusal as the clue's first step, once per id, for a source behind a relay."""
        if t.source_node == self.trust.node_id:
            return  # our own counter: submit() records the receipt's refusal itself
        item_id = f"clue:{t.clue_id}#{FIRST_STEP}"
        queued = s.exec(
            select(OutboxEntry).where(
                OutboxEntry.item_id == item_id, OutboxEntry.destination == t.source_node
            )
        ).first()
        if queued is not None:
            return
        update = peer_pb2.ClueUpdate(
            clue_id=t.clue_id, sequence=FIRST_STEP, step="refused", note=f"{e.code}: {e.reason}", at_ms=now
        )
        self._send(s, t.source_node, update, item_id, now)

    def _send(
        self, s: Session, destination: str, update: peer_pb2.ClueUpdate, item_id: str, now: int
    ) -> None:
        body = peer_pb2.StatusItem(clue_update=update).SerializeToString()
        hop, body = address(self.trust, destination, NOTIFY_STATUS, body, now)
        enqueue(
            s,
            next_hop=hop,
            destination=destination,
            method=NOTIFY_STATUS,
            item_id=item_id,
            body=body,
            now_ms=now,
        )

    def _step(
        self,
        s: Session,
        case: ClueCase,
        step: str,
        now: int,
        *,
        department: str = "",
        level: str = "",
        note: str = "",
        findings: peer_pb2.ClueFindings | None = None,
    ) -> None:
        """Number the step, keep it in the history and queue it for the source, in this transaction."""
        case.sequence += 1
        s.add(case)
        sealed = b""
        if findings is not None:
            sealed = seal(self.trust.public_key_of(case.source_node, now), findings.SerializeToString())
        update = peer_pb2.ClueUpdate(
            clue_id=case.id,
            sequence=case.sequence,
            step=step,
            department=department,
            level=level,
            note=note,
            at_ms=now,
            sealed_findings=sealed,
        )
        if case.source_node == self.trust.node_id:
            sent = s.get(ClueSent, case.id)
            if sent is not None:
                record_clue_event(
                    s,
                    sent,
                    case.sequence,
                    step,
                    now,
                    department=department,
                    level=level,
                    note=note,
                    sealed_findings=sealed,
                )
            return
        s.add(
            ClueEvent(
                clue_id=case.id,
                sequence=case.sequence,
                step=step,
                department=department,
                level=level,
                note=note,
                at_ms=now,
                sealed_findings=sealed,
            )
        )
        self._send(s, case.source_node, update, f"clue:{case.id}#{case.sequence}", now)

    # -- the regulator's steps -------------------------------------------------------------------

    async def act(
        self,
        principal: Principal,
        clue_id: str,
        action: str,
        department: str,
        *,
        text: str = "",
        rectification: str = "",
        documents: tuple[Document, ...] = (),
    ) -> dict[str, Any]:
        """Acknowledge, record findings, or close one department's task of a clue."""
        now = self.clock.now_ms()
        source = await self.db.run(
            lambda s: self._act(
                s, principal, clue_id, action, department, text, rectification, documents, now
            )
        )
        if source != self.trust.node_id:
            self.wake(self.trust.next_hop(source))
        return await self.get(principal, clue_id)

    def _act(
        self,
        s: Session,
        principal: Principal,
        clue_id: str,
        action: str,
        department: str,
        text: str,
        rectification: str,
        documents: tuple[Document, ...],
        now: int,
    ) -> str:
        # Locked (PostgreSQL; SQLite writes one at a time anyway): the step numbers of a clue
        # come from this row, and the escalation check may be numbering one concurrently.
        case = s.get(ClueCase, clue_id, with_for_update=True)
        if case is None:
            raise _unknown(clue_id)
        task = self._task_of(s, principal, clue_id, department)
        if action == "acknowledge":
            if task.status != "dispatched":
                raise Conflict(
                    f"the task is {task.status}; it was acknowledged already", code="already_acknowledged"
                )
            task.status = "acknowledged"
            self._step(
                s,
                case,
                "acknowledged",
                now,
                department=task.department,
                level=task.level,
                note=f"by {principal.username}",
            )
        elif action == "findings":
            if task.status not in ("acknowledged", "findings"):
                raise Conflict(
                    f"the task is {task.status}; acknowledge it before findings", code="not_acknowledged"
                )
            findings = peer_pb2.ClueFindings(
                text=text,
                documents=[
                    peer_pb2.Document(name=d.name, content_type=d.content_type, data=d.data)
                    for d in documents
                ],
            )
            task.status, task.findings = "findings", findings.SerializeToString()
            self._step(
                s, case, "findings", now, department=task.department, level=task.level, findings=findings
            )
            if rectification:
                task.rectification = rectification
                self._step(
                    s,
                    case,
                    "rectification_ordered",
                    now,
                    department=task.department,
                    level=task.level,
                    note=rectification,
                )
        else:  # close
            if task.status != "findings":
                raise Conflict(
                    f"the task is {task.status}; record findings before closing", code="no_findings"
                )
            task.status = "closed"
            self._step(s, case, "closed", now, department=task.department, level=task.level, note=text)
            metrics.CLUES_CLOSED.labels(domain=task.domain, region=metric_region(case.region_code)).inc()
        s.add(task)
        s.flush()
        tasks = s.exec(select(ClueTask).where(ClueTask.clue_id == clue_id)).all()
        if action == "close" and all(t.status == "closed" for t in tasks):
            case.status = "closed"
            self._step(s, case, "completed", now, note=f"all {len(tasks)} department(s) closed")
        return case.source_node

    def _task_of(self, s: Session, principal: Principal, clue_id: str, department: str) -> ClueTask:
        """The task the caller acts on: an owner clerk's own department's; a supervisor names
        the department when the clue is a joint inspection."""
        if principal.role == "owner_clerk":
            if department and department != principal.department:
                raise PermissionDenied(
                    "an owner clerk acts for their own department only", code="other_department"
                )
            department = principal.department
        tasks = s.exec(select(ClueTask).where(ClueTask.clue_id == clue_id)).all()
        if department:
            mine = [t for t in tasks if t.department == department]
        else:
            mine = list(tasks) if len(tasks) == 1 else []
            if len(tasks) > 1:
                raise InvalidInput(
                    "a joint inspection: name the department", code="department_required", field="department"
                )
        if not mine:
            raise _unknown(clue_id)
        return mine[0]

    # -- escalation ------------------------------------------------------------------------------

    async def tick(self) -> int:
        """Escalate every task past a deadline to the level above; refresh the gauges. Returns
        how many tasks were escalated."""
        now = self.clock.now_ms()
        sources = await self.db.run(lambda s: self._escalate(s, now))
        for source in set(sources) - {self.trust.node_id}:
            self.wake(self.trust.next_hop(source))
        return len(sources)

    def _escalate(self, s: Session, now: int) -> list[str]:
        """The source node of each task escalated now."""
        rules = self.rules
        # Locked in this order (cases, then tasks) as _act locks them, so two replicas' checks
        # or a check and a department's step never escalate or number one step twice.
        cases = {
            c.id: c for c in s.exec(select(ClueCase).where(ClueCase.status == "open").with_for_update()).all()
        }
        tasks = s.exec(select(ClueTask).where(col(ClueTask.status).in_(OPEN)).with_for_update()).all()
        open_, overdue = Tally[tuple[str, str]](), Tally[tuple[str, str]]()
        escalated: list[str] = []
        for task in tasks:
            case = cases.get(task.clue_id)
            if case is None:
                continue
            labels = (task.domain, metric_region(case.region_code))
            open_[labels] += 1
            missed = "acknowledge" if task.status == "dispatched" and now > task.acknowledge_by_ms else ""
            if not missed and now > task.close_by_ms:
                missed = "close"
            if not missed:
                continue
            overdue[labels] += 1
            above = rules.above(task.department) if rules is not None else None
            if above is None:
                continue  # at the dispatch desk already: it stays overdue there, counted
            ack_window = case.acknowledge_by_ms - case.reported_at_ms
            close_window = case.close_by_ms - case.reported_at_ms
            if missed == "acknowledge":
                task.acknowledge_by_ms = now + ack_window
                task.close_by_ms = now + close_window
            else:
                task.close_by_ms = now + close_window - ack_window
            what = "not acknowledged" if missed == "acknowledge" else "not closed"
            note = f"{what} by {task.department} in time"
            task.department, task.level = above.name, above.level
            task.escalations += 1
            s.add(task)
            self._step(s, case, "escalated", now, department=above.name, level=above.level, note=note)
            metrics.CLUES_ESCALATED.labels(domain=labels[0], region=labels[1]).inc()
            escalated.append(case.source_node)
        # Labels this node set before and has no task for now go to 0 (not removed: another
        # node in the same process, as in tests and simulations, may share them).
        for gauge, counts in ((metrics.CLUES_OPEN, open_), (metrics.CLUES_OVERDUE, overdue)):
            for labels in self._gauged.get(gauge._name, set()) - set(counts):
                gauge.labels(*labels).set(0)
            for labels, n in counts.items():
                gauge.labels(*labels).set(n)
            self._gauged[gauge._name] = set(counts)
        return escalated

    async def run(self) -> None:
        while True:
            await self.clock.sleep(self.interval_s)
            try:
                await self.tick()
            except (YrdError, SQLAlchemyError) as e:  # the database is away: try again next time
                log.warning("clue escalation check failed: %s", type(e).__name__)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="clue-escalation")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # -- reading ---------------------------------------------------------------------------------

    async def get(self, principal: Principal, clue_id: str) -> dict[str, Any]:
        view = await self.db.run(lambda s: self._view(s, principal, clue_id))
        if view is None:
            raise _unknown(clue_id)
        return view

    async def list(self, principal: Principal) -> list[dict[str, Any]]:
        """An owner clerk's queue (their department's open tasks); a clerk's sent clues; a
        supervisor's both, all of them."""

        def read(s: Session) -> list[dict[str, Any]]:
            ids: list[str] = []
            if principal.role in ("owner_clerk", "supervisor"):
                stmt = select(ClueTask).where(col(ClueTask.status).in_(OPEN))
                if principal.role == "owner_clerk":
                    stmt = stmt.where(ClueTask.department == principal.department)
                ids += [t.clue_id for t in s.exec(stmt.order_by(col(ClueTask.acknowledge_by_ms))).all()]
            if principal.role in ("clerk", "supervisor"):
                stmt2 = select(ClueSent).order_by(col(ClueSent.created_at_ms).desc()).limit(200)
                if principal.role == "clerk":
                    stmt2 = stmt2.where(ClueSent.submitted_by == principal.username)
                ids += [c.id for c in s.exec(stmt2).all()]
            views = (self._view(s, principal, i) for i in dict.fromkeys(ids))
            return [v for v in views if v is not None]

        return await self.db.run(read)

    def _view(self, s: Session, principal: Principal, clue_id: str) -> dict[str, Any] | None:
        """What ``principal`` may see of the clue, or None when nothing (answered as not found)."""
        now = self.clock.now_ms()
        sent = s.get(ClueSent, clue_id)
        case = s.get(ClueCase, clue_id)
        tasks = list(s.exec(select(ClueTask).where(ClueTask.clue_id == clue_id)).all()) if case else []
        if principal.role == "clerk":
            if sent is None or sent.submitted_by != principal.username:
                return None
            case, tasks = None, []  # the counter sees the history, not the regulator's file
        elif principal.role == "owner_clerk":
            if not any(t.department == principal.department for t in tasks):
                return None
            sent = None
        elif principal.role != "supervisor":
            return None
        if sent is None and case is None:
            return None
        head = case or sent
        assert head is not None
        events = s.exec(
            select(ClueEvent).where(ClueEvent.clue_id == clue_id).order_by(col(ClueEvent.sequence))
        ).all()
        view: dict[str, Any] = {
            "id": clue_id,
            "region_code": head.region_code,
            "region_name": name_of(head.region_code),
            "domains": head.domains.split(","),
            "severity": head.severity,
            "source": head.source,
            "status": sent.status if sent is not None else head.status,
            "joint": "," in head.domains,
            "acknowledge_by": iso(head.acknowledge_by_ms),
            "close_by": iso(head.close_by_ms),
            "owner_node": sent.owner_node if sent is not None else self.trust.node_id,
            "source_node": case.source_node if case is not None else self.trust.node_id,
            "history": [self._event(e, sent is not None) for e in events],
        }
        if sent is not None:
            view["subject"] = sent.subject
            receipts = s.exec(select(ReceiptRecord).where(ReceiptRecord.application_id == clue_id)).all()
            view["receipts"] = [
                {
                    "from_node": r.from_node,
                    "outcome": r.outcome,
                    "reason_code": r.reason_code,
                    "reason": r.reason,
                    "received_at": iso(r.received_at_ms),
                    "envelope": base64.b64encode(r.envelope).decode(),
                }
                for r in receipts
            ]
        if case is not None:
            detail = self._open(case.sealed_detail)
            view["subject"] = case.subject_credit_code or case.subject_place
            view["detail"] = {
                "description": detail.description,
                "reporter": {"name": detail.reporter_name, "contact": detail.reporter_contact},
                "documents": _docs(list(detail.documents)),
            }
            view["tasks"] = [self._task_view(t, now) for t in tasks]
        return view

    def _event(self, e: ClueEvent, ours: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sequence": e.sequence,
            "step": e.step,
            "department": e.department,
            "level": e.level,
            "note": e.note,
            "at": iso(e.at_ms),
        }
        findings = self._findings(e.sealed_findings) if e.sealed_findings and ours else None
        if findings is not None:  # sealed to this node, the clue's source
            out["findings"] = {"text": findings.text, "documents": _docs(list(findings.documents))}
        return out

    def _findings(self, sealed: bytes) -> peer_pb2.ClueFindings | None:
        """Findings sealed to this node, or None when they do not open (checked on receipt)."""
        findings = peer_pb2.ClueFindings()
        try:
            findings.ParseFromString(unseal(self.trust.opening_keys(), sealed))
        except Exception:
            return None
        return findings

    @staticmethod
    def _task_view(t: ClueTask, now: int) -> dict[str, Any]:
        findings = peer_pb2.ClueFindings()
        findings.ParseFromString(t.findings)
        overdue = t.status in OPEN and (
            (t.status == "dispatched" and now > t.acknowledge_by_ms) or now > t.close_by_ms
        )
        return {
            "domain": t.domain,
            "department": t.department,
            "level": t.level,
            "status": t.status,
            "acknowledge_by": iso(t.acknowledge_by_ms),
            "close_by": iso(t.close_by_ms),
            "escalations": t.escalations,
            "overdue": overdue,
            "rectification": t.rectification,
            "findings": {"text": findings.text, "documents": _docs(list(findings.documents))}
            if t.findings
            else None,
        }


STEPS = frozenset(
    {
        "dispatched",
        "acknowledged",
        "findings",
        "rectification_ordered",
        "closed",
        "escalated",
        "completed",
        "refused",
    }
)


def record_clue_event(
    s: Session,
    sent: ClueSent,
    sequence: int,
    step: str,
    at_ms: int,
    *,
    department: str = "",
    level: str = "",
    note: str = "",
    sealed_findings: bytes = b"",
) -> bool:
    """Record one step once; the clue shows its highest-numbered step."""
    seen = s.exec(
        select(ClueEvent).where(ClueEvent.clue_id == sent.id, ClueEvent.sequence == sequence)
    ).first()
    if seen is not None:
        return False
    s.add(
        ClueEvent(
            clue_id=sent.id,
            sequence=sequence,
            step=step,
            department=department,
            level=level,
            note=note,
            at_ms=at_ms,
            sealed_findings=sealed_findings,
        )
    )
    if sequence > sent.status_sequence:
        sent.status, sent.status_sequence = step, sequence
        s.add(sent)
    return True


def _submitted(row: ClueSent) -> dict[str, Any]:
    return {"id": row.id, "owner_node": row.owner_node, "status": row.status}


def _unknown(clue_id: str) -> NotFound:
    return NotFound(f"no clue {clip(clue_id)} here for you", code="unknown_clue", field="id")
