"""Injected time. Nothing in the node reads the system clock directly, so tests can
move time (skew windows, key validity, backoff, overdue applications) without sleeping."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall-clock milliseconds since the Unix epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for intervals."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """A clock that only moves when told. ``sleep`` advances it and yields once, so
    retry loops under test run instantly yet in order."""

    def __init__(self, start_ms: int = 1_767_225_600_000) -> None:  # 2026-01-01T00:00Z
        self._ms = start_ms
        self._mono = 0.0

    def now_ms(self) -> int:
        return self._ms

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._ms += round(seconds * 1000)
        self._mono += seconds

    async def sleep(self, seconds: float) -> None:
        self.advance(max(seconds, 0.0))
        await asyncio.sleep(0)


class OffsetClock:
    """Another clock's wall time moved by a fixed offset (``[clock] offset_ms``): a host
    whose clock runs ahead or behind, as the simulations play it, without touching the
    system clock. Intervals (``monotonic``, ``sleep``) are the base clock's: an offset
    wall clock still ticks at the normal rate."""

    def __init__(self, base: Clock, offset_ms: int) -> None:
        self.base, self.offset_ms = base, offset_ms

    def now_ms(self) -> int:
        return self.base.now_ms() + self.offset_ms

    def monotonic(self) -> float:
        return self.base.monotonic()

    async def sleep(self, seconds: float) -> None:
        await self.base.sleep(seconds)
