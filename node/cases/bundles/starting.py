"""A bundle arriving at the lead: its parts started, the bundle refused when the union
catalogue shows it cannot be routed, or a bounded wait for members' catalogues not yet
pulled (a part missing from them may only be late)."""

from __future__ import annotations

from sqlmodel import Session
from yrd.peer.v1 import peer_pb2

from core.errors import Unavailable
from node.cases.bundles.state import BundleCore, ServiceDefinition
from node.cases.deadlines import bundle_due_ms
from node.cases.statuses import FINAL
from node.models import BundlePart, BundleRun, InboundApplication
from registry.bundles import component_problems, components, longest_path_days

# A bundle naming a part no catalogue we hold lists waits this long for the members whose
# catalogue we have not yet pulled, looking again every CATALOGUE_RETRY_S, then is refused.
CATALOGUE_WAIT_MS = 15 * 60_000
CATALOGUE_RETRY_S = 2.0


class Starting(BundleCore):
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
        self._stir(s)  # wanted starts at 1: the runner starts its parts
        waiting = self._verdict(s, row, defn, run, now)
        if waiting:
            s.add(run)
            why = f"等待目录同步 waiting for the catalogues of {', '.join(waiting)}"
            change = self.owner.number(row, "in_review", now, reason=f"{why}: {self._missing(defn)[0]}")
            self.owner.emit(s, row, [change], now)

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
        change = self.owner.number(row, "rejected", now, reason=f"bundle_invalid: {field}: {problem}")
        self.owner.emit(s, row, [change], now)
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
