"""A failed part's correction, at both ends: the counter checks it against the part's own
form and sends it to the lead as an application with purpose ``bundle-resubmit``; the lead
opens it, checks it with the part's admission and starts only that part again."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from google.protobuf.message import DecodeError
from sqlmodel import Session, select
from yrd.catalogue.v1 import catalogue_pb2
from yrd.peer.v1 import peer_pb2

from core.errors import Conflict, InvalidInput, NotFound, Unavailable, YrdError, clip
from core.ids import new_id
from core.json_doc import parse_json_object
from node import metrics
from node.cases.admission import admit, check_sender, check_transfer
from node.cases.bundles.routing import build_form
from node.cases.bundles.state import FAILED, Outcome
from node.cases.bundles.status import Status
from node.cases.requests import Attachment, Principal
from node.delivery.outbox import enqueue
from node.delivery.peer_server import item_receipt
from node.delivery.relaying import DELIVER, address
from node.models import Application, BundlePart, BundleRun, InboundApplication, OutboxEntry
from node.trust.sealing import seal, unseal
from registry.bundles import components, is_bundle
from registry.forms import validate_form

log = logging.getLogger(__name__)


RESUBMIT_PURPOSE = "bundle-resubmit"


class Resubmission(Status):
    # -- at the lead: a clerk's correction arrives (inside the receiver's transaction) ----------

    def accept(
        self, s: Session, sender: str, t: peer_pb2.ApplicationTransfer, now: int, direct: bool = False
    ) -> peer_pb2.Receipt:
        """An application for the owner (``direct``: see ``Owner.accept``), or a bundle part's
        resubmission for the runner."""
        if t.purpose != RESUBMIT_PURPOSE:
            return self.owner.accept(s, sender, t, now, direct)
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
            doc = parse_json_object(payload.form_json, field="form_json")
        except (YrdError, DecodeError, ValueError) as e:  # not ours to open, not a payload, not JSON
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
        self._stir(s)
        s.add(part)
        s.add(run)
        metrics.BUNDLE_PARTS.labels(outcome="resubmitted").inc()
        log.info("bundle %s: part %s resubmitted, attempt %d", run.id, part.name, part.attempt)
        return item_receipt(
            t.application_id, Outcome.RECEIPT_OUTCOME_ACCEPTED, "accepted", "resubmitted", now
        )

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
        try:
            target = self.catalogue.get(part["service_id"])
        except NotFound as e:  # the lead knows the part's owner; this counter has not pulled it yet
            raise Unavailable(
                f"part {name}'s service {clip(part['service_id'])} is not in this node's catalogue yet",
                code="catalogue_not_synced",
            ) from e
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
            application_id=new_id(now),
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
