"""The console's charts: the node's own counters sampled in memory every few seconds.

An hour of samples (720 at 5 s) is kept per process and lost on restart: the charts are a
glance for the operator at the console, Prometheus keeps the history. Reading the process's
prometheus registry rather than the database costs nothing per sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from dataclasses import dataclass, field

from prometheus_client import REGISTRY

from core.clock import Clock
from node.counter.api import CounterBackend

log = logging.getLogger(__name__)

INTERVAL_S = 5.0
KEEP = 720  # one hour at INTERVAL_S

# chart name -> (metric sample name, what the chart shows: the change per interval or the level)
SERIES: dict[str, tuple[str, str]] = {
    "submitted": ("yrd_applications_submitted_total", "delta"),
    "received": ("yrd_applications_received_total", "delta"),
    "envelopes_rejected": ("yrd_envelopes_verified_total", "delta"),
    "outbox_pending": ("yrd_outbox_pending_entries", "level"),
    "owner_worklist": ("yrd_owner_worklist_entries", "level"),
    "owner_overdue": ("yrd_owner_overdue_entries", "level"),
    "dead_letters": ("yrd_outbox_dead_letters_entries", "level"),
    "http_requests": ("yrd_http_request_duration_seconds_count", "delta"),
}


def read_totals() -> dict[str, float]:
    """Each series summed over its labels (rejected envelopes: every result but ok)."""
    totals = dict.fromkeys(SERIES, 0.0)
    by_sample = {sample: name for name, (sample, _) in SERIES.items()}
    for metric in REGISTRY.collect():
        for s in metric.samples:
            name = by_sample.get(s.name)
            if name is None:
                continue
            if name == "envelopes_rejected" and s.labels.get("result") == "ok":
                continue
            totals[name] += s.value
    return totals


def peer_rtt_ms() -> dict[str, float]:
    """Mean outbound call time per peer since start, from the delivery histogram."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for metric in REGISTRY.collect():
        if metric.name != "yrd_delivery_call_duration_seconds":
            continue
        for s in metric.samples:
            peer = s.labels.get("peer", "")
            if s.name.endswith("_sum"):
                sums[peer] = s.value
            elif s.name.endswith("_count"):
                counts[peer] = s.value
    return {p: 1000 * sums.get(p, 0.0) / n for p, n in counts.items() if n}


@dataclass
class Sampler:
    clock: Clock
    backend: CounterBackend
    samples: deque[tuple[int, dict[str, float]]] = field(default_factory=lambda: deque(maxlen=KEEP))
    _task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        self.samples.append((self.clock.now_ms(), read_totals()))

    def points(self, name: str) -> list[tuple[int, float]]:
        """(time, value) per sample: the change since the previous sample, or the level."""
        kind = SERIES[name][1]
        rows = list(self.samples)
        if kind == "level":
            return [(t, v[name]) for t, v in rows]
        return [(t, max(0.0, v[name] - p[name])) for (_, p), (t, v) in itertools.pairwise(rows)]

    async def _run(self) -> None:
        failing = ""
        while True:
            try:
                await self.backend.refresh_gauges()
            except Exception as e:  # a chart must never take the node down
                # Once per kind of failure, not every 5 s: an unreachable database is
                # already reported by /healthz.
                if type(e).__name__ != failing:
                    failing = type(e).__name__
                    log.warning("refreshing the queue gauges failed: %s", failing)
            else:
                failing = ""
            self.sample()
            await asyncio.sleep(INTERVAL_S)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="yrd-web-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def svg_chart(points: list[tuple[int, float]], now_ms: int, width: int = 360, height: int = 90) -> str:
    """A line over the last hour, drawn here so the page needs no script and no CDN."""
    span = KEEP * INTERVAL_S * 1000
    top = max((v for _, v in points), default=0.0) or 1.0
    coords = " ".join(
        f"{width * (1 - (now_ms - t) / span):.1f},{height - 4 - (height - 12) * v / top:.1f}"
        for t, v in points
        if now_ms - t <= span
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img"><rect width="{width}" height="{height}" class="chart-bg"/>'
        f'<text x="4" y="12" class="chart-max">{top:g}</text>'
        f'<polyline fill="none" class="chart-line" points="{coords}"/></svg>'
    )
