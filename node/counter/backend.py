"""The node core behind the counter API, shared by the HTTP front and the gRPC
CounterService: catalogue lookups, submission at the origin, the owner's work queue,
health and the policy decision log."""

from __future__ import annotations

from typing import Any

from core.clock import Clock
from core.db import Database
from node.cases.origin import Origin
from node.cases.owner import Owner
from node.cases.policy_gate import PolicyGate
from node.cases.requests import Document, Principal, SubmitRequest
from node.trust.keyring import Trust
from registry.lookup import CatalogueIndex


class NodeBackend:
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
        return await self.origin.submit(principal, idempotency_key, request)

    async def release(self, principal: Principal, app_id: str) -> dict[str, Any]:
        return await self.origin.release(principal, app_id)

    async def get_application(self, principal: Principal, app_id: str) -> dict[str, Any]:
        return await self.origin.get(app_id)

    async def worklist(self, principal: Principal) -> list[dict[str, Any]]:
        return await self.owner.worklist()

    async def decide(
        self, principal: Principal, app_id: str, decision: str, reason: str, documents: list[Document]
    ) -> dict[str, Any]:
        return await self.owner.decide(principal, app_id, decision, reason, documents)

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
        return db_ok and not manifest.expired(now), checks

    async def _db_ok(self) -> bool:
        try:
            return await self.db.run(lambda s: s.connection().exec_driver_sql("SELECT 1").scalar() == 1)
        except Exception:
            return False

    async def policy_decisions(self, limit: int, since_ms: int | None) -> list[dict[str, Any]]:
        return await self.policy.recent(limit, since_ms)
