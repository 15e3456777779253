"""Department webhooks: an owner's service can hand its applications to the department's
own system. The hand-over is an outbox entry, so it survives crashes and is retried with
backoff until the department answers.

The department answers 200 with ``{"decision": approve|reject|need_materials,
"reason": ...}`` to decide at once, or 202 to decide later through the counter API
(``POST /api/v1/applications/{id}/decision``). Any other answer is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from typing import Any

import aiohttp
from sqlmodel import Session

from core.clock import Clock
from core.db import Database
from core.errors import Conflict, YrdError
from node.cases.owner import WEBHOOK_HOP, Owner, check_decision
from node.delivery.outbox import Backoff, Leased, claim, reschedule, settle

log = logging.getLogger(__name__)
TIMEOUT = aiohttp.ClientTimeout(total=15)


class WebhookDispatcher:
    def __init__(
        self,
        *,
        db: Database,
        owner: Owner,
        url: str | None,
        clock: Clock,
        backoff: Backoff,
        poll_interval_s: float,
        rng: random.Random | None = None,
    ) -> None:
        self.db, self.owner, self.url, self.clock = db, owner, url, clock
        self.backoff, self.poll_interval_s, self.rng = backoff, poll_interval_s, rng or random.Random()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._queued = asyncio.Event()  # an application for the department was committed

    def start(self) -> None:
        if self.url:
            self._session = aiohttp.ClientSession(timeout=TIMEOUT)
            self._task = asyncio.create_task(self._run(), name="webhooks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def wake(self) -> None:
        """Look at once: the owner committed an application for the department."""
        self._queued.set()

    async def _run(self) -> None:
        """Claim and deliver; when nothing is due, wait for a wake or the poll interval (for
        retries coming due). A new application waited for the poll interval before, which
        the simulation's city nodes set to 2 s."""
        while True:
            # Before the queue is read: a wake for work committed after the read stays set.
            self._queued.clear()
            try:
                rows = await self.db.run(self._claim)
                for row in rows:
                    await self._deliver(row)
            except Exception:
                log.exception("webhook dispatch failed; will retry")
                rows = []
            if not rows:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._queued.wait(), self.poll_interval_s)

    def _claim(self, s: Session) -> Sequence[Leased]:
        return claim(s, WEBHOOK_HOP, 8, self.clock.now_ms())

    async def _deliver(self, row: Leased) -> None:
        assert self._session is not None and self.url is not None
        entry_id = row.id
        view = await self.db.run(lambda s: self.owner.view(s, row.item_id))
        try:
            async with self._session.post(self.url, json={"application": view}) as resp:
                answer: dict[str, Any] = await resp.json(content_type=None) if resp.status == 200 else {}
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            await self._retry(row, f"{type(e).__name__}: {e}")
            return
        if status == 202:
            await self.db.run(lambda s: settle(s, entry_id))
            return
        if status != 200:
            await self._retry(row, f"HTTP {status}")
            return
        decision, reason = str(answer.get("decision", "")), str(answer.get("reason", ""))
        try:
            check_decision(decision, reason)
        except YrdError as e:
            await self._retry(row, f"department answered badly: {e}")
            return
        now = self.clock.now_ms()

        def apply(s: Session) -> str | None:
            settle(s, entry_id)
            try:
                return self.owner.decide_in(s, row.item_id, decision, reason, [], now).origin_node
            except Conflict:  # a clerk decided first; the department's answer comes too late
                return None

        origin = await self.db.run(apply)
        if origin is not None:
            self.owner.wake(self.owner.trust.next_hop(origin))

    async def _retry(self, row: Leased, error: str) -> None:
        entry_id = row.id
        delay = self.backoff.delay_s(row.attempts, self.rng)
        log.warning("webhook for %s failed (%r); retry in %.1fs", row.item_id, error, delay)
        until = self.clock.now_ms() + int(delay * 1000)
        await self.db.run(lambda s: reschedule(s, [entry_id], until, error))
