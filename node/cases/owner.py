"""The owner side: store each application once, answer with a receipt, run the
service's handler, and send every status change back to the origin through the
outbox (so the origin learns of it even across crashes on either side) or, for the
changes decided as it is stored, on the receipt itself when the origin asked for that
(docs/protocol.md 10.6): the run is kept with the application, so a re-sent copy whose
first receipt was lost carries it again."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select
from yrd.catalogue.v1 import catalogue_pb2
from yrd.peer.v1 import peer_pb2

from core.clock import Clock
from core.db import Database, after_commit
from core.errors import Conflict, InvalidInput, NotFound, Unavailable, YrdError, clip
from core.json_doc import parse_json_object
from core.statements import Statement, driver, insert_into
from node import metrics
from node.cases.admission import admit, check_fields_present, check_sender, check_transfer
from node.cases.certificates import certificate_document
from node.cases.deadlines import add_working_days, iso
from node.cases.handlers import auto_decision, check_results, issue_results, result_notice
from node.cases.policy_gate import PolicyGate
from node.cases.requests import Document, Principal
from node.cases.status_checks import MAX_RUN, MAX_RUN_BYTES_ON_RECEIPT
from node.cases.statuses import FINAL, FIRST_OWNER_SEQUENCE, TO_WIRE
from node.delivery.outbox import enqueue
from node.delivery.relaying import NOTIFY_STATUS, address
from node.models import InboundApplication, OutboxEntry
from node.trust.envelope import DEFAULT_MAX_SKEW_MS
from node.trust.keyring import Trust
from node.trust.sealing import unseal

log = logging.getLogger(__name__)

Outcome = peer_pb2.ReceiptOutcome
DECISIONS = {"approve", "reject", "need_materials"}
BundleStart = Callable[
    [Session, InboundApplication, catalogue_pb2.ServiceDefinition, peer_pb2.ApplicationPayload, int], None
]
WEBHOOK_HOP = "~webhook"  # not a node id (node ids are [a-z0-9-]), so no sender ever dials it


@dataclass(slots=True)
class Arriving:
    """An application being accepted, until its row is written: a plain value, since building
    the instrumented ORM object cost more than the INSERT (59 us); a bundle's, which its
    runner keeps in the session, becomes one (:meth:`as_model`)."""

    id: str
    origin_node: str
    service_id: str
    service_version: int
    handler: str
    status: str
    sequence: int
    received_at_ms: int
    due_at_ms: int
    purpose: str
    sealed_payload: bytes
    fields_present: str
    reason: str = ""
    rule_id: str = ""
    receipt_run: bytes | None = None

    def as_row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def as_model(self) -> InboundApplication:
        return InboundApplication(**self.as_row())


# What the owner's steps act on: one arriving, or one stored and loaded to be decided.
Inbound = Arriving | InboundApplication


def _insert(s: Session, row: Arriving) -> None:
    driver(s).execute(_INSERT_INBOUND, row.as_row())


_INBOUND = InboundApplication.__table__  # type: ignore[attr-defined]
# What answering a second copy reads, as one prebuilt Core SELECT: an ORM load of the whole row
# per item cost more than SQLite took to find it.
_EXISTING = Statement(
    sa_select(
        _INBOUND.c.origin_node,
        _INBOUND.c.status,
        _INBOUND.c.reason,
        _INBOUND.c.rule_id,
        _INBOUND.c.receipt_run,
    ).where(_INBOUND.c.id == bindparam("app_id"))
)
_INSERT_INBOUND = insert_into(_INBOUND)


class Owner:
    def __init__(
        self,
        *,
        db: Database,
        trust: Trust,
        services: Callable[[], dict[str, catalogue_pb2.ServiceDefinition]],
        policy: PolicyGate,
        clock: Clock,
        wake: Callable[[str], None],
        max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
    ) -> None:
        self.db, self.trust, self.services, self.policy = db, trust, services, policy
        self.clock, self.wake, self.max_skew_ms = clock, wake, max_skew_ms
        # Set by the composition root: what starts a bundle (handler "bundle") once stored, and
        # what wakes the webhook dispatcher once an application for it is committed.
        self.on_bundle: BundleStart | None = None
        self.on_webhook: Callable[[], None] | None = None

    # -- receiving ---------------------------------------------------------------------

    def accept(
        self, s: Session, sender: str, t: peer_pb2.ApplicationTransfer, now: int, direct: bool = False
    ) -> peer_pb2.Receipt:
        """Store one application exactly once; called inside the batch's transaction.

        The application is checked exactly as this node's own counter checks one, before
        anything is stored or the policy is asked: what fails gets a REJECTED receipt with
        the check's code and leaves no application row and no policy decision behind.

        ``direct``: the envelope that carried the item is ``sender``'s own, not a relay's, so
        the receipt reaches the origin itself. Then, when the item asks for it
        (``status_on_receipt``), the changes numbered here ride on the receipt instead of the
        outbox; a bundle's go by NotifyStatus all the same (its runner numbers more of them).
        """
        try:
            check_sender(t, sender)
        except YrdError as e:
            return self._refuse(t, sender, e)  # no origin to tell, or no id safe to name
        s.flush()  # a bundle's row this batch added is in the session only: found as s.get would
        existing = driver(s).first(_EXISTING, {"app_id": t.application_id})
        if existing is not None:
            origin_node, status, reason, rule_id, receipt_run = existing
            if origin_node != sender:
                return self._receipt(t, Outcome.RECEIPT_OUTCOME_REJECTED, "id_taken", "application id in use")
            if status == "refused":
                copy = self._receipt(t, Outcome.RECEIPT_OUTCOME_REJECTED, "refused", reason, rule_id)
            else:
                metrics.APPLICATIONS_RECEIVED.labels("duplicate").inc()
                copy = self._receipt(t, Outcome.RECEIPT_OUTCOME_DUPLICATE, "duplicate", "already received")
            if receipt_run is not None:
                self._run_again(s, t, bytes(receipt_run), copy, direct, now)
            return copy
        try:
            defn, payload, fields = self._admit(t, now)
        except Unavailable as e:  # stamped ahead by a skewed origin: fine once our clock catches up
            return self._receipt(t, Outcome.RECEIPT_OUTCOME_RETRY, e.code, e.reason)
        except YrdError as e:
            self._tell_origin(s, t, e, now)
            return self._refuse(t, sender, e)
        row = Arriving(
            id=t.application_id,
            origin_node=sender,
            service_id=t.service_id,
            service_version=t.service_version,
            handler=defn.handler,
            status="delivered",
            sequence=0,
            received_at_ms=now,
            due_at_ms=add_working_days(t.submitted_at_ms, defn.time_limit_days),
            purpose=t.purpose,
            sealed_payload=t.sealed_payload,
            fields_present=",".join(fields),
        )
        rides = direct and t.status_on_receipt and defn.handler != "bundle"
        # The row is written once, as a Core INSERT after its status changes are numbered (an
        # ORM object would be flushed by the batch's next query, item after item); only a
        # bundle's row goes into the session, where the bundle runner works on it.
        try:
            self.policy.inbound(s, defn, sender, t, now)
        except YrdError as e:
            row.status, row.reason, row.rule_id = "refused", e.reason, str(e.extra.get("rule_id") or "")
            refusal = self._receipt(t, Outcome.RECEIPT_OUTCOME_REJECTED, e.code, e.reason, row.rule_id)
            changes = [self.number(row, "refused", now, reason=e.reason, rule_id=row.rule_id)]
            self._send_or_ride(s, row, changes, refusal if rides else None, now)
            _insert(s, row)
            metrics.APPLICATIONS_RECEIVED.labels("refused").inc()
            return refusal
        # Every change decided here leaves as one item, a run (docs/protocol.md 10.2): an
        # automatic decision is four changes, one signature and one receipt between the nodes.
        changes = [self.number(row, "delivered", now), self.number(row, "in_review", now)]
        accepted = self._receipt(t, Outcome.RECEIPT_OUTCOME_ACCEPTED, "accepted", "stored")
        if row.handler == "bundle" and self.on_bundle is not None:
            self._send(s, row.id, row.origin_node, changes, now)
            bundle = row.as_model()
            s.add(bundle)
            self.on_bundle(s, bundle, defn, payload, now)
        else:
            if row.handler == "auto":
                changes += self._auto(row, defn, payload, now)
            elif row.handler == "webhook":
                enqueue(
                    s,
                    next_hop=WEBHOOK_HOP,
                    destination="",
                    method="webhook",
                    item_id=row.id,
                    body=b"",
                    now_ms=now,
                )
                if self.on_webhook is not None:
                    after_commit(s, self.on_webhook)
            self._send_or_ride(s, row, changes, accepted if rides else None, now)
            _insert(s, row)
        metrics.APPLICATIONS_RECEIVED.labels("accepted").inc()
        return accepted

    def _admit(
        self, t: peer_pb2.ApplicationTransfer, now: int
    ) -> tuple[catalogue_pb2.ServiceDefinition, peer_pb2.ApplicationPayload, list[str]]:
        """(this node's definition, the opened payload, the form's field names), or the
        YrdError of the first check that fails, in the order of docs/protocol.md §10.3."""
        defn = check_transfer(t, self.services().get(t.service_id), now_ms=now, max_skew_ms=self.max_skew_ms)
        payload = self._open(t.sealed_payload)
        try:  # parsed as the counter parses its clients' JSON: by the same code
            form = parse_json_object(payload.form_json, field="form")
        except InvalidInput as e:
            raise InvalidInput(f"form_json: {e.reason}", code="invalid_form_field", field=e.field) from e
        admit(
            defn,
            applicant_name=payload.applicant_name,
            applicant_id_number=payload.applicant_id_number,
            form=form,
            materials=[a.material for a in payload.attachments],
            consent=t.consent,
            purpose=t.purpose,
        )
        fields = check_fields_present(t, form)  # a dict: admit refused anything else
        return defn, payload, fields

    def _send_or_ride(
        self,
        s: Session,
        row: Inbound,
        changes: list[peer_pb2.StatusUpdate],
        receipt: peer_pb2.Receipt | None,
        now: int,
    ) -> None:
        """The changes numbered as ``row`` is stored: on ``receipt`` (and kept with the row,
        for a copy's receipt) when given and small enough (10.6: at most 16 changes and
        64 KiB), else through the outbox."""
        if receipt is not None and len(changes) <= MAX_RUN:
            receipt.status_run.updates.extend(changes)
            run = receipt.status_run.SerializeToString()
            if len(run) <= MAX_RUN_BYTES_ON_RECEIPT:
                row.receipt_run = run
                metrics.STATUS_RUNS_ON_RECEIPT.inc()
                return
            receipt.ClearField("status_run")
        self._send(s, row.id, row.origin_node, changes, now)

    def _run_again(
        self,
        s: Session,
        t: peer_pb2.ApplicationTransfer,
        run: bytes,
        receipt: peer_pb2.Receipt,
        direct: bool,
        now: int,
    ) -> None:
        """A copy of an application whose changes rode on its first receipt: that receipt may
        have been lost, so the copy's carries the same run. A copy through a relay cannot
        carry it (the relay's sender settles it), nor one that does not ask for it: then the
        run goes by NotifyStatus, once."""
        if direct and t.status_on_receipt:
            receipt.status_run.MergeFromString(run)
            return
        changes = list(peer_pb2.StatusRun.FromString(run).updates)
        if not self._queued(s, _status_item_id(t.application_id, changes), t.origin_node):
            self._send(s, t.application_id, t.origin_node, changes, now)

    @staticmethod
    def _queued(s: Session, item_id: str, destination: str) -> bool:
        return (
            s.exec(
                select(OutboxEntry.id).where(
                    OutboxEntry.item_id == item_id, OutboxEntry.destination == destination
                )
            ).first()
            is not None
        )

    def _tell_origin(self, s: Session, t: peer_pb2.ApplicationTransfer, e: YrdError, now: int) -> None:
        """Queue the refusal as the application's first status change, once per id.

        The receipt answers whoever carried the item, which is the relay when the origin sits
        behind one; the status change reaches the origin itself. Nothing else is kept."""
        item_id = f"{t.application_id}#{FIRST_OWNER_SEQUENCE}"
        if self._queued(s, item_id, t.origin_node):
            return
        update = peer_pb2.StatusUpdate(
            application_id=t.application_id,
            status=TO_WIRE["refused"],  # type: ignore[arg-type]
            reason=f"{e.code}: {e.reason}",
            changed_at_ms=now,
            sequence=FIRST_OWNER_SEQUENCE,
        )
        body = peer_pb2.StatusItem(status=update).SerializeToString()
        hop, body = address(self.trust, t.origin_node, NOTIFY_STATUS, body, now)
        enqueue(
            s,
            next_hop=hop,
            destination=t.origin_node,
            method=NOTIFY_STATUS,
            item_id=item_id,
            body=body,
            now_ms=now,
        )

    def _refuse(self, t: peer_pb2.ApplicationTransfer, sender: str, e: YrdError) -> peer_pb2.Receipt:
        """A refusal that keeps no application: the receipt and, once the id is known to be
        well formed and the sender's own, a status change to the origin are all it leaves."""
        # %r: the id is the peer's text and may hold a newline or anything else.
        log.info("refused application %r from %s: %s", t.application_id[:100], sender, e.code)
        metrics.APPLICATIONS_RECEIVED.labels("refused").inc()
        reason = f"{e.field}: {e.reason}" if e.field else e.reason
        return self._receipt(t, Outcome.RECEIPT_OUTCOME_REJECTED, e.code, reason)

    def _auto(
        self,
        row: Inbound,
        defn: catalogue_pb2.ServiceDefinition,
        payload: peer_pb2.ApplicationPayload,
        now: int,
    ) -> list[peer_pb2.StatusUpdate]:
        decision, reason = auto_decision(defn, payload)
        return self._apply_decision(
            row, defn, decision, reason, [], now, issue_results(defn, row.id, now), payload
        )

    def _receipt(
        self, t: peer_pb2.ApplicationTransfer, outcome: int, code: str, reason: str, rule_id: str = ""
    ) -> peer_pb2.Receipt:
        return peer_pb2.Receipt(
            item_id=t.application_id,
            outcome=outcome,  # type: ignore[arg-type]
            reason_code=code,
            reason=reason,
            rule_id=rule_id,
            received_at_ms=self.clock.now_ms(),
        )

    def _open(self, sealed: bytes) -> peer_pb2.ApplicationPayload:
        payload = peer_pb2.ApplicationPayload()
        try:
            payload.ParseFromString(unseal(self.trust.opening_keys(), sealed))
        except Exception as e:
            raise InvalidInput("the sealed payload does not open", code="sealed_payload_invalid") from e
        return payload

    # -- status changes ----------------------------------------------------------------

    def emit(
        self, s: Session, row: InboundApplication, changes: list[peer_pb2.StatusUpdate], now: int
    ) -> None:
        """Put changes numbered by :meth:`number` in the outbox for the origin, in this
        transaction, as one item."""
        s.add(row)
        self._send(s, row.id, row.origin_node, changes, now)

    def number(
        self,
        row: Inbound,
        status: str,
        now: int,
        *,
        reason: str = "",
        rule_id: str = "",
        documents: list[peer_pb2.Document] | None = None,
        results: dict[str, str] | None = None,
    ) -> peer_pb2.StatusUpdate:
        """The application's next change: ``row`` moves to it, the update is returned to be
        sent (:meth:`emit`) with the other changes of the same transaction."""
        row.sequence += 1
        row.status = status
        return peer_pb2.StatusUpdate(
            application_id=row.id,
            status=TO_WIRE[status],  # type: ignore[arg-type]
            reason=reason,
            changed_at_ms=now,
            sequence=row.sequence,
            documents=documents or [],
            rule_id=rule_id,
            results=results or {},
        )

    def _send(
        self, s: Session, app_id: str, origin: str, changes: list[peer_pb2.StatusUpdate], now: int
    ) -> None:
        """One outbox item for the changes of one application numbered in one transaction:
        a ``status`` for one change, a ``run`` for several (one envelope, one signature, one
        receipt), under the id of :func:`_status_item_id`; more than a run may hold go as
        consecutive runs, since the origin refuses a longer one whole."""
        for start in range(0, len(changes), MAX_RUN):
            part = changes[start : start + MAX_RUN]
            if len(part) == 1:
                item = peer_pb2.StatusItem(status=part[0])
            else:
                item = peer_pb2.StatusItem(run=peer_pb2.StatusRun(updates=part))
            hop, body = address(self.trust, origin, NOTIFY_STATUS, item.SerializeToString(), now)
            enqueue(
                s,
                next_hop=hop,
                destination=origin,
                method=NOTIFY_STATUS,
                item_id=_status_item_id(app_id, part),
                body=body,
                now_ms=now,
            )

    def _apply_decision(
        self,
        row: Inbound,
        defn: catalogue_pb2.ServiceDefinition | None,
        decision: str,
        reason: str,
        documents: list[peer_pb2.Document],
        now: int,
        results: dict[str, str] | None = None,
        payload: peer_pb2.ApplicationPayload | None = None,
    ) -> list[peer_pb2.StatusUpdate]:
        """The changes a decision makes, numbered on ``row``; the caller sends them."""
        metrics.DECISION_SECONDS.labels(row.handler).observe(max(0, now - row.received_at_ms) / 1000)
        if decision == "approve":
            approved = self.number(row, "approved", now, reason=reason, results=results)
            docs = documents or [result_notice(row.id, defn, now)]
            if results:  # a matter with named results makes a certificate (cases/certificates.py)
                opened = payload if payload is not None else self._open(row.sealed_payload)
                certificate = certificate_document(
                    self.trust.key, self.trust.node_id, defn, row.id, opened, results, now
                )
                docs = docs if certificate is None else [*docs, certificate]
            return [
                approved,
                self.number(row, "completed", now, reason=reason, documents=docs, results=results),
            ]
        if decision == "reject":
            return [self.number(row, "rejected", now, reason=reason)]
        return [self.number(row, "needs_materials", now, reason=reason)]

    # -- the owner's work queue ----------------------------------------------------------

    async def worklist(self, service_ids: Collection[str] | None = None) -> list[dict[str, Any]]:
        """Open applications, of ``service_ids`` only when given (one department's)."""
        now = self.clock.now_ms()

        def read(s: Session) -> list[InboundApplication]:
            stmt = select(InboundApplication).where(
                col(InboundApplication.status).in_(["in_review", "needs_materials"]),
                InboundApplication.handler != "bundle",  # its components are decided, not it
            )
            if service_ids is not None:
                stmt = stmt.where(col(InboundApplication.service_id).in_(list(service_ids)))
            return list(s.exec(stmt.order_by(col(InboundApplication.due_at_ms))).all())

        return [self._view(row, now) for row in await self.db.run(read)]

    def _view(self, row: InboundApplication, now: int) -> dict[str, Any]:
        payload = self._open(row.sealed_payload)
        return {
            "id": row.id,
            "service_id": row.service_id,
            "origin_node": row.origin_node,
            "status": row.status,
            "handler": row.handler,
            "received_at": iso(row.received_at_ms),
            "due_at": iso(row.due_at_ms),
            "overdue": row.status not in FINAL and now > row.due_at_ms,
            "purpose": row.purpose,
            "applicant": {"name": payload.applicant_name, "id_number": payload.applicant_id_number},
            "form": json.loads(payload.form_json or b"{}"),
            "attachments": [
                {
                    "material": a.material,
                    "filename": a.filename,
                    "content_type": a.content_type,
                    "size": len(a.data),
                }
                for a in payload.attachments
            ],
        }

    async def decide(
        self,
        principal: Principal,
        app_id: str,
        decision: str,
        reason: str,
        documents: list[Document],
        results: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        check_decision(decision, reason)
        if results and decision != "approve":
            raise InvalidInput("only an approval carries results", code="invalid_result", field="results")
        now = self.clock.now_ms()
        docs = [peer_pb2.Document(name=d.name, content_type=d.content_type, data=d.data) for d in documents]
        row = await self.db.run(lambda s: self.decide_in(s, app_id, decision, reason, docs, now, results))
        log.info("decision %s on %r by %s", decision, app_id, principal.username)
        self.wake(self.trust.next_hop(row.origin_node))
        return {"id": row.id, "status": row.status, "sequence": row.sequence}

    def decide_in(
        self,
        s: Session,
        app_id: str,
        decision: str,
        reason: str,
        docs: list[peer_pb2.Document],
        now: int,
        results: dict[str, Any] | None = None,
    ) -> InboundApplication:
        """Apply a decision inside the caller's transaction; an approval's results are the
        department's values (checked against the service's declared results) and the rest
        assigned as the automatic handler assigns them."""
        row = s.get(InboundApplication, app_id)
        if row is None:
            raise NotFound(
                f"no application {clip(app_id)} received here", code="unknown_application", field="id"
            )
        if row.status not in ("in_review", "needs_materials"):
            raise Conflict(f"application is {row.status}; nothing to decide", code="already_decided")
        if row.handler == "bundle":
            raise Conflict("a bundle is decided by its components", code="bundle_not_decided_here")
        defn = self.services().get(row.service_id)
        issued = None
        if decision == "approve":
            check_results(defn, results or {})
            issued = issue_results(defn, row.id, now, results)
        self._send(
            s,
            row.id,
            row.origin_node,
            self._apply_decision(row, defn, decision, reason, docs, now, issued),
            now,
        )
        return row

    def view(self, s: Session, app_id: str) -> dict[str, Any]:
        row = s.get(InboundApplication, app_id)
        if row is None:
            raise NotFound(
                f"no application {clip(app_id)} received here", code="unknown_application", field="id"
            )
        return self._view(row, self.clock.now_ms())


def _status_item_id(app_id: str, changes: list[peer_pb2.StatusUpdate]) -> str:
    """The outbox id of a status item: the application and the sequences it carries, so it is
    unique; a lone change's is ``<application>#<sequence>``, which :meth:`Owner._tell_origin`
    looks for, a run's ``<application>#<first>-<last>`` (the origin's audit names a run that
    rode on a receipt the same way)."""
    first, last = changes[0].sequence, changes[-1].sequence
    return f"{app_id}#{first}" if first == last else f"{app_id}#{first}-{last}"


def check_decision(decision: str, reason: str) -> None:
    if decision not in DECISIONS:
        raise InvalidInput(
            f"decision must be one of {sorted(DECISIONS)}", code="bad_decision", field="decision"
        )
    if decision != "approve" and not reason.strip():
        raise InvalidInput("a reason is required", code="reason_required", field="reason")
