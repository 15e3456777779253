"""The node core behind the counter API, shared by the HTTP front and the gRPC
CounterService: catalogue lookups, submission at the origin, the owner's work queue,
health and the policy decision log.

This is also the one place where roles are enforced, so both doors (and any method
added to either) get the same answer. What each role may do:

=============  ======  ====================  =========  =========  ======  ==============
role           submit  read an application   release    worklist   decide  decision log
=============  ======  ====================  =========  =========  ======  ==============
clerk          yes     those they submitted  no         no         no      no
owner_clerk    no      no                    no         own dept   own     no
supervisor     yes     all at the node       not own    all        all     yes
operator       no      no                    no         no         no      yes
=============  ======  ====================  =========  =========  ======  ==============

Clues: clerk and supervisor submit (a clerk reads those they submitted); an owner clerk reads
and handles the tasks of their own department; a supervisor reads and handles all.

Data sharing (docs/sharing.md): every role searches the data catalogue. A clerk, owner clerk or
supervisor queries and files data requests: an owner clerk for their own department, a clerk for
the counter, a supervisor for the counter or any department it names. An owner clerk decides and
revokes requests for their own department's resources, a supervisor for all. Disclosure logs: an
operator or supervisor reads them all; a clerk or owner clerk only one person's, by the id the
person shows at the counter. The meter: operator and supervisor.

E-certificates: clerk, owner clerk and supervisor verify one (operator: no, it shows a holder).

"Own dept" is what this node owns under the catalogue's ``department`` of the service.
An application a role may not read is answered as not found, so ids cannot be probed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlmodel import Session, col, func, select
from yrd.federation.v1 import manifest_pb2

from core.clock import Clock
from core.db import Database
from core.errors import CertificateRejected, NotFound, PermissionDenied, clip
from node import metrics
from node.cases.bundles.runner import Bundles
from node.cases.clue_checks import ClueRequest
from node.cases.clues import Clues
from node.cases.origin import Origin
from node.cases.owner import Owner
from node.cases.policy_gate import PolicyGate
from node.cases.requests import Attachment, Document, Principal, SubmitRequest
from node.cases.statuses import FINAL
from node.counter.users import CLERK, OPERATOR, OWNER_CLERK, SUPERVISOR
from node.delivery import outbox
from node.models import Application, InboundApplication, OutboxEntry, PeerState
from node.sharing import records as data_records
from node.sharing.asker import DataAsker
from node.sharing.checks import COUNTER, DataRequestIn, QueryRequest, check_subject
from node.sharing.holder import DataHolder
from node.trust.keyring import Trust
from node.trust.secret import derived_key
from registry import certificates
from registry.data_catalogue import resource_to_api
from registry.lookup import CatalogueIndex
from registry.manifest import TrustedManifest

log = logging.getLogger(__name__)

# The console warns this long before a key of this node stops being valid.
KEY_WARNING_MS = 30 * 86_400_000
OPEN_AT_OWNER = frozenset({"in_review", "needs_materials"})


async def _no_stalled_peers() -> list[str]:
    return []


class NodeBackend:
    # Peers whose link makes no progress (Delivery.stalled_peers, set by the composition root).
    stalled_peers: Callable[[], Awaitable[list[str]]] = staticmethod(_no_stalled_peers)
    # Bundles (一件事): their parts in an application's view, and resubmission (set by the root).
    bundles: Bundles | None = None

    def __init__(
        self,
        *,
        db: Database,
        trust: Trust,
        catalogue: CatalogueIndex,
        origin: Origin,
        owner: Owner,
        policy: PolicyGate,
        clock: Clock,
        clues: Clues,
        data_asker: DataAsker,
        data_holder: DataHolder,
        secret: bytes,
    ) -> None:
        self.db, self.trust, self.catalogue, self.origin, self.owner = db, trust, catalogue, origin, owner
        self.policy, self.clock, self.clues = policy, clock, clues
        self.data_asker, self.data_holder = data_asker, data_holder
        self._check_key = derived_key(secret, b"check-code")

    async def list_services(self, q: str | None, owner: str | None) -> list[dict[str, Any]]:
        return [self.catalogue.to_api(d) for d in self.catalogue.search(q, owner)]

    async def replay(self, principal: Principal, idempotency_key: str, digest: str) -> dict[str, Any] | None:
        return await self.origin.replay(principal, idempotency_key, digest)

    async def submit(
        self, principal: Principal, idempotency_key: str, request: SubmitRequest
    ) -> dict[str, Any]:
        require(principal, "submit applications", CLERK, SUPERVISOR)
        return await self.origin.submit(principal, idempotency_key, request)

    async def release(self, principal: Principal, app_id: str) -> dict[str, Any]:
        """Four eyes: a supervisor who is not the submitter (Origin.release checks the latter)."""
        require(principal, "release held applications", SUPERVISOR)
        return await self.origin.release(principal, app_id)

    async def get_application(self, principal: Principal, app_id: str) -> dict[str, Any]:
        require(principal, "read applications", CLERK, SUPERVISOR)
        if principal.role == CLERK:
            submitter = await self.db.run(lambda s: _submitter(s, app_id))
            if submitter != principal.username:
                raise _unknown(app_id)
        view = await self.origin.get(app_id)
        if self.bundles is not None:
            view.update(await self.bundles.view(app_id))
        return view

    async def resubmit_component(
        self,
        principal: Principal,
        app_id: str,
        component: str,
        form: dict[str, Any],
        attachments: tuple[Attachment, ...],
    ) -> dict[str, Any]:
        """A failed part of a bundle, corrected by whoever may read the bundle."""
        require(principal, "resubmit applications", CLERK, SUPERVISOR)
        if principal.role == CLERK:
            submitter = await self.db.run(lambda s: _submitter(s, app_id))
            if submitter != principal.username:
                raise _unknown(app_id)
        if self.bundles is None:
            raise _unknown(app_id)
        return await self.bundles.resubmit(principal, app_id, component, form, attachments)

    async def worklist(self, principal: Principal) -> list[dict[str, Any]]:
        require(principal, "read the work queue", OWNER_CLERK, SUPERVISOR)
        return await self.owner.worklist(self._services_of(principal))

    async def decide(
        self,
        principal: Principal,
        app_id: str,
        decision: str,
        reason: str,
        documents: list[Document],
        results: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        require(principal, "decide applications", OWNER_CLERK, SUPERVISOR)
        allowed = self._services_of(principal)
        if allowed is not None:
            service_id = await self.db.run(lambda s: _inbound_service(s, app_id))
            if service_id not in allowed:
                raise NotFound(
                    f"no application {clip(app_id)} for your department",
                    code="unknown_application",
                    field="id",
                )
        return await self.owner.decide(principal, app_id, decision, reason, documents, results)

    def _services_of(self, principal: Principal) -> frozenset[str] | None:
        """The services an owner clerk's department owns here; None for all (a supervisor)."""
        if principal.role != OWNER_CLERK:
            return None
        return frozenset(
            sid for sid, defn in self.owner.services().items() if defn.department == principal.department
        )

    # -- supervision clues (docs/clues.md) --------------------------------------------------------
    # A clerk or supervisor takes a clue in and follows it; the regulator is an owner clerk of
    # the department a task is dispatched to (or a supervisor): it reads, acknowledges, records
    # findings and closes only its own department's tasks. Anything else reads as not found.

    async def submit_clue(
        self, principal: Principal, idempotency_key: str, request: ClueRequest
    ) -> dict[str, Any]:
        require(principal, "submit clues", CLERK, SUPERVISOR)
        return await self.clues.submit(principal, idempotency_key, request)

    async def get_clue(self, principal: Principal, clue_id: str) -> dict[str, Any]:
        require(principal, "read clues", CLERK, OWNER_CLERK, SUPERVISOR)
        return await self.clues.get(principal, clue_id)

    async def list_clues(self, principal: Principal) -> list[dict[str, Any]]:
        require(principal, "list clues", CLERK, OWNER_CLERK, SUPERVISOR)
        return await self.clues.list(principal)

    async def act_on_clue(
        self,
        principal: Principal,
        clue_id: str,
        action: str,
        department: str,
        text: str = "",
        rectification: str = "",
        documents: tuple[Document, ...] = (),
    ) -> dict[str, Any]:
        require(principal, "handle clues", OWNER_CLERK, SUPERVISOR)
        return await self.clues.act(
            principal,
            clue_id,
            action,
            department,
            text=text,
            rectification=rectification,
            documents=documents,
        )

    # -- data sharing (docs/sharing.md) --------------------------------------------------------------

    async def list_data_resources(
        self, principal: Principal, q: str | None, holder: str | None, sharing: str | None
    ) -> list[dict[str, Any]]:
        require(principal, "search the data catalogue", CLERK, OWNER_CLERK, SUPERVISOR, OPERATOR)
        return [resource_to_api(h) for h in self.data_asker.index.search(q, holder, sharing)]

    async def query_data(self, principal: Principal, request: QueryRequest) -> dict[str, Any]:
        require(principal, "query data", CLERK, OWNER_CLERK, SUPERVISOR)
        department = principal.department or COUNTER
        view = await self.data_asker.query(principal.username, principal.role, department, request)
        for item in view["items"]:
            try:
                res = self.data_asker.index.get(item["resource_id"]).resource
            except NotFound:
                continue
            item.update(name=res.name, department=res.department, holder=res.holder)
        return view

    async def request_data(
        self, principal: Principal, request: DataRequestIn, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        require(principal, "request data", CLERK, OWNER_CLERK, SUPERVISOR)
        department = principal.department or COUNTER
        if request.department and request.department != department:
            if principal.role != SUPERVISOR:
                raise PermissionDenied(
                    "only a supervisor files a request for another department", code="department_not_yours"
                )
            department = request.department
        return await self.data_asker.request(principal.username, department, request, idempotency_key)

    async def list_data_requests(self, principal: Principal) -> dict[str, Any]:
        require(principal, "read data requests", CLERK, OWNER_CLERK, SUPERVISOR)
        if principal.role == SUPERVISOR:
            return {
                "sent": await self.data_asker.list_requests(None),
                "received": await self.data_holder.list_grants(None),
            }
        own = principal.department or COUNTER
        received = await self.data_holder.list_grants(own) if principal.role == OWNER_CLERK else []
        return {"sent": await self.data_asker.list_requests(own), "received": received}

    async def decide_data_request(
        self,
        principal: Principal,
        request_id: str,
        *,
        approve: bool,
        fields: tuple[str, ...],
        until_ms: int | None,
        note: str,
    ) -> dict[str, Any]:
        require(principal, "decide data requests", OWNER_CLERK, SUPERVISOR)
        department = principal.department if principal.role == OWNER_CLERK else None
        return await self.data_holder.decide(
            principal.username,
            department,
            request_id,
            approve=approve,
            fields=fields,
            until_ms=until_ms,
            note=note,
        )

    async def revoke_grant(self, principal: Principal, grant_id: str, note: str) -> dict[str, Any]:
        require(principal, "revoke grants", OWNER_CLERK, SUPERVISOR)
        department = principal.department if principal.role == OWNER_CLERK else None
        return await self.data_holder.revoke(principal.username, department, grant_id, note)

    async def disclosures(
        self, principal: Principal, subject_kind: str, subject_id: str | None, side: str | None
    ) -> list[dict[str, Any]]:
        require(principal, "read disclosure logs", CLERK, OWNER_CLERK, SUPERVISOR, OPERATOR)
        if subject_id is None and principal.role not in (SUPERVISOR, OPERATOR):
            raise PermissionDenied(
                "a counter reads the disclosures of the person in front of it: give subject_id",
                code="subject_required",
            )
        ref = None
        if subject_id is not None:
            check_subject(subject_kind, subject_id, "subject_id")
            ref = self.data_holder.ref(subject_kind, subject_id)
        return await self.db.run(lambda s: data_records.read_disclosures(s, subject_ref=ref, side=side))

    async def data_meter(
        self, principal: Principal, since: str | None, until: str | None, resource: str | None
    ) -> dict[str, Any]:
        require(principal, "read the data meter", OPERATOR, SUPERVISOR)
        return await self.db.run(
            lambda s: data_records.read_meter(s, since=since, until=until, resource=resource)
        )

    async def health(self) -> tuple[bool, dict[str, Any]]:
        """Fails closed: an expired manifest or an unreachable database is unhealthy."""
        now = self.clock.now_ms()
        manifest = self.trust.manifest
        db_ok = await self._db_ok()
        checks = {
            "node": self.trust.node_id,
            "manifest_version": manifest.manifest.version,
            "manifest_fingerprint": manifest.fingerprint,
            "manifest_expired": manifest.expired(now),
            "database": "ok" if db_ok else "unreachable",
            "policy_bundle": self.policy.revision(),
            "catalogue_services": len(self.catalogue),
        }
        if db_ok:  # a stalled link degrades the node without failing it: restarting it cures nothing
            checks["stalled_peers"] = await self.stalled_peers()
        return db_ok and not manifest.expired(now), checks

    async def _db_ok(self) -> bool:
        try:
            return await self.db.run(lambda s: s.connection().exec_driver_sql("SELECT 1").scalar() == 1)
        except Exception:
            return False

    async def policy_decisions(
        self, principal: Principal, limit: int, since_ms: int | None
    ) -> list[dict[str, Any]]:
        require(principal, "read the policy decision log", OPERATOR, SUPERVISOR)
        return await self.policy.recent(limit, since_ms)

    # -- what the pages (node/web/) read and do: queues, check codes, the operator console ----

    def check_code_of(self, app_id: str) -> str:
        """The short code a citizen uses with the id to follow an application without an
        account: a MAC under a key derived from this node's own secret (node/trust/secret.py),
        so nothing is stored, nobody without the secret can mint one, and a code printed on a
        receipt outlives key rotations. 8 base32 characters (40 bits)."""
        return _check_code(self._check_key, app_id)

    def check_code_fits(self, app_id: str, code: str) -> bool:
        """Also the codes this node printed before they came from its own secret, when they
        were derived from its signing key: those still verify while it keeps that key."""
        given = code.strip().upper().replace(" ", "")
        if len(given) == 8:
            given = f"{given[:4]}-{given[4:]}"
        keys = [self._check_key]
        keys += [hashlib.sha256(b"yrd-check-code\0" + k.seed).digest() for k in self.trust.opening_keys()]
        return any(hmac.compare_digest(_check_code(k, app_id).encode(), given.encode()[:64]) for k in keys)

    async def check_code(self, principal: Principal, app_id: str) -> str:
        """Only someone who may read the application learns its code."""
        await self.get_application(principal, app_id)
        return self.check_code_of(app_id)

    async def track(self, app_id: str, code: str) -> dict[str, Any]:
        """The citizen's view: status and dates only, no personal data, no reasons (an owner's
        reason may name the applicant). A wrong code is answered as an unknown id."""
        if not self.check_code_fits(app_id, code):
            raise _unknown(app_id)
        view = await self.origin.get(app_id)
        return {
            "id": view["id"],
            "service_id": view["service_id"],
            "owner_node": view["owner_node"],
            "status": view["status"],
            "submitted_at": view["submitted_at"],
            "due_at": view["due_at"],
            "overdue": view["overdue"],
            "history": [{"status": h["status"], "at": h["at"]} for h in view["history"]],
            # An e-certificate shows its holder masked (or a company's public name and code),
            # so its QR text is the one result the citizen's page may carry.
            "certificates": _certificates_of(view["documents"], self.trust.manifest, self.clock.now_ms()),
        }

    async def counter_queue(
        self, principal: Principal, status: str | None, service_id: str | None, limit: int = 200
    ) -> list[dict[str, Any]]:
        """What this counter submitted, newest first: a clerk's own, all for a supervisor."""
        require(principal, "read the counter's queue", CLERK, SUPERVISOR)
        now = self.clock.now_ms()
        mine = principal.username if principal.role == CLERK else None

        def read(s: Session) -> list[Application]:
            stmt = select(Application)
            if mine is not None:
                stmt = stmt.where(Application.submitted_by == mine)
            if status:
                stmt = stmt.where(Application.status == status)
            if service_id:
                stmt = stmt.where(Application.service_id == service_id)
            return list(s.exec(stmt.order_by(col(Application.submitted_at_ms).desc()).limit(limit)).all())

        return [
            {
                "id": a.id,
                "service_id": a.service_id,
                "owner_node": a.owner_node,
                "status": a.status,
                "submitted_by": a.submitted_by,
                "submitted_at_ms": a.submitted_at_ms,
                "due_at_ms": a.due_at_ms,
                "overdue": a.status not in FINAL and now > a.due_at_ms,
            }
            for a in await self.db.run(read)
        ]

    async def owner_queue(
        self, principal: Principal, status: str | None, limit: int = 200
    ) -> list[dict[str, Any]]:
        """Everything routed here for the caller's department, automatic decisions included,
        without the sealed payload: the list shows no personal data."""
        require(principal, "read the work queue", OWNER_CLERK, SUPERVISOR)
        allowed = self._services_of(principal)
        now = self.clock.now_ms()

        def read(s: Session) -> list[InboundApplication]:
            stmt = select(InboundApplication)
            if allowed is not None:
                stmt = stmt.where(col(InboundApplication.service_id).in_(sorted(allowed)))
            if status:
                stmt = stmt.where(InboundApplication.status == status)
            stmt = stmt.order_by(col(InboundApplication.received_at_ms).desc()).limit(limit)
            return list(s.exec(stmt).all())

        return [
            {
                "id": r.id,
                "service_id": r.service_id,
                "origin_node": r.origin_node,
                "status": r.status,
                "handler": r.handler,
                "received_at_ms": r.received_at_ms,
                "due_at_ms": r.due_at_ms,
                "overdue": r.status not in FINAL and now > r.due_at_ms,
                "open": r.status in OPEN_AT_OWNER,
            }
            for r in await self.db.run(read)
        ]

    async def owner_view(self, principal: Principal, app_id: str) -> dict[str, Any]:
        """One inbound application with its form, for the clerk who decides it."""
        require(principal, "read the work queue", OWNER_CLERK, SUPERVISOR)
        allowed = self._services_of(principal)
        if allowed is not None:
            service_id = await self.db.run(lambda s: _inbound_service(s, app_id))
            if service_id not in allowed:
                raise _unknown(app_id)
        return await self.db.run(lambda s: self.owner.view(s, app_id))

    async def console(self, principal: Principal) -> dict[str, Any]:
        """The operator console's facts: the node, its keys, policy, catalogue and each peer's
        link. Counts and times only: no application ids, no personal data."""
        require(principal, "read the operator console", OPERATOR, SUPERVISOR)
        now = self.clock.now_ms()
        manifest = self.trust.manifest
        me = manifest.member(self.trust.node_id)
        keys = [
            {
                "key_id": k.key_id,
                "status": manifest_pb2.KeyStatus.Name(k.status).removeprefix("KEY_STATUS_").lower(),
                "not_before_ms": k.not_before_ms,
                "not_after_ms": k.not_after_ms,
                "expires_soon": now < k.not_after_ms <= now + KEY_WARNING_MS,
                "expired": k.not_after_ms <= now,
                "in_use": k.key_id == self.trust.key.key_id,
            }
            for k in (me.keys if me else ())
        ]
        catalogue = hashlib.sha256()
        for defn in sorted(self.catalogue.all(), key=lambda d: d.service_id):
            catalogue.update(defn.SerializeToString(deterministic=True))
        peers = [m.node_id for m in manifest.members if m.node_id != self.trust.node_id]
        links = await self.db.run(lambda s: _peer_links(s, peers))
        return {
            "node": self.trust.node_id,
            "manifest_version": manifest.manifest.version,
            "manifest_fingerprint": manifest.fingerprint,
            "manifest_expired": manifest.expired(now),
            "keys": keys,
            "policy_revision": self.policy.revision(),
            "policy_signer": self.trust.key.key_id,
            "catalogue_services": len(self.catalogue),
            "catalogue_digest": catalogue.hexdigest(),
            "stalled_peers": await self.stalled_peers(),
            "peers": links,
        }

    async def refresh_gauges(self) -> None:
        """Queue depths, the oldest waiting item per peer, the owner's open and overdue work and
        the counter's held applications, read from the database into the metrics gauges."""
        now = self.clock.now_ms()

        def read(s: Session) -> tuple[list[dict[str, Any]], int, int, int]:
            hops = s.exec(select(OutboxEntry.next_hop).where(OutboxEntry.state == "pending").distinct()).all()
            open_rows = s.exec(
                select(InboundApplication.due_at_ms).where(col(InboundApplication.status).in_(OPEN_AT_OWNER))
            ).all()
            held = s.exec(select(func.count()).where(Application.status == "awaiting_approval")).one()
            worklist = len(open_rows)
            overdue = sum(1 for due in open_rows if now > due)
            return _peer_links(s, list(hops)), worklist, overdue, int(held)

        links, worklist, overdue, held = await self.db.run(read)
        metrics.OUTBOX_QUEUE_DEPTH.clear()
        metrics.OUTBOX_OLDEST_AGE.clear()
        for link in links:
            metrics.OUTBOX_QUEUE_DEPTH.labels(peer=link["peer"]).set(link["pending"])
            oldest = link["oldest_pending_ms"]
            metrics.OUTBOX_OLDEST_AGE.labels(peer=link["peer"]).set(
                max(0, now - oldest) / 1000 if oldest else 0
            )
        metrics.OWNER_WORKLIST.set(worklist)
        metrics.OWNER_OVERDUE.set(overdue)
        metrics.COUNTER_HELD.set(held)

    async def dead_letters(self, principal: Principal, limit: int = 100) -> list[dict[str, Any]]:
        require(principal, "read dead letters", OPERATOR, SUPERVISOR)
        rows = await self.db.run(lambda s: outbox.dead_letters(s, limit))
        return [
            {
                "id": d.id,
                "peer": d.peer,
                "method": d.method,
                "reason": d.reason,
                "detail": d.detail,
                "dead_at_ms": d.dead_at_ms,
                "attempts": d.attempts,
            }
            for d in rows
        ]

    async def redrive(self, principal: Principal, entry_id: int) -> None:
        """Send a dead letter again once its cause is fixed (`yrd outbox retry`'s twin)."""
        require(principal, "re-drive dead letters", OPERATOR, SUPERVISOR)
        now = self.clock.now_ms()
        if not await self.db.run(lambda s: outbox.redrive(s, entry_id, now)):
            raise NotFound(f"no dead letter {entry_id}", code="unknown_dead_letter", field="id")
        log.info("dead letter %d re-driven by %s", entry_id, principal.username)

    async def verify_certificate(
        self, principal: Principal, data: bytes, *, asked: bool = True
    ) -> dict[str, Any]:
        """Any counter role checks a certificate; an operator (no personal data) does not.
        Only the manifest is consulted, never a peer, so it works with every link down."""
        require(principal, "verify certificates", CLERK, OWNER_CLERK, SUPERVISOR)
        verdict = certificates.verify(data, self.trust.manifest, self.clock.now_ms())
        if asked:
            metrics.CERTIFICATES_VERIFIED.labels(result=verdict.reason).inc()
        return verdict.to_api()


def _check_code(key: bytes, app_id: str) -> str:
    code = base64.b32encode(hmac.new(key, app_id.encode(), hashlib.sha256).digest()[:5]).decode()
    return f"{code[:4]}-{code[4:]}"


def _certificates_of(
    documents: list[dict[str, Any]], manifest: TrustedManifest, now_ms: int
) -> list[dict[str, Any]]:
    """The certificates among result documents as QR texts, each with this node's verdict; one
    that does not decode (a department's upload under the same content type) stays a plain
    document."""
    out = []
    for d in documents:
        if d["content_type"] != certificates.CONTENT_TYPE:
            continue
        try:
            signed = certificates.decode(base64.b64decode(d["data"]))
        except CertificateRejected:
            continue
        try:
            certificates.check(signed, manifest, now_ms)
            reason = "valid"
        except CertificateRejected as e:
            reason = e.code
        out.append({"text": certificates.to_text(signed), "valid": reason == "valid", "reason": reason})
    return out


def require(principal: Principal, action: str, *roles: str) -> None:
    if principal.role not in roles:
        raise PermissionDenied(
            f"a {principal.role} may not {action}; this needs the {' or '.join(roles)} role",
            code="role_required",
        )


def _unknown(app_id: str) -> NotFound:
    return NotFound(f"no application {clip(app_id)} at this node", code="unknown_application", field="id")


def _submitter(s: Session, app_id: str) -> str | None:
    app = s.get(Application, app_id)
    return app.submitted_by if app is not None else None


def _inbound_service(s: Session, app_id: str) -> str | None:
    row = s.get(InboundApplication, app_id)
    return row.service_id if row is not None else None


def _peer_links(s: Session, peers: list[str]) -> list[dict[str, Any]]:
    """Per peer: pending work, its oldest item's age, dead letters and the persisted backoff."""
    pending = dict(
        s.exec(
            select(OutboxEntry.next_hop, func.count())
            .where(OutboxEntry.state == "pending")
            .group_by(col(OutboxEntry.next_hop))
        ).all()
    )
    oldest = dict(
        s.exec(
            select(OutboxEntry.next_hop, func.min(OutboxEntry.created_at_ms))
            .where(OutboxEntry.state == "pending")
            .group_by(col(OutboxEntry.next_hop))
        ).all()
    )
    dead = outbox.dead_counts(s)
    links = []
    for peer in peers:
        state = s.get(PeerState, peer)
        links.append(
            {
                "peer": peer,
                "pending": int(pending.get(peer, 0)),
                "oldest_pending_ms": oldest.get(peer),
                "dead_letters": dead.get(peer, 0),
                "failures": state.failures if state else 0,
                "backoff_until_ms": state.backoff_until_ms if state else 0,
                "last_success_ms": state.last_success_ms if state else 0,
                "last_error": state.last_error if state else "",
            }
        )
    return links
