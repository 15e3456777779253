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

"Own dept" is what this node owns under the catalogue's ``department`` of the service.
An application a role may not read is answered as not found, so ids cannot be probed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlmodel import Session

from core.clock import Clock
from core.db import Database
from core.errors import NotFound, PermissionDenied, clip
from node.cases.bundles import Bundles
from node.cases.origin import Origin
from node.cases.owner import Owner
from node.cases.policy_gate import PolicyGate
from node.cases.requests import Attachment, Document, Principal, SubmitRequest
from node.counter.users import CLERK, OPERATOR, OWNER_CLERK, SUPERVISOR
from node.models import Application, InboundApplication
from node.trust.keyring import Trust
from registry.lookup import CatalogueIndex


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
    ) -> None:
        self.db, self.trust, self.catalogue, self.origin, self.owner = db, trust, catalogue, origin, owner
        self.policy, self.clock = policy, clock

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
