"""A small supervisor: each node is its own OS process, restarted when it dies.

Nodes run in their own session so a Ctrl-C at the terminal reaches only the supervisor,
which then stops them in order; otherwise a node could exit on the same SIGINT and be
mistaken for a crash and restarted during shutdown. Starting and readiness (the node's
own ``ready`` line) are simulations/processes.py, shared with the simulations' cluster.

A node that hangs (SIGSTOP, a deadlock) does not exit, so waiting for its exit is not
enough: once ready, each node's ``/healthz`` is probed every few seconds, and a node that
does not answer several times in a row is killed (SIGKILL) and so restarted like a crash.
Any HTTP answer counts as alive, a 503 too: a degraded node is reporting, not hanging.
In production a process manager does the same (docs/deploy.md).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp

from core.clock import Clock
from core.errors import Unavailable
from simulations.demo.layout import DemoNode
from simulations.processes import node_command, open_log, wait_ready

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
INITIAL_BACKOFF_S = 0.5
MAX_BACKOFF_S = 15.0
# A node that stayed up this long before dying is treated as healthy again: backoff restarts small.
STABLE_AFTER_S = 30.0
LIVENESS_INTERVAL_S = 2.0
LIVENESS_TIMEOUT_S = 3.0
LIVENESS_MISSES = 3  # consecutive unanswered probes before the node is killed

Probe = Callable[["NodeProcess"], Awaitable[bool]]


async def healthz_answers(proc: NodeProcess, timeout_s: float = LIVENESS_TIMEOUT_S) -> bool:
    """True when the node's HTTP front answers /healthz at all within ``timeout_s``."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http,
            http.get(f"{proc.node.http_url}/healthz") as r,
        ):
            await r.read()
            return True
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


@dataclass
class NodeProcess:
    node: DemoNode
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    ready: bool = False
    hang_kills: int = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None


class Supervisor:
    """Starts, watches, restarts and stops the node processes.

    ``on_change`` is called after every (re)start so the state file always names the
    live pids.
    """

    def __init__(
        self,
        nodes: Sequence[DemoNode],
        clock: Clock,
        on_change: Callable[[], None],
        *,
        ready_timeout_s: float = READY_TIMEOUT_S,
        stop_timeout_s: float = STOP_TIMEOUT_S,
        probe: Probe = healthz_answers,
        liveness_interval_s: float = LIVENESS_INTERVAL_S,
        liveness_misses: int = LIVENESS_MISSES,
    ) -> None:
        self.processes = [NodeProcess(n) for n in nodes]
        self._clock = clock
        self._on_change = on_change
        self._ready_timeout_s = ready_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._probe = probe
        self._liveness_interval_s = liveness_interval_s
        self._liveness_misses = liveness_misses
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False

    def pids(self) -> dict[str, int | None]:
        return {p.node.spec.node_id: p.pid for p in self.processes}

    async def start_all(self) -> None:
        """Start every node at once and return when all are ready; the first failure
        is raised (the caller stops the rest)."""
        tasks = [asyncio.create_task(self._start(p)) for p in self.processes]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        self._on_change()

    def watch(self) -> None:
        self._watchers = [
            asyncio.create_task(self._watch(p), name=f"watch-{p.node.spec.node_id}") for p in self.processes
        ] + [
            asyncio.create_task(self._check_liveness(p), name=f"liveness-{p.node.spec.node_id}")
            for p in self.processes
        ]

    async def _check_liveness(self, proc: NodeProcess) -> None:
        """Kill a ready node that stops answering; its watcher then restarts it."""
        misses = 0
        while not self._stopping:
            await self._clock.sleep(self._liveness_interval_s)
            process = proc.process
            if not proc.ready or process is None or process.returncode is not None:
                misses = 0
                continue
            if await self._probe(proc):
                misses = 0
                continue
            misses += 1
            if misses < self._liveness_misses or process is not proc.process or self._stopping:
                continue
            log.warning(
                "node %s (pid %d) did not answer /healthz %d times in a row; killing it",
                proc.node.spec.node_id,
                process.pid,
                misses,
            )
            proc.ready = False
            proc.hang_kills += 1
            misses = 0
            if process.returncode is None:
                process.kill()  # SIGKILL also ends a stopped (SIGSTOP) process

    async def _start(self, proc: NodeProcess) -> None:
        node = proc.node
        proc.ready = False
        with open_log(node.log_path) as log_file:
            offset = log_file.tell()
            proc.process = await asyncio.create_subprocess_exec(
                *node_command(node.config_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        proc.started_at = self._clock.monotonic()
        log.info("started node %s (pid %d)", node.spec.node_id, proc.process.pid)
        await wait_ready(
            node.spec.node_id,
            node.log_path,
            offset,
            running=lambda: proc.running,
            timeout_s=self._ready_timeout_s,
            clock=self._clock,
        )
        proc.ready = True

    async def _watch(self, proc: NodeProcess) -> None:
        node_id = proc.node.spec.node_id
        backoff = INITIAL_BACKOFF_S
        while True:
            assert proc.process is not None
            code = await proc.process.wait()
            if self._stopping:
                return
            if self._clock.monotonic() - proc.started_at >= STABLE_AFTER_S:
                backoff = INITIAL_BACKOFF_S
            log.warning(
                "node %s (pid %d) exited with %s; restarting in %.1f s",
                node_id,
                proc.process.pid,
                _describe_exit(code),
                backoff,
            )
            await self._clock.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
            try:
                await self._start(proc)
            except (Unavailable, OSError) as e:
                log.error("restart of node %s failed: %s", node_id, e)
                # Not ready in time but still running: stop it so the loop restarts it afresh.
                await self._terminate(proc)
                continue
            proc.restarts += 1
            log.info("node %s back up (pid %d, restart %d)", node_id, proc.process.pid, proc.restarts)
            self._on_change()

    async def stop_all(self) -> None:
        """SIGTERM every node, SIGKILL whichever has not exited after the timeout."""
        self._stopping = True
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        await asyncio.gather(*(self._terminate(p) for p in self.processes))

    async def _terminate(self, proc: NodeProcess) -> None:
        process = proc.process
        if process is None or process.returncode is not None:
            return
        node_id = proc.node.spec.node_id
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self._stop_timeout_s)
        except TimeoutError:
            log.warning("node %s (pid %d) ignored SIGTERM; killing it", node_id, process.pid)
            process.kill()
            await process.wait()
        log.info("node %s stopped (%s)", node_id, _describe_exit(process.returncode))


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        return signal.Signals(-code).name
    return f"status {code}"
