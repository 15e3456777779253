"""One simulation: lay out, start, load, break, heal, drain, stop, check, report.

The nodes are real ``yrd node run`` processes; when link faults are asked for, each
node's manifest endpoint is a fault proxy in front of it (simulations/simulate/proxy.py).
After the load ends the run waits for the federation to settle (every accepted
application final at its origin and every outbox empty, or a timeout), stops the nodes,
and only then reads the databases for the invariants.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from core.errors import Unavailable
from node.config import NodeConfig
from simulations.cluster import Cluster
from simulations.local_federation import free_port
from simulations.simulate import invariants, node_faults, report
from simulations.simulate.faults import Fault, parse_kinds, random_schedule, schedule_from_file
from simulations.simulate.load import Load, Surge, accepted, answered, parse_mix
from simulations.simulate.proxy import LinkFaults, Proxy
from simulations.simulate.topology import LIGHT_DELIVERY, Topology, resolve
from simulations.traffic import (
    CompletionWatcher,
    completion_poll_s,
    count_services,
    open_ro,
    open_specs,
    service_count,
)

log = logging.getLogger(__name__)

SAMPLE_S = 1.0
CATALOGUE_WAIT_S = 75.0
MAX_SKEW_MS = NodeConfig.max_skew_ms  # the simulated nodes keep the default


@dataclass
class Options:
    topology: str = "provinces"
    duration_s: float = 60.0
    rate: float | None = None  # default by topology
    mix: str = "auto=3,worklist=1"
    decide_delay_s: float = 1.0
    faults: str = ""
    schedule: Path | None = None
    seed: int = 1
    out: Path = Path("simulation-report")
    work_dir: Path | None = None
    drain_timeout_s: float = 90.0
    progress: bool = True
    surge: Surge | None = None  # a window of the load at a multiple of the rate


@dataclass
class Sample:
    t: float
    queues: dict[str, int]
    rss_mb: dict[str, float]


@dataclass
class Run:
    options: Options
    topology: Topology
    cluster: Cluster
    faults: list[Fault]
    load: Load
    watcher: CompletionWatcher
    t0: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    drained: bool = False
    settle_s: float = 0.0
    late_answers: int = 0  # query items a holder answered after the asker's deadline
    proxies: dict[str, Proxy] = field(default_factory=dict)
    links: LinkFaults = field(default_factory=LinkFaults)

    def now(self) -> float:
        return time.monotonic() - self.t0


def default_rate(topology: Topology) -> float:
    return 20.0 if len(topology.specs) <= 8 else 4.0


async def simulate(options: Options, console: Console | None = None) -> tuple[bool, Path]:
    console = console or Console(stderr=True)
    with contextlib.ExitStack() as stack:
        root = options.work_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="yrd-simulate-"))
        )
        topology = resolve(options.topology, root)
        kinds = parse_kinds(options.faults)
        ids = topology.node_ids
        faults = (
            schedule_from_file(options.schedule, ids)
            if options.schedule
            else random_schedule(kinds, ids, options.duration_s, options.seed, max_skew_ms=MAX_SKEW_MS)
        )
        cluster = Cluster(root / "nodes", open_specs(root, topology.specs))
        run = await _start(options, topology, cluster, faults, console)
        try:
            await _drive(run, console)
        finally:
            await cluster.stop()
            for proxy in run.proxies.values():
                await proxy.stop()
            run.watcher.close()
        paths = {i: n.db_path for i, n in cluster.nodes.items()}
        subs, queries = run.load.submissions, run.load.queries
        asked = answered(queries) if "query" in run.load.mix else None
        checks = invariants.check(paths, accepted(subs), accepted(subs, "bundle"), asked)
        if asked is not None:
            run.late_answers = invariants.late_answers(paths)
        checks += node_faults.fault_checks(run.faults, MAX_SKEW_MS)
        for f in run.faults:
            if f.kind == "skew" and f.applied_at_s is not None:
                f.observed["stamped_ahead_retries"] = invariants.retried_as_ahead(paths, f.node)
            if f.kind == "rotate" and "switch_ms" in f.observed:
                f.observed["sealed_before_opened_after"] = invariants.sealed_before_opened_after(
                    paths, f.node, f.observed["switch_ms"]
                )
        doc = report.build(run, checks)
        out = report.write(options.out, doc)
        ok = all(c.ok for c in checks)
        report.print_kinds(console, doc["kinds"])
        report.print_checks(console, checks)
        return ok, out


async def _start(
    options: Options,
    topology: Topology,
    cluster: Cluster,
    faults: list[Fault],
    console: Console,
) -> Run:
    links_needed = any(f.kind in ("partition", "latency") for f in faults)
    manifest_ports = [free_port() for _ in topology.specs]
    # Light nodes poll less; with a rotation every node gossips often enough to see it spread.
    delivery: dict[str, dict[str, float]] = {i: {} for i in topology.node_ids}
    for node_id in topology.light:
        delivery[node_id].update(LIGHT_DELIVERY)
    if any(f.kind == "rotate" for f in faults):
        for settings in delivery.values():
            settings["gossip_interval_s"] = node_faults.GOSSIP_INTERVAL_S
    extra_for: dict[str, dict[str, object]] = {i: {"delivery": d} for i, d in delivery.items() if d}
    listen_ports: dict[str, int] = {}
    if links_needed:
        for spec in topology.specs:
            listen_ports[spec.node_id] = free_port()
            extra_for.setdefault(spec.node_id, {})["grpc_listen"] = f"127.0.0.1:{listen_ports[spec.node_id]}"
    console.print(f"laying out {len(topology.specs)} nodes ({topology.name})")
    await cluster.prepare(grpc_ports=manifest_ports, extra_for=extra_for)
    rate = options.rate or default_rate(topology)
    load = Load(cluster, rate, parse_mix(options.mix), options.seed, surge=options.surge)
    watcher = CompletionWatcher({i: n.db_path for i, n in cluster.nodes.items()})
    run = Run(options, topology, cluster, faults, load, watcher)
    if links_needed:

        def pids() -> dict[int, str]:
            return {n.process.pid: i for i, n in cluster.nodes.items() if n.process is not None}

        for spec, port in zip(topology.specs, manifest_ports, strict=True):
            proxy = Proxy(spec.node_id, port, listen_ports[spec.node_id], run.links, pids)
            await proxy.start()
            run.proxies[spec.node_id] = proxy
    console.print(f"starting {len(topology.specs)} node processes")
    try:
        await cluster.start()
    except BaseException:
        await cluster.stop()
        for proxy in run.proxies.values():
            await proxy.stop()
        raise
    return run


async def _wait_catalogues(run: Run, http: aiohttp.ClientSession) -> None:
    expected = service_count([n.spec for n in run.cluster.nodes.values()])
    deadline = time.monotonic() + CATALOGUE_WAIT_S
    while time.monotonic() < deadline:
        counts = [await count_services(http, n.http_url, n.token) for n in run.cluster.nodes.values()]
        if min(counts) >= expected:
            return
        await asyncio.sleep(1.0)
    log.warning(
        "catalogues not all synced after %.0f s; submissions for unknown services will fail", CATALOGUE_WAIT_S
    )


async def _drive(run: Run, console: Console) -> None:
    options = run.options
    timeout = aiohttp.ClientTimeout(total=15)
    connector = aiohttp.TCPConnector(limit=400)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        await _wait_catalogues(run, http)
        run.t0 = time.monotonic()
        stop_decider = asyncio.Event()
        stop_sampling = asyncio.Event()
        tasks = [
            asyncio.create_task(run.load.decide(http, options.decide_delay_s, stop_decider)),
            asyncio.create_task(_sample(run, stop_sampling)),
            *(asyncio.create_task(_apply(run, f)) for f in run.faults),
        ]
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not options.progress,
            transient=False,
        ) as progress:
            bar = progress.add_task("load", total=options.duration_s, status="")

            def show(phase: str) -> None:
                active = [
                    f.label for f in run.faults if f.applied_at_s is not None and f.reverted_at_s is None
                ]
                ok = sum(1 for s in run.load.submissions if s.app_id)
                status = (
                    f"submitted {ok}  final {len(run.watcher.final)}  errors "
                    f"{sum(1 for s in run.load.submissions if s.error)}  {', '.join(active)}"
                )
                progress.update(
                    bar, description=phase, completed=min(run.now(), options.duration_s), status=status
                )

            load_task = asyncio.create_task(run.load.run(http, options.duration_s, run.t0))
            while not load_task.done():
                show("load")
                await asyncio.sleep(0.5)
            await load_task
            await asyncio.gather(*tasks[2:])  # every fault reverted, every killed node back
            show("settling")
            settle_start = time.monotonic()
            run.drained = await _settle(run, lambda: show("settling"))
            run.settle_s = round(time.monotonic() - settle_start, 1)
            stop_decider.set()
            await tasks[0]
            stop_sampling.set()
            await tasks[1]
            show("done")


async def _settle(run: Run, tick: Callable[[], None]) -> bool:
    """Until every accepted application is final at its origin and every outbox empty."""
    wanted = set(accepted(run.load.submissions))
    deadline = time.monotonic() + run.options.drain_timeout_s
    while time.monotonic() < deadline:
        tick()
        if wanted <= run.watcher.final.keys() and run.samples and not any(run.samples[-1].queues.values()):
            return True
        await asyncio.sleep(SAMPLE_S)
    return False


async def _sample(run: Run, stop: asyncio.Event) -> None:
    conns: dict[str, sqlite3.Connection] = {}
    poll_s = completion_poll_s(len(run.topology.specs))  # as the report states it
    while not stop.is_set():
        run.watcher.poll()
        queues: dict[str, int] = {}
        for node_id, node in run.cluster.nodes.items():
            try:
                conn = conns.get(node_id) or conns.setdefault(node_id, open_ro(node.db_path))
                queues[node_id] = conn.execute(
                    "SELECT count(*) FROM outbox_entry WHERE state = 'pending'"
                ).fetchone()[0]
            except sqlite3.Error:
                conns.pop(node_id, None)
                queues[node_id] = -1
        rss = {i: n.rss_mb() or 0.0 for i, n in run.cluster.nodes.items()}
        run.samples.append(Sample(round(run.now(), 2), queues, rss))
        # Completions are polled far more often than queues: their stamp is the latency.
        for _ in range(max(1, round(SAMPLE_S / poll_s))):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_s)
            run.watcher.poll()
    for conn in conns.values():
        conn.close()


async def _apply(run: Run, fault: Fault) -> None:
    """Wait for the fault's window, break something, wait, mend it."""
    await asyncio.sleep(max(0.0, fault.start_s - run.now()))
    cluster, links = run.cluster, run.links
    if fault.kind in ("skew", "rotate"):
        log.info("fault on: %s", fault.label)
        try:
            await (node_faults.skew if fault.kind == "skew" else node_faults.rotate)(cluster, fault, run.now)
        except Unavailable as e:
            log.error("%s: a restart failed: %s", fault.label, e)
        log.info("fault off: %s", fault.label)
        return
    fault.applied_at_s = round(run.now(), 2)
    pairs = [(fault.source, fault.destination)]
    if fault.both_ways:
        pairs.append((fault.destination, fault.source))
    log.info("fault on: %s", fault.label)
    if fault.kind == "kill":
        cluster.kill(fault.node)
    elif fault.kind == "pause":
        cluster.pause(fault.node)
    elif fault.kind == "partition":
        for link in pairs:
            links.cut.add(link)
            run.proxies[link[1]].sever(link)
    elif fault.kind == "latency":
        for link in pairs:
            links.slow[link] = (fault.delay_ms / 1000, fault.loss)
    await asyncio.sleep(max(0.0, fault.start_s + fault.duration_s - run.now()))
    if fault.kind == "kill":
        try:
            await cluster.restart(fault.node)
        except Unavailable as e:
            log.error("restart of %s failed: %s", fault.node, e)
    elif fault.kind == "pause":
        cluster.resume(fault.node)
    elif fault.kind == "partition":
        links.cut.difference_update(pairs)
    elif fault.kind == "latency":
        for link in pairs:
            links.slow.pop(link, None)
    fault.reverted_at_s = round(run.now(), 2)
    log.info("fault off: %s", fault.label)


def summary(run: Run) -> dict[str, Any]:
    """The applications' totals (every kind but queries, which are not applications)."""
    subs = run.load.submissions
    return {
        "submitted": len(subs),
        "accepted": sum(1 for s in subs if s.app_id),
        "errors": sum(1 for s in subs if s.error),
        "shed": run.load.shed,
        "final_at_origin": sum(1 for i in accepted(subs) if i in run.watcher.final),
        "decisions_by_clerk": run.load.decisions,
        "drained": run.drained,
        "settle_s": run.settle_s,
    }
