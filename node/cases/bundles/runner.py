"""The lead's runner: a loop that moves every bundle with unhandled events (start the parts
whose dependencies completed, report the whole to the counter), one bundle's failure never
stopping the others; and ``Bundles``, the one object the composition root builds."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

from sqlmodel import Session, col, select

from core.errors import Unavailable, YrdError
from node.cases.bundles.resubmission import Resubmission
from node.cases.bundles.routing import Routing
from node.cases.bundles.starting import Starting
from node.cases.statuses import FINAL
from node.models import BundleRun
from registry.bundles import components, order

log = logging.getLogger(__name__)


class Bundles(Starting, Routing, Resubmission):
    """Bundles at the lead and at the counter; each concern is a base class of this one."""

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
        """A look in the database as soon as a commit stirred the runner, after the poll
        interval when a bundle still waits, and every ``full_look_s`` regardless. Stirs that
        come during a look are taken by the next one, so a burst costs a look per look's
        duration, not one per commit. (An idle node's look was a write transaction five times a
        second, most of its idle CPU. Sleeping the poll interval between looks instead made each
        step of a bundle wait for it: a city node's 2 s gave its bundles 4.5-9 s where a
        province's took 0.5 s.)"""
        full_look_at = 0.0
        while not self._stopping:
            if self._stirred.is_set() or self._again or self.clock.monotonic() >= full_look_at:
                self._stirred.clear()
                self._again = False
                full_look_at = self.clock.monotonic() + self.full_look_s
                try:
                    await self.run_once()
                except YrdError as e:  # the database is closing, or is unreachable for now
                    log.warning("bundle runner: %s", e.code)
                    self._again = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stirred.wait(), self.poll_interval_s)

    async def run_once(self) -> int:
        """Move every bundle with unhandled events; the number moved."""

        def pending(s: Session) -> list[tuple[str, int]]:
            stmt = select(BundleRun).where(col(BundleRun.wanted) > col(BundleRun.handled))
            return [(r.id, r.wanted) for r in s.exec(stmt).all()]

        moved = 0
        found = await self.db.run(pending)
        for bundle_id, wanted in found:
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
        if moved < len(found):
            self._again = True  # a bundle still waits (a catalogue, the database): look again
        return moved

    @staticmethod
    def _handled(s: Session, bundle_id: str, wanted: int) -> None:
        run = s.get(BundleRun, bundle_id)
        if run is not None and run.handled < wanted:
            run.handled = wanted
            s.add(run)

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
