"""``yrd bench route``: routed applications per second end to end, on four node processes.

One routed application here is everything the issue counts: the counter's HTTP submit
(form checks, outbound policy, sealing, application + outbox in one transaction), the
signed delivery over gRPC, the owner's inbound policy, storage, automatic decision and
its status updates, the signed receipts, and the ``completed`` event stored at the origin.

Phases, in one run: a warm-up; a closed loop of ``concurrency`` clients (the rate and
latencies); an open loop at half that rate (the p99 the target speaks of); optionally a
sweep of open loops at given rates (``--sweep``: what the nodes spend per application at
each load); the bare grpc.aio echo with the same concurrency (the yardstick); each node's RSS.

Each phase also reports how many envelopes the nodes' calls carried on average
(``envelopes_per_call``, from their ``yrd_delivery_batch_size_envelopes`` metric): an
application's CPU depends less on the code than on that, since a call and its transactions
cost about as much as the application in it when it travels alone (docs/performance.md,
"Tenth round").

It also reports the node processes' CPU time per routed application in each loop
(``cpu_ms_per_app``, from /proc): on a machine shared with other work the rates move with
the neighbours' load, while the CPU one application costs the nodes moves far less, so it is
the figure to compare a code change by. In the closed loop it still depends on the rate the
neighbours left (a slower run sends smaller batches, which cost more per item); the open
loop at a fixed ``half_rate`` offers both sides of a comparison the same load.

Latency runs from the moment the submit's request is handed to the counter's socket
(submitter.py, the harness's lean client), not from the open loop's slot for it nor from the
harness building the form: a harness starved of CPU by its neighbours sends late, and counting that
would charge the nodes for the load generator. How late it was is reported beside
(``send_lag_ms``), and so is where each application's time went (``stages``, stages.py).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import random
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from core.errors import Unavailable
from simulations.bench import echo, stages
from simulations.bench.submitter import Submitter
from simulations.cluster import Cluster
from simulations.local_federation import PROVINCES, free_port
from simulations.traffic import (
    CompletionWatcher,
    Target,
    application_json,
    count_services,
    open_specs,
    percentile,
    service_count,
    targets,
)

TARGET_RATE = 2000.0
TARGET_RATIO = 0.4
TARGET_P99_MS = 50.0
TARGET_RSS_MB = 150.0
# 2,000 a second on two cores: 1 ms of CPU per application, the nodes and the harness together.
TARGET_CPU_MS_PER_APP = 1.0
# How often the watcher reads the origins for final statuses: the latencies' resolution. One
# poll of the four databases costs about 20 us of CPU when nothing is new, so 5 ms costs the
# shared cores well under 1 % while resolving a 50 ms target (20 ms did not).
POLL_S = 0.005
DRAIN_TIMEOUT_S = 120.0
BATCH_SIZE_METRIC = "yrd_delivery_batch_size_envelopes"


@dataclass
class Phase:
    submitted: int = 0
    refused: int = 0
    errors: int = 0
    completed: int = 0
    seconds: float = 0.0
    rate: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    accepted_rate: float = 0.0
    cpu_ms_per_app: float = 0.0  # the node processes'
    # The harness's own (this process: load, watcher, HTTP client), which shares the cores: the
    # target's 1 ms per application at 2,000/s on two cores counts it too.
    harness_cpu_ms_per_app: float = 0.0
    # Context switches of every thread, the nodes' and the harness's apart. Five busy processes
    # and gRPC's threads take turns on two cores, and each turn refills caches the others
    # emptied: the same node code costs about twice as much CPU here as in one process
    # (docs/performance.md, "Thirteenth round").
    switches_per_app: float = 0.0
    harness_switches_per_app: float = 0.0
    error_kinds: dict[str, int] = field(default_factory=dict)
    envelopes_per_call: float = 0.0  # the nodes' Deliver and NotifyStatus calls, on average
    # Open loop only: the rate asked for, how late the harness sent each submit after its slot
    # (p50, p99), and where the applications' time went (stages.py).
    offered_rate: float = 0.0
    send_lag_ms: tuple[float, float] = (0.0, 0.0)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


@dataclass
class RouteResult:
    nodes: int
    concurrency: int
    closed_loop: Phase
    half_rate: Phase
    half_rate_target: float
    grpc_echo_rate: float
    ratio: float
    sweep: list[Phase] = field(default_factory=list)
    rss_mb: dict[str, float] = field(default_factory=dict)
    targets: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (fields 14 and 15 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def context_switches(pid: int) -> int:
    """Voluntary and involuntary context switches of every thread of one process so far (a
    thread that has ended takes its count with it)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0
    total = 0
    for task in tasks:
        try:
            status = (task / "status").read_text()
        except OSError:  # the thread ended
            continue
        total += sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches:" in line)
    return total


@dataclass(frozen=True)
class Usage:
    """What the node processes together and this harness have used so far."""

    nodes_cpu_s: float
    harness_cpu_s: float
    nodes_switches: int
    harness_switches: int


# Request bodies made per origin before the first phase, then used in turn (each submit has its
# own idempotency key, so each is an application of its own). Made during a phase, a body's
# random form was charged to the cores the nodes share: the harness's CPU per application in
# the closed loop went from 0.43-0.46 ms to 0.34-0.43 ms when they were made beforehand.
BODIES_PER_ORIGIN = 1024


class Driver:
    """Submits through the counters and matches completions seen by the watcher."""

    def __init__(self, cluster: Cluster, plan: dict[str, list[Target]], concurrency: int):
        self.cluster = cluster
        self.submitters = {
            i: Submitter.for_url(n.http_url, n.token, concurrency) for i, n in cluster.nodes.items()
        }
        self.watcher = CompletionWatcher({i: n.db_path for i, n in cluster.nodes.items()})
        self.sent: dict[str, float] = {}  # application id -> submit sent (monotonic)
        # The same instants on the wall clock the nodes stamp their databases with.
        self.wall_offset = time.time() - time.monotonic()
        self.rng = random.Random(1)
        self._keys = itertools.count()
        self._origins = itertools.cycle(sorted(plan))
        self._bodies = {
            origin: itertools.cycle(
                [application_json(self.rng.choice(listed), self.rng) for _ in range(BODIES_PER_ORIGIN)]
            )
            for origin, listed in plan.items()
        }

    async def one(self, phase: Phase, lags: list[float] | None = None, slot: float = 0.0) -> None:
        origin = next(self._origins)
        body = next(self._bodies[origin])
        if lags is not None:
            lags.append((time.monotonic() - slot) * 1000)
        try:
            status, doc, sent = await self.submitters[origin].submit(body, f"b{next(self._keys)}")
        except OSError as e:  # SubmitFailed is a ConnectionError
            phase.error(type(e).__name__)
            return
        if status == 201 and isinstance(doc.get("id"), str):
            self.sent[doc["id"]] = sent
            phase.submitted += 1
        elif status in (403, 429):
            phase.refused += 1
        else:
            phase.error(f"{status} {doc.get('code', '')}")

    def close(self) -> None:
        for submitter in self.submitters.values():
            submitter.close()

    async def watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.watcher.poll()
            await asyncio.sleep(POLL_S)

    async def drain(self, ids: set[str]) -> None:
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while not ids <= self.watcher.final.keys():
            if time.monotonic() > deadline:
                missing = len(ids - self.watcher.final.keys())
                raise Unavailable(f"{missing} applications not completed after {DRAIN_TIMEOUT_S:.0f} s")
            self.watcher.poll()
            await asyncio.sleep(POLL_S)

    def summarise(self, phase: Phase, ids: set[str], started: float, submit_seconds: float) -> None:
        latencies = sorted((self.watcher.final[i][1] - self.sent[i]) * 1000 for i in ids)
        last = max((self.watcher.final[i][1] for i in ids), default=started)
        phase.completed = sum(1 for i in ids if self.watcher.final[i][0] == "completed")
        phase.seconds = round(last - started, 3)
        phase.rate = round(len(ids) / phase.seconds, 1) if phase.seconds > 0 else 0.0
        phase.accepted_rate = round(phase.submitted / submit_seconds, 1) if submit_seconds > 0 else 0.0
        phase.p50_ms, phase.p90_ms, phase.p99_ms = (
            round(percentile(latencies, q), 1) for q in (0.5, 0.9, 0.99)
        )

    async def closed_loop(self, concurrency: int, count: int | None, duration: float | None) -> Phase:
        phase = Phase()
        before = set(self.sent)
        used_before = self.usage()
        issued = itertools.count()
        start = time.monotonic()
        stop_at = start + duration if duration else float("inf")

        async def client() -> None:
            while time.monotonic() < stop_at and (count is None or next(issued) < count):
                await self.one(phase)

        await asyncio.gather(*(client() for _ in range(concurrency)))
        submit_seconds = time.monotonic() - start
        ids = set(self.sent) - before
        await self.drain(ids)
        self.summarise(phase, ids, start, submit_seconds)
        self.charge(phase, ids, used_before)
        return phase

    def usage(self) -> Usage:
        pids = [n.process.pid for n in self.cluster.nodes.values() if n.process is not None]
        return Usage(
            nodes_cpu_s=sum(cpu_seconds(pid) for pid in pids),
            harness_cpu_s=time.process_time(),
            nodes_switches=sum(context_switches(pid) for pid in pids),
            harness_switches=context_switches(os.getpid()),
        )

    def charge(self, phase: Phase, ids: set[str], before: Usage) -> None:
        """What the phase's applications cost the nodes and the harness, each per application."""
        if ids:
            now, n = self.usage(), len(ids)
            phase.cpu_ms_per_app = round((now.nodes_cpu_s - before.nodes_cpu_s) * 1000 / n, 2)
            phase.harness_cpu_ms_per_app = round((now.harness_cpu_s - before.harness_cpu_s) * 1000 / n, 2)
            phase.switches_per_app = round((now.nodes_switches - before.nodes_switches) / n, 2)
            phase.harness_switches_per_app = round((now.harness_switches - before.harness_switches) / n, 2)

    async def open_loop(self, rate: float, seconds: float, max_in_flight: int) -> Phase:
        """Submissions started at a fixed rate, whatever the answers' pace (up to a cap)."""
        phase = Phase()
        before = set(self.sent)
        used_before = self.usage()
        gate = asyncio.Semaphore(max_in_flight)
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        n = int(rate * seconds)

        lags: list[float] = []

        async def one(slot: float) -> None:
            async with gate:
                await self.one(phase, lags, slot)

        for i in range(n):
            slot = start + i / rate
            delay = slot - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(slot))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        submit_seconds = time.monotonic() - start
        ids = set(self.sent) - before
        await self.drain(ids)
        self.summarise(phase, ids, start, submit_seconds)
        self.charge(phase, ids, used_before)
        phase.offered_rate = rate
        lags.sort()
        phase.send_lag_ms = (round(percentile(lags, 0.5), 1), round(percentile(lags, 0.99), 1))
        phase.stages = self.stages(ids)
        return phase

    def stages(self, ids: set[str]) -> dict[str, dict[str, float]]:
        """Where the time of ``ids`` went, from the nodes' databases (stages.py)."""
        to_wall_ms = {i: (self.sent[i] + self.wall_offset) * 1000 for i in ids}
        seen = {i: (self.watcher.final[i][1] + self.wall_offset) * 1000 for i in ids}
        return stages.breakdown({i: n.db_path for i, n in self.cluster.nodes.items()}, to_wall_ms, seen)


async def calls_and_envelopes(cluster: Cluster, http: aiohttp.ClientSession) -> tuple[float, float]:
    """The calls the nodes' senders made so far and the envelopes they carried, from each
    node's /metrics (a node that does not answer, or answers what does not parse, counts
    nothing)."""
    calls = envelopes = 0.0
    for node in cluster.nodes.values():
        try:
            async with http.get(f"{node.http_url}/metrics") as r:
                families = list(text_string_to_metric_families(await r.text()))
        except (aiohttp.ClientError, TimeoutError, ValueError):
            continue
        for family in families:
            if family.name == BATCH_SIZE_METRIC:
                for sample in family.samples:
                    if sample.name == f"{BATCH_SIZE_METRIC}_count":
                        calls += sample.value
                    elif sample.name == f"{BATCH_SIZE_METRIC}_sum":
                        envelopes += sample.value
    return calls, envelopes


async def measured(
    cluster: Cluster, http: aiohttp.ClientSession, phase: Callable[[], Awaitable[Phase]]
) -> Phase:
    """Run ``phase`` and add the envelopes its calls carried on average."""
    calls_before, envelopes_before = await calls_and_envelopes(cluster, http)
    done = await phase()
    calls, envelopes = await calls_and_envelopes(cluster, http)
    if calls > calls_before:
        done.envelopes_per_call = round((envelopes - envelopes_before) / (calls - calls_before), 2)
    return done


async def wait_catalogues(cluster: Cluster, http: aiohttp.ClientSession, expected: int) -> None:
    """Until every counter lists every member's services (catalogue sync has run)."""
    deadline = time.monotonic() + 60
    while True:
        counts = [await count_services(http, n.http_url, n.token) for n in cluster.nodes.values()]
        if all(c >= expected for c in counts):
            return
        if time.monotonic() > deadline:
            raise Unavailable(f"catalogues not synced after 60 s: {counts} of {expected}")
        await asyncio.sleep(0.5)


async def run(
    *,
    concurrency: int = 32,
    count: int | None = 2000,
    duration: float | None = None,
    half_rate_seconds: float = 10.0,
    half_rate: float | None = None,
    echo_seconds: float = 5.0,
    warmup: int = 40,
    sweep: Sequence[float] = (),
    work_dir: Path | None = None,
) -> RouteResult:
    with tempfile.TemporaryDirectory(prefix="yrd-bench-route-", dir=work_dir) as tmp:
        root = Path(tmp)
        specs = open_specs(root, PROVINCES)
        cluster = Cluster(root / "nodes", specs)
        await cluster.prepare()
        plan = targets(specs)
        expected = service_count(specs)
        try:
            await cluster.start()
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
                await wait_catalogues(cluster, http, expected)
                driver = Driver(cluster, plan, concurrency)
                stop = asyncio.Event()
                watcher = asyncio.create_task(driver.watch(stop))
                try:
                    await driver.closed_loop(min(concurrency, warmup), warmup, None)
                    closed = await measured(
                        cluster, http, functools.partial(driver.closed_loop, concurrency, count, duration)
                    )
                    half = half_rate or max(1.0, closed.rate / 2)
                    half_phase = await measured(
                        cluster,
                        http,
                        functools.partial(driver.open_loop, half, half_rate_seconds, concurrency * 4),
                    )
                    swept = [
                        await measured(
                            cluster,
                            http,
                            functools.partial(driver.open_loop, rate, half_rate_seconds, concurrency * 4),
                        )
                        for rate in sweep
                    ]
                finally:
                    stop.set()
                    await watcher
                    driver.watcher.close()
                    driver.close()
            rss = {i: round(n.rss_mb() or 0.0, 1) for i, n in cluster.nodes.items()}
        finally:
            await cluster.stop()
    echo_rate = await echo.measure(concurrency, echo_seconds, free_port())
    return RouteResult(
        nodes=len(specs),
        concurrency=concurrency,
        closed_loop=closed,
        half_rate=half_phase,
        half_rate_target=round(half, 1),
        grpc_echo_rate=round(echo_rate, 1),
        ratio=round(closed.rate / echo_rate, 4) if echo_rate else 0.0,
        sweep=swept,
        rss_mb=rss,
        targets={
            "rate": TARGET_RATE,
            "ratio": TARGET_RATIO,
            "p99_ms_at_half_rate": TARGET_P99_MS,
            "rss_mb": TARGET_RSS_MB,
            "cpu_ms_per_app": TARGET_CPU_MS_PER_APP,
        },
    )
