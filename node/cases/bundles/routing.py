"""Parts on their way: each submitted from the lead through ``Origin.submit`` (the same
admission, policy and outbox as a clerk's) with its form built from the shared form, earlier
parts' results and the clerk's correction; the parts' status changes and receipts taken in,
their results kept and the bundle they move woken. Status changes cross a trust boundary:
they are checked whole, their results bounded, before any is applied
(node/cases/status_checks.py)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy import select as sa_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session
from yrd.catalogue.v1 import catalogue_pb2
from yrd.peer.v1 import peer_pb2

from core.errors import Conflict, InvalidInput, PolicyDenied, Unprocessable
from core.statements import Statement, driver
from node import metrics
from node.cases.bundles.state import BundleCore, RunState, ServiceDefinition
from node.cases.origin import AppHead, apply_status_run, take_delivery_receipt
from node.cases.requests import Attachment, Principal, SubmitRequest
from node.models import ApplicationResult, BundlePart, BundleRun
from node.trust.sealing import unseal

# Whom a part is submitted as (``bundle:<run id>``): no account can have the name, as the
# counter's usernames have no colon (node/counter/users.py), so an application submitted by
# anyone else is no bundle's part, and its status changes and receipts wake nothing.
PART_SUBMITTER = "bundle:"

_RUNS = BundleRun.__table__  # type: ignore[attr-defined]
_PARTS = BundlePart.__table__  # type: ignore[attr-defined]
_RESULTS = ApplicationResult.__table__  # type: ignore[attr-defined]
# One prebuilt statement for a part's status changes and receipts at the lead: an ORM lookup
# of the part and then its run cost 6-7 % of the database's time under load (docs/performance.md).
_TOUCH = (
    _RUNS.update()
    .where(
        _RUNS.c.id
        == sa_select(_PARTS.c.bundle_id)
        .where(_PARTS.c.application_id == bindparam("app_id"))
        .scalar_subquery()
    )
    .values(wanted=_RUNS.c.wanted + 1)
)


def _keep_results(insert: sqlite.Insert | postgresql.Insert) -> sqlite.Insert | postgresql.Insert:
    return insert.on_conflict_do_update(
        index_elements=[_RESULTS.c.application_id, _RESULTS.c.name],
        set_={"value": insert.excluded.value, "sequence": insert.excluded.sequence},
        where=_RESULTS.c.sequence < insert.excluded.sequence,
    )


# A result is kept unless one of a later change is (``INSERT ... ON CONFLICT DO UPDATE ...
# WHERE``): one statement for all of a run's results, with no read before it and nothing
# left in the session to flush, where an ORM get per name and a flush cost 1.2 % of the
# pipeline's samples (docs/performance.md "Fifth round").
_KEEP_RESULTS = Statement(
    {
        name: _keep_results(dialect.insert(_RESULTS))
        for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))
    }
)

log = logging.getLogger(__name__)


# Failures of these kinds are the part's own (its form, its materials, a policy): the clerk
# must correct them. Anything else (a catalogue not synced yet, a closed database) is retried.
_PART_FAILURES = (InvalidInput, Unprocessable, Conflict, PolicyDenied)


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


class Routing(BundleCore):
    # -- at the lead: status changes and receipts of parts (inside the sender's transaction) ----

    def apply_status(
        self, s: Session, sender: str, updates: Sequence[peer_pb2.StatusUpdate]
    ) -> peer_pb2.Receipt:
        """The origin's status changes (one, or a run), plus the results of those applied
        kept (the highest change's value of each name) and the bundle they move woken."""
        receipt, applied, app = apply_status_run(s, sender, updates)
        if not applied or app is None:
            return receipt
        latest: dict[str, tuple[int, str]] = {}
        for update in applied:  # in sequence order: a later change's value wins
            latest.update({name: (update.sequence, value) for name, value in update.results.items()})
        if latest:
            kept = [
                {"application_id": app.id, "name": name, "value": value, "sequence": sequence}
                for name, (sequence, value) in latest.items()
            ]
            driver(s).executemany(_KEEP_RESULTS, kept)
        self._touch(s, app)
        return receipt

    def on_receipt(
        self, s: Session, app_id: str, from_node: str, receipt: peer_pb2.Receipt, envelope: bytes, at_ms: int
    ) -> bool:
        """Take the receipt of an application's delivery; False when no application of this
        node has that id (the item is another kind's: a clue, a data request)."""
        app = take_delivery_receipt(s, app_id, from_node, receipt, envelope, at_ms)
        if app is None:
            return False
        self._touch(s, app)
        return True

    def _touch(self, s: Session, app: AppHead) -> None:
        """Wake the bundle whose part this is. Most applications are nobody's part, which
        who submitted them tells without a statement."""
        if app.submitted_by.startswith(PART_SUBMITTER):
            s.connection().execute(_TOUCH, {"app_id": app.id})
            self._stir(s)

    async def _submit_part(self, st: RunState, comp: catalogue_pb2.BundleComponent, part: BundlePart) -> None:
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
        principal = Principal(username=f"{PART_SUBMITTER}{st.run.id}", role="clerk")
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
