"""Where the node asks its policy: once at the origin before anything is stored or sent,
once at the owner before anything is stored. Every decision is logged; obligations are
applied here, so a stripped field never reaches the sealed payload.

A node without a bundle denies everything: sharing is by agreement, never by default.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from sqlmodel import Session
from yrd.catalogue.v1 import catalogue_pb2
from yrd.peer.v1 import peer_pb2

from core.clock import Clock
from core.db import Database
from core.errors import PolicyDenied
from node.cases.requests import Principal, SubmitRequest
from node.config import NodeConfig
from node.trust.keyring import Trust
from policies.decision_log import DecisionLog
from policies.holder import PolicyHolder
from policies.model import Decision, PolicyInput, clue_input
from policies.obligations import apply_obligations
from policies.quotas import SqlQuotaBook

NO_BUNDLE = "no policy bundle is configured for this node; nothing may be shared"


@dataclasses.dataclass(frozen=True)
class Allowed:
    """The origin's allowing decision and the form with its obligations applied. The caller
    logs it (:meth:`log`) in the transaction that stores what it allowed, so the two commit
    together and a submit is one unit of work instead of two; when that
    transaction does not commit, the caller logs it on its own (:meth:`PolicyGate.log_alone`),
    since every decision is logged."""

    decision: Decision
    form: dict[str, Any]
    logged_input: PolicyInput

    def log(self, s: Session) -> None:
        DecisionLog.add(s, self.decision, self.logged_input)


class PolicyGate:
    def __init__(
        self,
        holder: PolicyHolder | None,
        log: DecisionLog,
        trust: Trust,
        clock: Clock,
        *,
        off_loop: bool = False,
    ) -> None:
        self.holder, self.log, self.trust, self.clock = holder, log, trust, clock
        self._off_loop = off_loop  # quotas counted in the database: decide on a thread, not the loop
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, config: NodeConfig, *, db: Database, trust: Trust, clock: Clock) -> PolicyGate:
        holder = None
        if config.policy_bundle is not None:
            # Replicas share PostgreSQL, so they must share the quota buckets too (policies/quotas.py).
            quotas = None if db.is_sqlite else SqlQuotaBook(db, clock)
            holder = PolicyHolder(
                config.policy_bundle, trust.key.public_key, clock, node_id=config.node_id, quotas=quotas
            )
        return cls(holder, DecisionLog(db), trust, clock, off_loop=not db.is_sqlite)

    def revision(self) -> str:
        return self.holder.current().revision if self.holder else "none"

    def _jurisdiction(self, node_id: str) -> str:
        member = self.trust.manifest.member(node_id)
        return member.jurisdictions[0] if member and member.jurisdictions else ""

    def _decide(self, inp: PolicyInput) -> Decision | None:
        return self.holder.current().decide(inp) if self.holder else None

    @staticmethod
    def _deny(decision: Decision | None) -> PolicyDenied:
        if decision is None:
            return PolicyDenied(NO_BUNDLE, code="no_policy_bundle", rule_id="")
        return PolicyDenied(
            decision.reason,
            code=decision.code,
            rule_id=decision.deciding_rule,
            decision_id=decision.decision_id,
        )

    async def outbound(
        self,
        defn: catalogue_pb2.ServiceDefinition,
        owner: str,
        principal: Principal,
        req: SubmitRequest,
        form: dict[str, Any],
        now: int,
    ) -> Allowed:
        """The allowing decision, for the caller to log with what it stores, or PolicyDenied
        (that decision logged here, on its own: nothing will be stored with it)."""
        inp = PolicyInput(
            direction="outbound",
            peer_node=owner,
            peer_jurisdiction=self._jurisdiction(owner),
            service_id=defn.service_id,
            service_owner=defn.owner,
            service_department=defn.department,
            purpose=req.purpose,
            role=principal.role,
            fields=frozenset(form),
            consent=req.consent,
            at_ms=now,
        )
        decision = await asyncio.to_thread(self._decide, inp) if self._off_loop else self._decide(inp)
        if decision is None:
            raise self._deny(None)
        if not decision.allowed:
            await self.log.record(decision, inp)
            raise self._deny(decision)
        return Allowed(decision, apply_obligations(form, decision.obligations), inp)

    async def log_alone(self, allowed: Allowed) -> None:
        """Log an allowing decision whose caller's transaction did not commit."""
        await self.log.record(allowed.decision, allowed.logged_input)

    def inbound(
        self,
        s: Session,
        defn: catalogue_pb2.ServiceDefinition,
        origin: str,
        t: peer_pb2.ApplicationTransfer,
        now: int,
    ) -> None:
        """Raise PolicyDenied unless this owner accepts the application; the decision is
        logged in the caller's transaction, with the application it decided."""
        inp = PolicyInput(
            direction="inbound",
            peer_node=origin,
            peer_jurisdiction=self._jurisdiction(origin),
            service_id=defn.service_id,
            service_owner=defn.owner,
            service_department=defn.department,
            purpose=t.purpose,
            role="node",
            fields=frozenset(t.fields_present),
            consent=t.consent,
            at_ms=now,
        )
        decision = self._decide(inp)
        if decision is not None:
            self.log.add(s, decision, inp)
        if decision is None or not decision.allowed:
            raise self._deny(decision)

    async def clue_outbound(
        self, owner: str, domains: tuple[str, ...], region: str, source: str, role: str, now: int
    ) -> None:
        """Before a clue is stored to leave: one decision per domain, since a joint clue goes to
        every department concerned and each domain may be shared or not. Each is logged; the first
        refusal raises PolicyDenied, so nothing is stored and the clerk sees the rule's reason."""
        for domain in domains:
            inp = clue_input("outbound", owner, self._jurisdiction(owner), domain, region, role, now, source)
            decision = await asyncio.to_thread(self._decide, inp) if self._off_loop else self._decide(inp)
            if decision is None:
                raise self._deny(None)
            await self.log.record(decision, inp)
            if not decision.allowed:
                raise self._deny(decision)

    def clue_inbound(
        self, s: Session, sender: str, domains: tuple[str, ...], region: str, source: str, now: int
    ) -> None:
        """Raise PolicyDenied unless this member accepts the clue in every domain; the decisions
        are logged in the caller's transaction (kept with the refusal's receipt)."""
        for domain in domains:
            inp = clue_input(
                "inbound", sender, self._jurisdiction(sender), domain, region, "node", now, source
            )
            decision = self._decide(inp)
            if decision is not None:
                self.log.add(s, decision, inp)
            if decision is None or not decision.allowed:
                raise self._deny(decision)

    async def data_outbound(
        self,
        holder: str,
        resource: catalogue_pb2.DataResource,
        purpose: str,
        fields: frozenset[str],
        consent: bool,
        role: str,
        now: int,
    ) -> None:
        """Before a query names a subject to another member's holder: the subject's id and the
        consent are personal data leaving this node. Logged; PolicyDenied unless allowed."""
        inp = PolicyInput(
            direction="outbound",
            peer_node=holder,
            peer_jurisdiction=self._jurisdiction(holder),
            service_id=resource.resource_id,
            service_owner=resource.holder,
            service_department=resource.department,
            purpose=purpose,
            role=role,
            fields=fields,
            consent=consent,
            at_ms=now,
            kind="data",
        )
        decision = await asyncio.to_thread(self._decide, inp) if self._off_loop else self._decide(inp)
        if decision is None:
            raise self._deny(None)
        await self.log.record(decision, _as_logged(inp))
        if not decision.allowed:
            raise self._deny(decision)

    def data_inbound(
        self,
        s: Session,
        asker: str,
        resource: catalogue_pb2.DataResource,
        purpose: str,
        fields: frozenset[str],
        consent: bool,
        now: int,
    ) -> Decision:
        """The decision to answer one resource of a data query (docs/sharing.md), logged in the
        caller's transaction; PolicyDenied unless allowed. The resource stands where a service
        would, so rules select it by id, holder code and department like a service."""
        inp = PolicyInput(
            direction="inbound",
            peer_node=asker,
            peer_jurisdiction=self._jurisdiction(asker),
            service_id=resource.resource_id,
            service_owner=resource.holder,
            service_department=resource.department,
            purpose=purpose,
            role="node",
            fields=fields,
            consent=consent,
            at_ms=now,
            kind="data",
        )
        decision = self._decide(inp)
        if decision is not None:
            self.log.add(s, decision, _as_logged(inp))
        if decision is None or not decision.allowed:
            raise self._deny(decision)
        return decision

    async def recent(self, limit: int, since_ms: int | None) -> list[dict[str, Any]]:
        return await self.log.recent(limit, since_ms or 0)

    def start(self) -> None:
        if self.holder is not None:
            self._task = asyncio.create_task(self.holder.watch(), name="policy-reload")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _as_logged(inp: PolicyInput) -> PolicyInput:
    """A data decision as the decision log keeps it: the log has no kind column, so the resource
    goes in the service columns as ``data:<resource id>`` (docs/policies.md "Data queries")."""
    return dataclasses.replace(inp, kind="application", service_id=f"data:{inp.service_id}")
