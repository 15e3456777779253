"""Real node processes on 127.0.0.1 for the benchmarks and the simulations.

Each node is ``yrd node run`` in its own OS process and session, exactly as an operator
runs it; the harness only lays out the directories (through :mod:`local_federation`),
creates one clerk account per node directly in its database (as ``yrd users add`` does),
and signals the processes. Readiness is the node's own ``ready <id>`` log line, read from
the offset where this start began, so a restarted node is not taken for ready by the line
its previous life left.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from core.clock import SystemClock
from core.db import Database
from core.errors import Unavailable
from node.config import NodeConfig, load_config
from node.counter.users import UserStore
from simulations.local_federation import LOAD_LIMITS, NodeSpec, prepare

log = logging.getLogger(__name__)

# The one account per node; its password is random per run and never printed or kept.
CLERK = "clerk"
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 10.0


@dataclass
class NodeProcess:
    spec: NodeSpec
    config: NodeConfig
    token: str = ""
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False
    starts: int = 0
    pids: list[int] = field(default_factory=list)

    @property
    def node_id(self) -> str:
        return self.spec.node_id

    @property
    def log_path(self) -> Path:
        return self.config.data_dir / "node.log"

    @property
    def db_path(self) -> Path:
        return self.config.data_dir / "node.db"

    @property
    def http_url(self) -> str:
        return f"http://{self.config.http_listen}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rss_mb(self) -> float | None:
        """Resident memory from /proc (VmRSS), None when the process is gone."""
        if not self.running:
            return None
        assert self.process is not None
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None


async def create_clerk(config: NodeConfig, password: str) -> str:
    """A clerk account and an open session token, written before the node starts."""
    db = Database(config.database_url)
    try:
        db.create_all()
        store = UserStore(db, SystemClock())
        await store.add_user(CLERK, password, "clerk")
        token, _expires = await store.login(CLERK, password)
        return token
    finally:
        db.close()


class Cluster:
    """A federation of node processes laid out under ``root``."""

    def __init__(self, root: Path, specs: Sequence[NodeSpec], *, extra: dict[str, object] | None = None):
        self.root = root
        self.specs = list(specs)
        self.extra = {"limits": LOAD_LIMITS, **(extra or {})}
        self.nodes: dict[str, NodeProcess] = {}

    async def prepare(
        self,
        *,
        grpc_ports: list[int] | None = None,
        http_ports: list[int] | None = None,
        extra_for: dict[str, dict[str, object]] | None = None,
    ) -> None:
        """Lay out every node (keys, manifest, catalogues, bundles) and its clerk account.

        ``grpc_ports`` are the ports written into the manifest (where peers dial);
        ``extra_for`` overrides single nodes' settings afterwards (a proxy in front of a
        node makes it listen elsewhere than the manifest says; a city node polls less)."""
        now = int(time.time() * 1000)
        configs = prepare(
            self.root, self.specs, now_ms=now, grpc_ports=grpc_ports, http_ports=http_ports, extra=self.extra
        )
        for spec, laid_out in zip(self.specs, configs, strict=True):
            config = laid_out
            overrides = (extra_for or {}).get(spec.node_id)
            if overrides:
                path = laid_out.data_dir / "node.toml"
                doc = tomllib.loads(path.read_text())
                doc.update(overrides)
                path.write_text(tomli_w.dumps(doc))
                config = load_config(path)
            token = await create_clerk(config, secrets.token_urlsafe(16))
            self.nodes[spec.node_id] = NodeProcess(spec, config, token)

    async def start(self, node_ids: Sequence[str] | None = None) -> None:
        ids = list(node_ids or self.nodes)
        offsets = {i: self._spawn(self.nodes[i]) for i in ids}
        await asyncio.gather(*(self._wait_ready(self.nodes[i], offsets[i]) for i in ids))

    def _spawn(self, node: NodeProcess) -> int:
        node.log_path.parent.mkdir(parents=True, exist_ok=True)
        with node.log_path.open("ab") as log_file:
            offset = log_file.tell()
            node.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "node.cli.main",
                    "node",
                    "run",
                    "--config",
                    str(node.config.data_dir / "node.toml"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        node.starts += 1
        node.paused = False
        node.pids.append(node.process.pid)
        return offset

    async def _wait_ready(self, node: NodeProcess, offset: int) -> None:
        marker = f"ready {node.node_id} ".encode()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            with node.log_path.open("rb") as f:
                f.seek(offset)
                if any(line.startswith(marker) for line in f):
                    return
            if not node.running:
                raise Unavailable(
                    f"node {node.node_id} exited before it was ready; see {node.log_path}",
                    code="node_start_failed",
                )
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"node {node.node_id} not ready after {READY_TIMEOUT_S:.0f} s; see {node.log_path}",
                    code="node_start_timeout",
                )
            await asyncio.sleep(0.1)

    async def restart(self, node_id: str) -> None:
        node = self.nodes[node_id]
        offset = self._spawn(node)
        await self._wait_ready(node, offset)

    def kill(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if node.running:
            assert node.process is not None
            node.process.send_signal(signal.SIGKILL)
            node.process.wait()

    def pause(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if node.running and not node.paused:
            assert node.process is not None
            os.kill(node.process.pid, signal.SIGSTOP)
            node.paused = True

    def resume(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if node.running and node.paused:
            assert node.process is not None
            os.kill(node.process.pid, signal.SIGCONT)
            node.paused = False

    async def stop(self) -> None:
        """SIGTERM every node (after SIGCONT, so a paused one can hear it); SIGKILL stragglers."""
        live = [n for n in self.nodes.values() if n.running]
        for node in live:
            assert node.process is not None
            if node.paused:
                self.resume(node.node_id)
            node.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for node in live:
            assert node.process is not None
            while node.process.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # a child's exit has no awaitable without a watcher
            if node.process.poll() is None:
                log.warning("node %s ignored SIGTERM; killing it", node.node_id)
                node.process.kill()
                node.process.wait()
