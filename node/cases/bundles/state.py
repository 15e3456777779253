"""A bundle run's state at the lead, read in one place: the base the other modules of this
package build on, so each reads the run, its parts, their applications and results alike."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from sqlmodel import Session, select
from yrd.catalogue.v1 import catalogue_pb2
from yrd.peer.v1 import peer_pb2

from core.clock import Clock
from core.db import Database, after_commit
from core.errors import NotFound
from node.cases.origin import Origin
from node.cases.owner import Owner
from node.models import Application, ApplicationResult, BundlePart, BundleRun, InboundApplication
from node.trust.envelope import DEFAULT_MAX_SKEW_MS
from node.trust.keyring import Trust
from node.trust.sealing import unseal
from registry.lookup import CatalogueIndex

# Short names the modules of this package share.
Outcome = peer_pb2.ReceiptOutcome
ServiceDefinition = catalogue_pb2.ServiceDefinition

FAILED = frozenset({"rejected", "needs_materials", "refused"})
# How often the runner looks for bundles to move when nothing in this process stirred it: what
# another process changed (a replica sharing PostgreSQL, a CLI command) is seen within this.
FULL_LOOK_S = 5.0


@dataclass
class RunState:
    run: BundleRun
    inbound: InboundApplication
    defn: ServiceDefinition
    payload: peer_pb2.ApplicationPayload
    parts: dict[str, BundlePart]
    apps: dict[str, Application]
    results: dict[str, dict[str, str]]


class BundleCore:
    """What every concern of a bundle needs: the node's stores and services, and a run read
    whole (``_state``) so each part's status is judged one way (``_status``)."""

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
        # Set when a committed unit of this process may have left a bundle to move (a run
        # started, a part's change or receipt, a resubmission): the runner looks at once. A
        # bundle that still waits (a catalogue, the database) is looked at again after the poll
        # interval (``_again``); anything else at the latest every full_look_s.
        self._stirred = asyncio.Event()
        self._stirred.set()
        self._again = False
        self.full_look_s = FULL_LOOK_S

    def _stir(self, s: Session) -> None:
        """Have the runner look once ``s``'s transaction, which gives a bundle work, commits."""
        after_commit(s, self._mark_stirred)

    def _mark_stirred(self) -> None:
        self._stirred.set()

    def _lookup(self, service_id: str) -> ServiceDefinition | None:
        try:
            return self.catalogue.get(service_id)
        except NotFound:
            return None

    def _state(self, s: Session, bundle_id: str) -> RunState | None:
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
        return RunState(run, inbound, defn, payload, parts, apps, results)

    def _status(self, st: RunState, name: str) -> str:
        part = st.parts[name]
        if part.failure:
            return "refused"
        if name in st.apps:
            return st.apps[name].status
        return "waiting"
