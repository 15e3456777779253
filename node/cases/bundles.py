"""Bundles (一件事) at the lead department's node, and their view at any counter.

A bundle arrives at the lead as an ordinary application of the bundle's service (from its
own counter or another member's), checked and stored by the owner like any other. Its
handler "bundle" starts a run here: one part per component. A runner submits each part,
as soon as every part it waits for is completed, as an ordinary application from this node
through ``Origin.submit`` (the same admission, policy and outbox as a clerk's), with an
idempotency key of bundle, component and attempt: a part is made once, however often the
runner is retried or the node restarted. Results of completed parts fill later parts' forms
through the bundle's mappings.

The lead tells the counter how the whole goes with the bundle application's own status
changes: ``in_review`` while parts run, ``needs_materials`` naming the parts that failed and
why, ``completed`` when every part is. Each change carries, in ``results``, the parts'
snapshot (status, owner, deadline, attempt) under ``yrd.components`` and the parts' result
values as ``<component>.<result>``. A clerk corrects a failed part with a resubmission: an
application of the bundle service with purpose ``bundle-resubmit`` whose sealed form names
the bundle, the part and the attempt; the lead checks it with the part's own admission and
starts only that part again (and, once it completes, what waits for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, select
from yrd.catalogue.v1 import catalogue_pb2
from yrd.peer.v1 import peer_pb2

from core.clock import Clock
from core.db import Database
from core.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PolicyDenied,
    Unavailable,
    Unprocessable,
    YrdError,
    clip,
)
from node import metrics
from node.cases.admission import admit, check_sender, check_transfer
from node.cases.deadlines import bundle_due_ms, iso
from node.cases.origin import Origin, apply_delivery_receipt, apply_status_update, new_application_id
from node.cases.owner import Owner
from node.cases.requests import Attachment, Principal, SubmitRequest
from node.cases.statuses import FINAL
from node.delivery.outbox import enqueue
from node.delivery.peer_server import item_receipt
from node.delivery.relaying import DELIVER, address
from node.models import (
    Application,
    ApplicationResult,
    BundlePart,
    BundleRun,
    InboundApplication,
    OutboxEntry,
    ResultDocument,
    StatusEvent,
)
from node.trust.envelope import DEFAULT_MAX_SKEW_MS
from node.trust.keyring import Trust
from node.trust.sealing import seal, unseal
from registry.bundles import ancestors, component_problems, components, is_bundle, longest_path_days, order
from registry.forms import validate_form
from registry.lookup import CatalogueIndex

log = logging.getLogger(__name__)

Outcome = peer_pb2.ReceiptOutcome
ServiceDefinition = catalogue_pb2.ServiceDefinition

RESUBMIT_PURPOSE = "bundle-resubmit"
COMPONENTS_KEY = "yrd.components"
DUE_KEY = "yrd.due_at"
FAILED = frozenset({"rejected", "needs_materials", "refused"})
MAX_RESULTS = 120
MAX_RESULT_NAME = 100
MAX_RESULT_VALUE = 2000
MAX_SNAPSHOT_VALUE = 64 * 1024
# Failures of these kinds are the part's own (its form, its materials, a policy): the clerk
# must correct them. Anything else (a catalogue not synced yet, a closed database) is retried.
_PART_FAILURES = (InvalidInput, Unprocessable, Conflict, PolicyDenied)
# A bundle naming a part no catalogue we hold lists waits this long for the members whose
# catalogue we have not yet pulled, looking again every CATALOGUE_RETRY_S, then is refused.
CATALOGUE_WAIT_MS = 15 * 60_000
CATALOGUE_RETRY_S = 2.0


@dataclass
class _Run:
    run: BundleRun
    inbound: InboundApplication
    defn: ServiceDefinition
    payload: peer_pb2.ApplicationPayload
    parts: dict[str, BundlePart]
    apps: dict[str, Application]
    results: dict[str, dict[str, str]]


def results_problem(results: Any) -> str | None:
    """Why a status change's results are not acceptable from a peer, or None."""
    if len(results) > MAX_RESULTS:
        return f"more than {MAX_RESULTS} results"
    for name, value in results.items():
        limit = MAX_SNAPSHOT_VALUE if name == COMPONENTS_KEY else MAX_RESULT_VALUE
        if not name or len(name) > MAX_RESULT_NAME or len(value) > limit:
            return f"result {clip(name)} is empty, or its name or value too long"
    return None


def build_form(
    component: catalogue_pb2.BundleComponent,
    target: ServiceDefinition,
    shared: dict[str, Any],
    results: dict[str, dict[str, str]],
    correction: dict[str, Any],
) -> dict[str, Any]:
    """A part's form: each mapping's value (from the shared form, or from an earlier part's
    results, typed as the part's field), then the clerk's corrections over them."""
    types = {f.name: f.type for f in target.form}
    form: dict[str, Any] = {}
    for m in component.mappings:
        source, _, name = m.source.partition(".")
        value: Any = shared.get(name) if source == "form" else results.get(source, {}).get(name)
        if value is None:
            continue
        if isinstance(value, str) and types.get(m.to) == catalogue_pb2.FieldType.FIELD_TYPE_INTEGER:
            value = int(value) if value.isdigit() else value
        form[m.to] = value
    form.update(correction)
    return form


class Bundles:
    def __init__(
        self,
        *,
        db: Database,
        trust: Trust,
        catalogue: CatalogueIndex,
        origin: Origin,
        owner: Owner,
        clock: Clock,
        wake: Callable[[str], None],
        poll_interval_s: float,
        max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
        unsynced: Callable[[], list[str]] = list,
    ) -> None:
        """``unsynced`` names the members whose catalogue this node has not pulled yet
        (node/delivery/catalogue_sync.py): until they are known, a missing part may only be late."""
        self.db, self.trust, self.catalogue, self.origin, self.owner = db, trust, catalogue, origin, owner
        self.unsynced = unsynced
        self._next_look: dict[str, float] = {}
        self.clock, self.wake, self.poll_interval_s, self.max_skew_ms = (
            clock,
            wake,
            poll_interval_s,
            max_skew_ms,
        )
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def _lookup(self, service_id: str) -> ServiceDefinition | None:
        try:
            return self.catalogue.get(service_id)
        except NotFound:
            return None

    # -- at the lead: a bundle arrives (inside the owner's transaction) -----------------------

    def start_run(
        self,
        s: Session,
        row: InboundApplication,
        defn: ServiceDefinition,
        payload: peer_pb2.ApplicationPayload,
        now: int,
    ) -> None:
        """One part per component, or the bundle refused when the union catalogue shows it
        cannot be routed (a component unknown, a mapping to a field it lacks). A component
        missing while some member's catalogue is not yet pulled may only be late: the run
        then starts without parts, says so in the bundle's status, and the runner looks
        again (``_look_again``) until the part is known or the wait is over."""
        run = BundleRun(id=row.id, service_id=defn.service_id, created_at_ms=now, due_at_ms=now)
        waiting = self._verdict(s, row, defn, run, now)
        if waiting:
            s.add(run)
            why = f"等待目录同步 waiting for the catalogues of {', '.join(waiting)}"
            self.owner.emit(s, row, "in_review", now, reason=f"{why}: {self._missing(defn)[0]}")

    def _missing(self, defn: ServiceDefinition) -> list[str]:
        return [c.service_id for c in components(defn) if self._lookup(c.service_id) is None]

    def _verdict(
        self, s: Session, row: InboundApplication, defn: ServiceDefinition, run: BundleRun, now: int
    ) -> list[str]:
        """Start the parts, refuse the bundle, or name the members it waits for (returned)."""
        problems = list(component_problems(defn, self._lookup))
        if not problems:
            comps = components(defn)
            limits = {c.name: self.catalogue.get(c.service_id).time_limit_days for c in comps}
            run.due_at_ms = bundle_due_ms(now, longest_path_days(comps, limits))
            s.add(run)
            for c in comps:
                s.add(BundlePart(bundle_id=row.id, name=c.name, service_id=c.service_id))
            return []
        waiting = self.unsynced()
        only_missing = len(problems) == len(self._missing(defn))
        if waiting and only_missing and now < run.created_at_ms + CATALOGUE_WAIT_MS:
            return waiting
        field, problem = problems[0]
        if waiting and only_missing:
            problem += f" (the catalogues of {', '.join(waiting)} still not pulled)"
        self.owner.emit(s, row, "rejected", now, reason=f"bundle_invalid: {field}: {problem}")
        return []

    async def _look_again(self, bundle_id: str) -> None:
        """A run waiting for catalogues: start its parts, refuse it, or wait (``Unavailable``,
        so the runner keeps it unhandled and comes back)."""
        now = self.clock.now_ms()

        def look(s: Session) -> bool:
            run = s.get(BundleRun, bundle_id)
            row = s.get(InboundApplication, bundle_id)
            defn = self.owner.services().get(run.service_id) if run is not None else None
            if run is None or row is None or defn is None or row.status in FINAL:
                return False
            return bool(self._verdict(s, row, defn, run, now))

        if await self.db.run(look):
            self._next_look[bundle_id] = self.clock.monotonic() + CATALOGUE_RETRY_S
            raise Unavailable("a part's catalogue is not pulled yet", code="catalogue_not_synced")
        self._next_look.pop(bundle_id, None)

    # -- at the lead: status changes and receipts of parts (inside the sender's transaction) ----

    def apply_status(self, s: Session, sender: str, update: peer_pb2.StatusUpdate) -> peer_pb2.Receipt:
        """The origin's status change, plus its results kept and the bundle it moves woken."""
        problem = results_problem(update.results)
        if problem is not None:
            return item_receipt(
                update.application_id, Outcome.RECEIPT_OUTCOME_REJECTED, "malformed_status", problem, 0
            )
        receipt = apply_status_update(s, sender, update)
        if receipt.outcome != Outcome.RECEIPT_OUTCOME_ACCEPTED:
            return receipt
        for name, value in update.results.items():
            kept = s.get(ApplicationResult, (update.application_id, name))
            if kept is None:
                s.add(
                    ApplicationResult(
                        application_id=update.application_id, name=name, value=value, sequence=update.sequence
                    )
                )
            elif update.sequence > kept.sequence:
                kept.value, kept.sequence = value, update.sequence
                s.add(kept)
        self._touch(s, update.application_id)
        return receipt

    def on_receipt(
        self, s: Session, app_id: str, from_node: str, receipt: peer_pb2.Receipt, envelope: bytes, at_ms: int
    ) -> None:
        apply_delivery_receipt(s, app_id, from_node, receipt, envelope, at_ms)
        self._touch(s, app_id)

    @staticmethod
    def _touch(s: Session, app_id: str) -> None:
        part = s.exec(select(BundlePart).where(BundlePart.application_id == app_id)).first()
        if part is not None and (run := s.get(BundleRun, part.bundle_id)) is not None:
            run.wanted += 1
            s.add(run)

    # -- at the lead: the runner ---------------------------------------------------------------

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name="bundles")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self.run_once()
            except YrdError as e:  # the database is closing, or is unreachable for now
                log.warning("bundle runner: %s", e.code)
            await asyncio.sleep(self.poll_interval_s)

    async def run_once(self) -> int:
        """Move every bundle with unhandled events; the number moved."""

        def pending(s: Session) -> list[tuple[str, int]]:
            stmt = select(BundleRun).where(col(BundleRun.wanted) > col(BundleRun.handled))
            return [(r.id, r.wanted) for r in s.exec(stmt).all()]

        moved = 0
        for bundle_id, wanted in await self.db.run(pending):
            try:
                await self.advance(bundle_id)
            except YrdError as e:  # retried at the next pass; nothing was marked handled
                quiet = e.code == "catalogue_not_synced"  # said once, in the bundle's status
                log.log(logging.DEBUG if quiet else logging.INFO, "bundle %s waits: %s", bundle_id, e.code)
                continue
            except Exception as e:  # one damaged bundle must not stop the others
                log.warning("bundle %s cannot move: %r", bundle_id, e)
                continue
            await self.db.run(functools.partial(self._handled, bundle_id=bundle_id, wanted=wanted))
            moved += 1
        return moved

    @staticmethod
    def _handled(s: Session, bundle_id: str, wanted: int) -> None:
        run = s.get(BundleRun, bundle_id)
        if run is not None and run.handled < wanted:
            run.handled = wanted
            s.add(run)

    def _state(self, s: Session, bundle_id: str) -> _Run | None:
        run = s.get(BundleRun, bundle_id)
        inbound = s.get(InboundApplication, bundle_id)
        defn = self.owner.services().get(run.service_id) if run is not None else None
        if run is None or inbound is None or defn is None:
            return None
        payload = peer_pb2.ApplicationPayload.FromString(
            unseal(self.trust.opening_keys(), inbound.sealed_payload)
        )
        parts = {p.name: p for p in s.exec(select(BundlePart).where(BundlePart.bundle_id == bundle_id)).all()}
        apps: dict[str, Application] = {}
        results: dict[str, dict[str, str]] = {}
        for name, part in parts.items():
            if part.application_id and (app := s.get(Application, part.application_id)) is not None:
                apps[name] = app
                rows = s.exec(
                    select(ApplicationResult).where(ApplicationResult.application_id == app.id)
                ).all()
                results[name] = {r.name: r.value for r in rows}
        return _Run(run, inbound, defn, payload, parts, apps, results)

    def _status(self, st: _Run, name: str) -> str:
        part = st.parts[name]
        if part.failure:
            return "refused"
        if name in st.apps:
            return st.apps[name].status
        return "waiting"

    async def advance(self, bundle_id: str) -> None:
        if self.clock.monotonic() < self._next_look.get(bundle_id, 0.0):
            raise Unavailable("waits for a catalogue", code="catalogue_not_synced")
        st = await self.db.run(lambda s: self._state(s, bundle_id))
        if st is None or st.inbound.status in FINAL:
            return
        if not st.parts:
            await self._look_again(bundle_id)
            st = await self.db.run(lambda s: self._state(s, bundle_id))
            if st is None or st.inbound.status in FINAL:
                return
        by_name = {c.name: c for c in components(st.defn)}
        for name in order(components(st.defn)):
            part = st.parts.get(name)
            if part is None or part.application_id or part.failure:
                continue
            if all(self._status(st, dep) == "completed" for dep in by_name[name].after):
                await self._submit_part(st, by_name[name], part)
        now = self.clock.now_ms()
        await self.db.run(lambda s: self._report(s, bundle_id, now))
        self.wake(self.trust.next_hop(st.inbound.origin_node))

    async def _submit_part(self, st: _Run, comp: catalogue_pb2.BundleComponent, part: BundlePart) -> None:
        target = self.catalogue.get(comp.service_id)  # NotFound: not synced yet, retried
        shared = json.loads(st.payload.form_json or b"{}")
        correction, extra = self._correction(part)
        form = build_form(comp, target, shared, st.results, correction)
        wanted = {m.name for m in target.materials}
        attachments = {a.material: a for a in st.payload.attachments if a.material in wanted}
        attachments.update({a.material: a for a in extra if a.material in wanted})
        req = SubmitRequest(
            service_id=comp.service_id,
            applicant_name=st.payload.applicant_name,
            applicant_id_number=st.payload.applicant_id_number,
            form=form,
            attachments=tuple(
                Attachment(a.material, a.filename, a.content_type, a.data) for a in attachments.values()
            ),
            consent=True,  # the bundle's own consent, checked when it was admitted
            purpose=st.inbound.purpose,
        )
        principal = Principal(username=f"bundle:{st.run.id}", role="clerk")
        key = f"{st.run.id}.{comp.name}.{part.attempt}"
        try:
            created = await self.origin.submit(principal, key, req)
        except _PART_FAILURES as e:
            failure = f"{e.code}: {e.field + ': ' if e.field else ''}{e.reason}"
            await self.db.run(lambda s: self._set_part(s, part, failure=failure))
            metrics.BUNDLE_PARTS.labels(outcome="refused").inc()
            return
        await self.db.run(lambda s: self._set_part(s, part, application_id=created["id"]))
        metrics.BUNDLE_PARTS.labels(outcome="submitted").inc()
        log.info(
            "bundle %s: part %s attempt %d is application %s",
            st.run.id,
            comp.name,
            part.attempt,
            created["id"],
        )

    @staticmethod
    def _set_part(s: Session, seen: BundlePart, *, application_id: str = "", failure: str = "") -> None:
        part = s.get(BundlePart, (seen.bundle_id, seen.name))
        if part is None or part.attempt != seen.attempt:
            return  # resubmitted meanwhile: the new attempt is the runner's next work
        part.application_id, part.failure = application_id, failure
        s.add(part)

    def _correction(self, part: BundlePart) -> tuple[dict[str, Any], list[peer_pb2.Attachment]]:
        if not part.sealed_correction:
            return {}, []
        payload = peer_pb2.ApplicationPayload.FromString(
            unseal(self.trust.opening_keys(), part.sealed_correction)
        )
        doc = json.loads(payload.form_json)
        return dict(doc["form"]), list(payload.attachments)

    def _report(self, s: Session, bundle_id: str, now: int) -> None:
        """Tell the counter how the whole goes, when that changed since it was last told."""
        st = self._state(s, bundle_id)
        if st is None or st.inbound.status in FINAL:
            return
        view = self._components_view(s, st)
        failed = [c for c in view if c["status"] in FAILED]
        done = all(c["status"] == "completed" for c in view)
        status = "completed" if done else "needs_materials" if failed else "in_review"
        results = {COMPONENTS_KEY: json.dumps(view, ensure_ascii=False, sort_keys=True)}
        results[DUE_KEY] = iso(st.run.due_at_ms)
        for name, values in st.results.items():
            results.update({f"{name}.{k}": v for k, v in values.items() if not k.startswith("yrd.")})
        digest = hashlib.sha256(f"{status}\0{results[COMPONENTS_KEY]}".encode()).hexdigest()
        if digest == st.run.sent_digest:
            return
        st.run.sent_digest = digest
        s.add(st.run)
        if done:
            docs = [
                peer_pb2.Document(name=f"{name}-{d.name}", content_type=d.content_type, data=d.data)
                for name, app in st.apps.items()
                for d in s.exec(select(ResultDocument).where(ResultDocument.application_id == app.id)).all()
            ]
            reason = "全部事项办结 every part completed"
            self.owner.emit(s, st.inbound, "approved", now, reason=reason, results=results)
            self.owner.emit(s, st.inbound, "completed", now, reason=reason, documents=docs, results=results)
            return
        if failed:
            reason = "；".join(
                f"{c['name']}（{c['service_name']}）{c['status']}：{c['reason']}" for c in failed
            )
        else:
            finished = sum(1 for c in view if c["status"] == "completed")
            reason = f"已办结 {finished}/{len(view)} parts completed"
        self.owner.emit(s, st.inbound, status, now, reason=reason[:1000], results=results)

    def _components_view(self, s: Session, st: _Run) -> list[dict[str, Any]]:
        comps = components(st.defn)
        limits = {c.name: (d.time_limit_days if (d := self._lookup(c.service_id)) else 0) for c in comps}
        ends = longest_path_days(comps, limits)
        failed = {n for n in st.parts if self._status(st, n) in FAILED}
        out = []
        for c in comps:
            part = st.parts[c.name]
            defn = self._lookup(c.service_id)
            app = st.apps.get(c.name)
            status = self._status(st, c.name)
            reason = part.failure
            if app is not None:
                last = s.exec(
                    select(StatusEvent)
                    .where(StatusEvent.application_id == app.id)
                    .order_by(col(StatusEvent.sequence).desc())
                ).first()
                reason = last.reason if last is not None else ""
            elif status == "waiting" and failed & ancestors(comps, c.name):
                status = "blocked"
                reason = "等待前置事项更正 waits for a failed part: " + ", ".join(
                    sorted(failed & ancestors(comps, c.name))
                )
            try:
                owner_node = (
                    app.owner_node
                    if app
                    else self.trust.manifest.owner_of(defn.owner).node_id
                    if defn
                    else ""
                )
            except NotFound:
                owner_node = ""
            out.append(
                {
                    "name": c.name,
                    "service_id": c.service_id,
                    "service_name": defn.name if defn else "",
                    "department": defn.department if defn else "",
                    "owner": defn.owner if defn else "",
                    "owner_node": owner_node,
                    "after": list(c.after),
                    "status": status,
                    "attempt": part.attempt,
                    "application_id": app.id if app else "",
                    "due_at": iso(app.due_at_ms)
                    if app
                    else iso(bundle_due_ms(st.run.created_at_ms, ends[c.name])),
                    "reason": reason[:500],
                    "results": st.results.get(c.name, {}),
                }
            )
        return out

    # -- at the lead: a clerk's correction arrives (inside the receiver's transaction) ----------

    def accept(self, s: Session, sender: str, t: peer_pb2.ApplicationTransfer, now: int) -> peer_pb2.Receipt:
        """An application for the owner, or a bundle part's resubmission for the runner."""
        if t.purpose != RESUBMIT_PURPOSE:
            return self.owner.accept(s, sender, t, now)
        try:
            check_sender(t, sender)
            return self._resubmission(s, sender, t, now)
        except Unavailable as e:  # stamped ahead by a skewed member (admission.MAX_AHEAD_MS)
            return item_receipt(t.application_id, Outcome.RECEIPT_OUTCOME_RETRY, e.code, e.reason, now)
        except YrdError as e:
            log.info("refused resubmission %r from %s: %s", t.application_id[:100], sender, e.code)
            reason = f"{e.field}: {e.reason}" if e.field else e.reason
            return item_receipt(t.application_id, Outcome.RECEIPT_OUTCOME_REJECTED, e.code, reason, now)

    def _resubmission(
        self, s: Session, sender: str, t: peer_pb2.ApplicationTransfer, now: int
    ) -> peer_pb2.Receipt:
        defn = check_transfer(
            t, self.owner.services().get(t.service_id), now_ms=now, max_skew_ms=self.max_skew_ms
        )
        if not is_bundle(defn):
            raise InvalidInput(
                f"{clip(t.service_id)} is not a bundle", code="not_a_bundle", field="service_id"
            )
        try:
            payload = peer_pb2.ApplicationPayload.FromString(
                unseal(self.trust.opening_keys(), t.sealed_payload)
            )
            doc = json.loads(payload.form_json.decode("utf-8"))
        except Exception as e:
            raise InvalidInput("the sealed resubmission does not open", code="sealed_payload_invalid") from e
        if not (
            isinstance(doc, dict)
            and isinstance(doc.get("bundle"), str)
            and isinstance(doc.get("component"), str)
            and type(doc.get("attempt")) is int
            and isinstance(doc.get("form"), dict)
        ):
            raise InvalidInput(
                "bundle, component, attempt and form are required", code="invalid_resubmission"
            )
        run = s.get(BundleRun, doc["bundle"])
        inbound = s.get(InboundApplication, doc["bundle"])
        if run is None or inbound is None or inbound.origin_node != sender or run.service_id != t.service_id:
            raise NotFound(
                f"no bundle {clip(doc['bundle'])} from {sender}", code="unknown_bundle", field="bundle"
            )
        part = s.get(BundlePart, (run.id, doc["component"]))
        if part is None:
            raise NotFound(f"no part {clip(doc['component'])}", code="unknown_component", field="component")
        if doc["attempt"] <= part.attempt:
            return item_receipt(
                t.application_id, Outcome.RECEIPT_OUTCOME_DUPLICATE, "duplicate", "already resubmitted", now
            )
        if doc["attempt"] != part.attempt + 1:
            raise Conflict(f"the part is at attempt {part.attempt}", code="stale_attempt", field="attempt")
        st = self._state(s, run.id)
        assert st is not None  # the run, its application and its definition were all just found
        if self._status(st, part.name) not in FAILED:
            raise Conflict(f"part {part.name} has not failed", code="component_not_failed", field="component")
        comp = next(c for c in components(defn) if c.name == part.name)
        target = self.catalogue.get(comp.service_id)
        form = build_form(comp, target, json.loads(st.payload.form_json or b"{}"), st.results, doc["form"])
        materials = {a.material for a in st.payload.attachments} | {a.material for a in payload.attachments}
        admit(
            target,
            applicant_name=st.payload.applicant_name,
            applicant_id_number=st.payload.applicant_id_number,
            form=form,
            materials=sorted(m for m in materials if m in {x.name for x in target.materials}),
            consent=True,
            purpose=inbound.purpose,
        )
        part.attempt, part.application_id, part.failure = doc["attempt"], "", ""
        part.sealed_correction = t.sealed_payload
        run.wanted += 1
        s.add(part)
        s.add(run)
        metrics.BUNDLE_PARTS.labels(outcome="resubmitted").inc()
        log.info("bundle %s: part %s resubmitted, attempt %d", run.id, part.name, part.attempt)
        return item_receipt(
            t.application_id, Outcome.RECEIPT_OUTCOME_ACCEPTED, "accepted", "resubmitted", now
        )

    # -- at the counter ----------------------------------------------------------------------

    async def view(self, app_id: str) -> dict[str, Any]:
        """What the lead last said about a bundle's parts: ``components``, ``results`` and
        the promised ``bundle_due_at``; empty for an application that is no bundle."""
        rows = await self.db.run(
            lambda s: list(
                s.exec(select(ApplicationResult).where(ApplicationResult.application_id == app_id)).all()
            )
        )
        values = {r.name: r.value for r in rows}
        out: dict[str, Any] = {}
        if values:
            out["results"] = {k: v for k, v in values.items() if not k.startswith("yrd.")}
        snapshot = parse_snapshot(values.get(COMPONENTS_KEY))
        if snapshot is not None:
            out["components"] = snapshot
            if DUE_KEY in values:
                out["bundle_due_at"] = values[DUE_KEY]
        return out

    async def resubmit(
        self,
        principal: Principal,
        app_id: str,
        name: str,
        form: dict[str, Any],
        attachments: Sequence[Attachment],
    ) -> dict[str, Any]:
        """Send the lead a corrected part; the rest of the bundle is left as it is."""
        now = self.clock.now_ms()
        app = await self.db.run(lambda s: s.get(Application, app_id))
        if app is None:
            raise NotFound(
                f"no application {clip(app_id)} at this node", code="unknown_application", field="id"
            )
        defn = self.catalogue.get(app.service_id)
        if not is_bundle(defn):
            raise Conflict(f"{clip(app.service_id)} is not a bundle", code="not_a_bundle", field="id")
        part = next((c for c in (await self.view(app_id)).get("components", []) if c["name"] == name), None)
        if part is None:
            raise NotFound(
                f"no part {clip(name)} in this bundle", code="unknown_component", field="component"
            )
        if part["status"] not in FAILED:
            raise Conflict(
                f"part {name} is {part['status']}, not failed", code="component_not_failed", field="component"
            )
        target = self.catalogue.get(part["service_id"])
        optional = [
            catalogue_pb2.FormField(
                name=f.name,
                label=f.label,
                type=f.type,
                max_length=f.max_length,
                personal=f.personal,
                choices=f.choices,
            )
            for f in target.form
        ]
        checked = validate_form(optional, form)
        known = {m.name for m in target.materials}
        for i, a in enumerate(attachments):
            if a.material not in known:
                raise InvalidInput(
                    f"{clip(a.material)} is not a material of {target.service_id}",
                    code="unknown_material",
                    field=f"attachments[{i}].material",
                )
        attempt = int(part["attempt"]) + 1
        lead = app.owner_node
        payload = peer_pb2.ApplicationPayload(
            form_json=json.dumps(
                {"bundle": app_id, "component": name, "attempt": attempt, "form": checked}, ensure_ascii=False
            ).encode(),
            attachments=[
                peer_pb2.Attachment(
                    material=a.material, filename=a.filename, content_type=a.content_type, data=a.data
                )
                for a in attachments
            ],
        )
        transfer = peer_pb2.ApplicationTransfer(
            application_id=new_application_id(now),
            origin_node=self.trust.node_id,
            service_id=defn.service_id,
            service_version=defn.version,
            submitted_at_ms=now,
            purpose=RESUBMIT_PURPOSE,
            consent=True,
            sealed_payload=seal(self.trust.public_key_of(lead, now), payload.SerializeToString()),
            fields_present=sorted(checked),
        )
        hop, body = address(
            self.trust, lead, DELIVER, peer_pb2.DeliverItem(application=transfer).SerializeToString(), now
        )
        item_id = f"{app_id}-{name.replace('_', '-')}-{attempt}"

        def store(s: Session) -> None:
            queued = s.exec(select(OutboxEntry).where(OutboxEntry.item_id == item_id)).first()
            if queued is None:  # a clerk's retry of the same correction is sent once
                enqueue(
                    s, next_hop=hop, destination=lead, method=DELIVER, item_id=item_id, body=body, now_ms=now
                )

        await self.db.run(store)
        self.wake(hop)
        log.info(
            "bundle %s: part %s resubmitted by %s, attempt %d", app_id, name, principal.username, attempt
        )
        return {"id": app_id, "component": name, "attempt": attempt, "status": "resubmitted"}


_VIEW_KEYS = {
    "name": str,
    "service_id": str,
    "service_name": str,
    "department": str,
    "owner": str,
    "owner_node": str,
    "after": list,
    "status": str,
    "attempt": int,
    "application_id": str,
    "due_at": str,
    "reason": str,
    "results": dict,
}


def parse_snapshot(raw: str | None) -> list[dict[str, Any]] | None:
    """The lead's parts snapshot, each entry with exactly the keys and types it should
    have; None (and a log line) for one that is malformed: a peer's text is not trusted."""
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if isinstance(doc, list) and all(
        isinstance(c, dict)
        and set(c) == set(_VIEW_KEYS)
        and all(
            isinstance(c[k], t) and not (t is int and isinstance(c[k], bool)) for k, t in _VIEW_KEYS.items()
        )
        for c in doc
    ):
        return doc
    log.warning("ignored a malformed bundle snapshot")
    return None
