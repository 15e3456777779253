"""The origin side: take an application at the counter, store it with its outbox entry
in one transaction, and later apply what the owner sends back (receipts and status
changes), each exactly once."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func
from sqlalchemy import select as sa_select
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select
from yrd.catalogue.v1 import catalogue_pb2
from yrd.envelope.v1 import envelope_pb2
from yrd.peer.v1 import peer_pb2

from core.clock import Clock
from core.db import Database
from core.errors import (
    Conflict,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unprocessable,
    YrdError,
    clip,
)
from core.ids import new_id
from core.statements import Statement, driver, insert_into
from node import metrics
from node.cases.admission import Admitted, admit
from node.cases.deadlines import add_working_days, iso
from node.cases.policy_gate import Allowed, PolicyGate
from node.cases.requests import Principal, SubmitRequest
from node.cases.status_checks import run_problem
from node.cases.statuses import FINAL, FIRST_OWNER_SEQUENCE, FROM_WIRE, HELD_SEQUENCE
from node.delivery.outbox import enqueue, release
from node.delivery.relaying import DELIVER, address
from node.models import Application, OutboxEntry, ReceiptRecord, ResultDocument, StatusEvent, SubmissionDigest
from node.trust import audit
from node.trust.audit import AuditEntry
from node.trust.envelope import request_digest
from node.trust.keyring import Trust
from node.trust.sealing import seal
from registry.lookup import CatalogueIndex

log = logging.getLogger(__name__)

Outcome = peer_pb2.ReceiptOutcome


@dataclass
class AppHead:
    """The columns of an application that applying a status change reads and writes, read
    with one prebuilt Core SELECT instead of loading the whole row as an ORM object; and who
    submitted it, which tells a bundle's part (node/cases/bundles/routing.py) from the rest."""

    id: str
    owner_node: str
    status: str
    status_sequence: int
    submitted_by: str


def _submitted(app: AppHead) -> dict[str, Any]:
    return {"id": app.id, "owner_node": app.owner_node, "status": app.status}


class Origin:
    def __init__(
        self,
        *,
        db: Database,
        trust: Trust,
        catalogue: CatalogueIndex,
        policy: PolicyGate,
        clock: Clock,
        wake: Callable[[str], None],
        max_outbox_depth: int = 0,
    ) -> None:
        self.db, self.trust, self.catalogue, self.policy = db, trust, catalogue, policy
        self.clock, self.wake = clock, wake
        self.max_outbox_depth = max_outbox_depth  # 0: no bound
        outbox = OutboxEntry.__table__  # type: ignore[attr-defined]
        waiting = (
            sa_select(outbox.c.id)
            .where(outbox.c.next_hop == bindparam("hop"), outbox.c.state == "pending")
            .limit(max_outbox_depth)
            .subquery()
        )
        self._backlog = Statement(sa_select(func.count()).select_from(waiting))  # built once, run per submit

    async def replay(self, principal: Principal, idempotency_key: str, digest: str) -> dict[str, Any] | None:
        """What an earlier request under this key was answered, or None if there was none; a
        key reused with a different request is refused rather than answered with the first
        application.

        Asked only of a request refused before the submit's transaction (its form, a policy,
        a quota): a client's retry of an accepted request gets the stored answer even if the
        rules tightened since. A request that gets as far as the transaction is looked up in
        it (:meth:`submit`), not in a transaction of its own.
        """
        found = await self.db.run(lambda s: self._replayed(s, principal.username, idempotency_key, digest))
        return None if found is None else _submitted(found)

    def _replayed(self, s: Session, username: str, key: str, digest: str) -> AppHead | None:
        app = self._by_idempotency_key(s, username, key)
        if app is None:
            return None
        stored = s.get(SubmissionDigest, app.id)
        # Rows from before digests were kept cannot be compared; they are replayed as before.
        if stored is not None and digest and stored.digest != digest:
            raise Unprocessable(
                "this idempotency key was used for a different request; use a new key",
                code="idempotency_key_reused",
                field="idempotency_key",
            )
        return app

    async def submit(self, principal: Principal, idempotency_key: str, req: SubmitRequest) -> dict[str, Any]:
        """Store an allowed application once per idempotency key: ``{id, owner_node, status}``.

        A retry is answered from the transaction that would store it, whose INSERT finds the
        key taken (one unit of work per submit, where a look-up ahead of the checks took two);
        so the checks and the policy decide a retry again (its decision logged, a quota token
        spent, as for two racing copies). Only a retry they refuse is looked up on its own
        (:meth:`replay`), to get the first answer all the same."""
        try:
            defn, admitted, owner, allowed, now = await self._allow(principal, req)
        except YrdError:
            replayed = await self.replay(principal, idempotency_key, req.digest)
            if replayed is None:
                raise
            return replayed
        app_id = new_id(now)
        held = allowed.decision.obligations.require_second_approval
        try:
            hop, store = self._prepare(
                principal, idempotency_key, req, admitted, defn, owner, allowed, app_id, now
            )
            stored = await self.db.run(store)
        except Exception:
            await self.policy.log_alone(allowed)  # nothing was stored, so not the decision either
            raise
        if stored.id == app_id:
            metrics.APPLICATIONS_SUBMITTED.labels(defn.service_id).inc()
            if not held:
                self.wake(hop)
        return _submitted(stored)

    async def _allow(
        self, principal: Principal, req: SubmitRequest
    ) -> tuple[catalogue_pb2.ServiceDefinition, Admitted, str, Allowed, int]:
        """What a request must pass before anything is stored: the owner's form and materials,
        then the outbound policy (which refuses with YrdError subclasses)."""
        defn = self.catalogue.get(req.service_id)
        admitted = admit(
            defn,
            applicant_name=req.applicant_name,
            applicant_id_number=req.applicant_id_number,
            form=req.form,
            materials=[a.material for a in req.attachments],
            consent=req.consent,
            purpose=req.purpose,
        )
        now = self.clock.now_ms()
        owner = self.trust.manifest.owner_of(defn.owner).node_id
        allowed = await self.policy.outbound(defn, owner, principal, req, admitted.form, now)
        return defn, admitted, owner, allowed, now

    def _prepare(
        self,
        principal: Principal,
        idempotency_key: str,
        req: SubmitRequest,
        admitted: Admitted,
        defn: catalogue_pb2.ServiceDefinition,
        owner: str,
        allowed: Allowed,
        app_id: str,
        now: int,
    ) -> tuple[str, Callable[[Session], AppHead]]:
        """The next hop and the unit that stores an allowed application: the application, its
        outbox entry and the policy decision in one transaction (one hand-off to the database
        thread), or, should the idempotency key turn out to be taken, the first answer."""
        decision, form = allowed.decision, allowed.form
        payload = peer_pb2.ApplicationPayload(
            applicant_name=admitted.applicant_name,
            applicant_id_number=admitted.applicant_id_number,
            form_json=json.dumps(form, ensure_ascii=False, sort_keys=True).encode(),
            attachments=[
                peer_pb2.Attachment(
                    material=a.material, filename=a.filename, content_type=a.content_type, data=a.data
                )
                for a in req.attachments
            ],
        )
        transfer = peer_pb2.ApplicationTransfer(
            application_id=app_id,
            origin_node=self.trust.node_id,
            service_id=defn.service_id,
            service_version=defn.version,
            submitted_at_ms=now,
            purpose=req.purpose,
            consent=req.consent,
            sealed_payload=seal(self.trust.public_key_of(owner, now), payload.SerializeToString()),
            fields_present=sorted(form),
            status_on_receipt=True,  # apply_receipt_run takes what rides on the receipt
        )
        body = peer_pb2.DeliverItem(application=transfer).SerializeToString()
        hop, body = address(self.trust, owner, DELIVER, body, now)
        held = decision.obligations.require_second_approval
        head = AppHead(
            id=app_id,
            owner_node=owner,
            status="awaiting_approval" if held else "submitted",
            status_sequence=HELD_SEQUENCE if held else 0,
            submitted_by=principal.username,
        )
        # The row as the INSERT's parameters: an ORM object built only to be dumped cost more
        # (its validation and instrumentation) than the statement that writes it.
        row = {
            "id": app_id,
            "owner_node": owner,
            "status": head.status,
            "status_sequence": head.status_sequence,
            "submitted_by": principal.username,
            "service_id": defn.service_id,
            "submitted_at_ms": now,
            "due_at_ms": add_working_days(now, defn.time_limit_days),
            "idempotency_key": idempotency_key,
            "purpose": req.purpose,
            "policy_decision_id": decision.decision_id,
        }
        first = _event(app_id, head.status_sequence, head.status, now, "", "")

        # The decision is logged last, after everything that can refuse: a unit that fails
        # has not logged (nor counted) it, and the caller logs it on its own.
        def store(s: Session) -> AppHead:
            # Core INSERTs, like the outbox entry's: nothing left in the session to flush.
            sql = driver(s)
            # The key's unique index finds a retry: the INSERT stores nothing when the key is
            # taken, by an earlier request or a racing copy (on PostgreSQL it waits for the
            # copy's transaction), and only then is the first answer looked up.
            if sql.first(_INSERT_APPLICATION, row) is None:
                existing = self._replayed(s, principal.username, idempotency_key, req.digest)
                if existing is None:  # taken by a row not to be read (none is deleted): retry
                    raise Conflict("this idempotency key is in use; try again", code="idempotency_key_in_use")
                allowed.log(s)  # the decision was taken all the same
                return existing
            if not held:
                self._check_backlog(s, hop, owner)
            if req.digest:
                sql.execute(_INSERT_DIGEST, {"application_id": app_id, "digest": req.digest})
            sql.execute(_INSERT_FIRST_EVENT, first)
            enqueue(
                s,
                next_hop=hop,
                destination=owner,
                method=DELIVER,
                item_id=app_id,
                body=body,
                now_ms=now,
                held=held,
            )
            allowed.log(s)
            return head

        return hop, store

    async def release(self, principal: Principal, app_id: str) -> dict[str, Any]:
        """A second clerk lets a held application go: the four-eyes obligation."""
        now = self.clock.now_ms()

        def apply(s: Session) -> Application:
            app = s.get(Application, app_id)
            if app is None:
                raise NotFound(
                    f"no application {clip(app_id)} at this node", code="unknown_application", field="id"
                )
            if app.status != "awaiting_approval":
                raise Conflict(f"application is {app.status}, not awaiting approval", code="not_held")
            if principal.username == app.submitted_by:
                raise PermissionDenied(
                    "a second clerk, not the one who submitted it, must release this application",
                    code="same_clerk",
                )
            release(s, app_id, now)
            record_event(
                s, app, sequence=0, status="submitted", at_ms=now, reason=f"released by {principal.username}"
            )
            return app

        app = await self.db.run(apply)
        self.wake(self.trust.next_hop(app.owner_node))
        return {"id": app.id, "owner_node": app.owner_node, "status": app.status}

    def _check_backlog(self, s: Session, hop: str, owner: str) -> None:
        """Back-pressure: refuse while the outbox to ``hop`` holds the bound or more, so a
        counter that accepts faster than the federation delivers tells its clients to wait
        (429, Retry-After) instead of queueing them for minutes. Counted up to the bound only."""
        if not self.max_outbox_depth:
            return
        depth = driver(s).scalar(self._backlog, {"hop": hop})
        if depth >= self.max_outbox_depth:
            metrics.APPLICATIONS_BACKPRESSURED.inc()
            raise RateLimited(
                f"{self.max_outbox_depth} items already wait to be sent towards {owner}; try again shortly",
                code="outbox_full",
                retry_after_s=1,
            )

    @staticmethod
    def _by_idempotency_key(s: Session, username: str, key: str) -> AppHead | None:
        found = driver(s).first(_BY_KEY, {"username": username, "key": key})
        return None if found is None else AppHead(*found)

    async def get(self, app_id: str) -> dict[str, Any]:
        now = self.clock.now_ms()

        def read(s: Session) -> dict[str, Any]:
            app = s.get(Application, app_id)
            if app is None:
                raise NotFound(
                    f"no application {clip(app_id)} at this node", code="unknown_application", field="id"
                )
            events = s.exec(
                select(StatusEvent)
                .where(StatusEvent.application_id == app_id)
                .order_by(col(StatusEvent.sequence))
            ).all()
            receipts = s.exec(select(ReceiptRecord).where(ReceiptRecord.application_id == app_id)).all()
            docs = s.exec(select(ResultDocument).where(ResultDocument.application_id == app_id)).all()
            return {
                "id": app.id,
                "service_id": app.service_id,
                "owner_node": app.owner_node,
                "status": app.status,
                "submitted_at": iso(app.submitted_at_ms),
                "due_at": iso(app.due_at_ms),
                "overdue": app.status not in FINAL and now > app.due_at_ms,
                "history": [
                    {
                        "status": e.status,
                        "sequence": e.sequence,
                        "reason": e.reason,
                        "rule_id": e.rule_id,
                        "at": iso(e.at_ms),
                        "at_ms": e.at_ms,
                    }
                    for e in events
                ],
                "receipts": [
                    {
                        "from_node": r.from_node,
                        "outcome": r.outcome,
                        "reason_code": r.reason_code,
                        "reason": r.reason,
                        "rule_id": r.rule_id,
                        "received_at": iso(r.received_at_ms),
                        "envelope": base64.b64encode(r.envelope).decode(),
                    }
                    for r in receipts
                ],
                "documents": [
                    {
                        "name": d.name,
                        "content_type": d.content_type,
                        "data": base64.b64encode(d.data).decode(),
                    }
                    for d in docs
                ],
            }

        return await self.db.run(read)


def record_event(
    s: Session,
    app: Application | AppHead,
    *,
    sequence: int,
    status: str,
    at_ms: int,
    reason: str = "",
    rule_id: str = "",
    documents: list[peer_pb2.Document] | None = None,
) -> bool:
    """Record one status change once; the application shows its highest-numbered change."""
    event = _event(app.id, sequence, status, at_ms, reason, rule_id)
    return bool(_record(s, app, [event], {sequence: documents or []}))


def _event(app_id: str, sequence: int, status: str, at_ms: int, reason: str, rule_id: str) -> dict[str, Any]:
    return {
        "application_id": app_id,
        "sequence": sequence,
        "status": status,
        "reason": reason,
        "rule_id": rule_id,
        "at_ms": at_ms,
    }


def _record(
    s: Session,
    app: Application | AppHead,
    events: list[dict[str, Any]],
    documents: dict[int, list[peer_pb2.Document]],
) -> set[int]:
    """Record status changes of one application, each once; the sequences newly recorded.

    Once is the unique key on (application, sequence): ``INSERT ... ON CONFLICT DO NOTHING
    RETURNING`` inserts the first copy only, and for exactly one of two racing replicas, with
    no SELECT before it; each change is one such statement on the driver's cursor
    (core/statements.py). The statements run on the session's connection (no code
    adds events as ORM objects, so none waits unflushed in the session to be missed), and
    the application's new status (its highest change) is written with them and set on
    ``app`` as committed state, so the session has nothing left to flush for it."""
    sql = driver(s)
    fresh = {row[0] for row in sql.returning_each(_INSERT_EVENT, events)}
    if not fresh:
        return fresh
    kept = [
        {"application_id": app.id, "name": d.name, "content_type": d.content_type, "data": d.data}
        for sequence in sorted(fresh)
        for d in documents.get(sequence, ())
    ]
    if kept:
        sql.executemany(_INSERT_DOCUMENT, kept)
    highest = max(fresh)
    if highest > app.status_sequence:
        status = next(e["status"] for e in events if e["sequence"] == highest)
        sql.execute(_SET_STATUS, {"app_id": app.id, "status": status, "status_sequence": highest})
        if isinstance(app, AppHead):
            app.status, app.status_sequence = status, highest
        else:
            set_committed_value(app, "status", status)
            set_committed_value(app, "status_sequence", highest)
    return fresh


# Built once: a statement built per call costs more to construct and to key for the
# compiled cache than SQLite takes to run it.
_EVENTS = StatusEvent.__table__  # type: ignore[attr-defined]
_DOCUMENTS = ResultDocument.__table__  # type: ignore[attr-defined]
_APPLICATIONS = Application.__table__  # type: ignore[attr-defined]
_RECEIPTS = ReceiptRecord.__table__  # type: ignore[attr-defined]
_DIGESTS = SubmissionDigest.__table__  # type: ignore[attr-defined]
_INSERT_APPLICATION = insert_into(
    _APPLICATIONS,
    on_conflict_do_nothing=True,
    conflict_on=(_APPLICATIONS.c.submitted_by, _APPLICATIONS.c.idempotency_key),
    returning=(_APPLICATIONS.c.id,),
)
_INSERT_DIGEST = insert_into(_DIGESTS)
_INSERT_FIRST_EVENT = insert_into(_EVENTS)
_INSERT_DOCUMENT = insert_into(_DOCUMENTS)
_INSERT_RECEIPT = insert_into(_RECEIPTS)
_INSERT_EVENT = insert_into(_EVENTS, on_conflict_do_nothing=True, returning=(_EVENTS.c.sequence,))
_SET_STATUS = Statement(
    _APPLICATIONS.update()
    .where(_APPLICATIONS.c.id == bindparam("app_id"))
    .values(status=bindparam("status"), status_sequence=bindparam("status_sequence"))
)
_HEAD_COLUMNS = (
    _APPLICATIONS.c.id,
    _APPLICATIONS.c.owner_node,
    _APPLICATIONS.c.status,
    _APPLICATIONS.c.status_sequence,
    _APPLICATIONS.c.submitted_by,
)
_HEAD = Statement(sa_select(*_HEAD_COLUMNS).where(_APPLICATIONS.c.id == bindparam("app_id")))
_BY_KEY = Statement(
    sa_select(*_HEAD_COLUMNS).where(
        _APPLICATIONS.c.submitted_by == bindparam("username"),
        _APPLICATIONS.c.idempotency_key == bindparam("key"),
    )
)


def _head(s: Session, app_id: str) -> AppHead | None:
    found = driver(s).first(_HEAD, {"app_id": app_id})
    return None if found is None else AppHead(*found)


def apply_status_changes(
    s: Session, sender: str, updates: Sequence[peer_pb2.StatusUpdate]
) -> tuple[peer_pb2.Receipt, list[peer_pb2.StatusUpdate]]:
    """An owner's status changes (one alone, or a run of one application's), and those of
    them applied now, in order; only the application's owner may send them.

    The changes are checked whole before anything is read (node/cases/status_checks.py): a
    malformed one refuses them all. Each ``(application, sequence)`` is then applied once,
    so a run that overlaps what arrived before applies only the rest: ``ACCEPTED`` when any
    change was applied, ``DUPLICATE`` when none was."""
    receipt, applied, _ = apply_status_run(s, sender, updates)
    return receipt, applied


def apply_status_run(
    s: Session, sender: str, updates: Sequence[peer_pb2.StatusUpdate]
) -> tuple[peer_pb2.Receipt, list[peer_pb2.StatusUpdate], AppHead | None]:
    """:func:`apply_status_changes`, with the application's head it read (None when the
    changes were refused), for a caller that acts on whose application it is."""
    item_id = updates[0].application_id if updates else ""
    problem = run_problem(updates)
    if problem is not None:
        return _refused(item_id, "malformed_status", problem), [], None
    app = _head(s, item_id)
    if app is None or app.owner_node != sender:
        refused = _refused(
            item_id, "unknown_application", "no such application from this origin for that owner"
        )
        return refused, [], None
    events = [
        _event(item_id, u.sequence, FROM_WIRE[u.status], u.changed_at_ms, u.reason, u.rule_id)
        for u in updates
    ]
    fresh = _record(s, app, events, {u.sequence: list(u.documents) for u in updates if u.documents})
    outcome = Outcome.RECEIPT_OUTCOME_ACCEPTED if fresh else Outcome.RECEIPT_OUTCOME_DUPLICATE
    receipt = peer_pb2.Receipt(item_id=item_id, outcome=outcome)
    return receipt, [u for u in updates if u.sequence in fresh], app


# What applies an owner's status changes at the origin, as the peer service's NotifyStatus
# does (apply_status_changes, plus what the bundle runner keeps of them): injected so a run on
# a receipt is taken in by the very same code.
ApplyStatus = Callable[[Session, str, Sequence[peer_pb2.StatusUpdate]], peer_pb2.Receipt]


def apply_receipt_run(
    s: Session,
    app_id: str,
    from_node: str,
    receipt: peer_pb2.Receipt,
    envelope_bytes: bytes,
    at_ms: int,
    apply_status: ApplyStatus,
) -> str | None:
    """The status run an owner's Deliver receipt carries (docs/protocol.md 10.6), taken in as a
    NotifyStatus run is: checked by ``apply_status`` (10.2 steps 1-5, with the receipt's signer,
    who answered the delivery, as the authenticated sender), each change applied once, in the
    caller's transaction, the one that settles the delivery. The run must be of the receipt's
    own application. Returns None when there is no run or it was taken in (the audit log then
    names it, as it names a NotifyStatus item), or why the receipt is not usable: nothing of it
    is applied and the delivery is sent again."""
    if not receipt.HasField("status_run"):
        return None
    updates = receipt.status_run.updates
    if updates and updates[0].application_id != app_id:
        return "malformed_status: a run of another application than the receipt's"
    answer = apply_status(s, from_node, updates)
    if answer.outcome == Outcome.RECEIPT_OUTCOME_REJECTED:
        return f"{answer.reason_code}: {answer.reason}"
    first, last = updates[0].sequence, updates[-1].sequence
    digest = request_digest(envelope_pb2.Envelope.FromString(envelope_bytes))
    audit.append(s, [AuditEntry("in", from_node, DELIVER, digest, f"{app_id}#{first}-{last}")], at_ms)
    return None


def _refused(item_id: str, code: str, reason: str) -> peer_pb2.Receipt:
    return peer_pb2.Receipt(
        item_id=item_id, outcome=Outcome.RECEIPT_OUTCOME_REJECTED, reason_code=code, reason=reason
    )


def apply_delivery_receipt(
    s: Session, app_id: str, from_node: str, receipt: peer_pb2.Receipt, envelope_bytes: bytes, at_ms: int
) -> None:
    """Keep the signed receipt and turn the owner's answer into the first owner event."""
    take_delivery_receipt(s, app_id, from_node, receipt, envelope_bytes, at_ms)


def take_delivery_receipt(
    s: Session, app_id: str, from_node: str, receipt: peer_pb2.Receipt, envelope_bytes: bytes, at_ms: int
) -> AppHead | None:
    """:func:`apply_delivery_receipt`, with the application's head it read (None: this node
    has no application of that id), for a caller that acts on whose application it is."""
    app = _head(s, app_id)
    if app is None:
        return None
    driver(s).execute(
        _INSERT_RECEIPT,
        {
            "application_id": app_id,
            "from_node": from_node,
            "outcome": peer_pb2.ReceiptOutcome.Name(receipt.outcome).removeprefix("RECEIPT_OUTCOME_").lower(),
            "reason_code": receipt.reason_code,
            "reason": receipt.reason,
            "rule_id": receipt.rule_id,
            "received_at_ms": at_ms,
            "envelope": envelope_bytes,
        },
    )
    if from_node != app.owner_node:
        return app  # a relay's receipt: the owner's own word comes as a status change
    if receipt.outcome in (Outcome.RECEIPT_OUTCOME_ACCEPTED, Outcome.RECEIPT_OUTCOME_DUPLICATE):
        record_event(s, app, sequence=FIRST_OWNER_SEQUENCE, status="delivered", at_ms=receipt.received_at_ms)
    elif receipt.outcome == Outcome.RECEIPT_OUTCOME_REJECTED:
        record_event(
            s,
            app,
            sequence=FIRST_OWNER_SEQUENCE,
            status="refused",
            at_ms=receipt.received_at_ms,
            reason=receipt.reason,
            rule_id=receipt.rule_id,
        )
    return app
