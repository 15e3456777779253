"""Real node processes on 127.0.0.1 for the benchmarks and the simulations.

Each node is ``yrd node run`` in its own OS process and session, exactly as an operator
runs it; the harness only lays out the directories (through :mod:`local_federation`),
creates one clerk account per node directly in its database (as ``yrd users add`` does),
and signals the processes. Starting and readiness are simulations/processes.py, shared
with the demo's supervisor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import subprocess
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from core.clock import SystemClock
from core.db import Database
from node.config import NodeConfig, load_config
from node.counter.users import UserStore
from simulations.local_federation import LOAD_LIMITS, NodeSpec, prepare
from simulations.processes import node_command, open_log, wait_ready

log = logging.getLogger(__name__)

# The accounts of each node; their passwords are random per run and never printed or kept.
CLERK = "clerk"
SUPERVISOR = "supervisor"
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 10.0


@dataclass
class NodeProcess:
    spec: NodeSpec
    config: NodeConfig
    token: str = ""  # the clerk's
    supervisor_token: str = ""
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


async def create_accounts(config: NodeConfig) -> tuple[str, str]:
    """Open session tokens of a counter clerk (who submits) and a supervisor (who may decide
    the owner's applications, as the load plays the owner's clerk), written before the node
    starts; passwords are random and never kept."""
    db = Database(config.database_url)
    try:
        db.create_all()
        store = UserStore(db, SystemClock())
        tokens = []
        for name, role in ((CLERK, "clerk"), (SUPERVISOR, "supervisor")):
            password = secrets.token_urlsafe(16)
            await store.add_user(name, password, role)
            token, _expires = await store.login(name, password)
            tokens.append(token)
        return tokens[0], tokens[1]
    finally:
        db.close()


def edit_config(config: NodeConfig, settings: dict[str, object]) -> NodeConfig:
    """Rewrite the top-level keys of a node's node.toml (None removes one) and reload it,
    so a mistake is refused here, by the node's own parser, rather than at its start."""
    path = config.data_dir / "node.toml"
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    for key, value in settings.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return load_config(path)


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
            overrides = (extra_for or {}).get(spec.node_id)
            config = edit_config(laid_out, overrides) if overrides else laid_out
            token, supervisor = await create_accounts(config)
            self.nodes[spec.node_id] = NodeProcess(spec, config, token, supervisor)

    def configure(self, node_id: str, settings: dict[str, object]) -> None:
        """Change a node's node.toml (it takes effect at its next start): each key is set,
        or removed when its value is None."""
        node = self.nodes[node_id]
        node.config = edit_config(node.config, settings)

    async def start(self, node_ids: Sequence[str] | None = None) -> None:
        ids = list(node_ids or self.nodes)
        offsets = {i: self._spawn(self.nodes[i]) for i in ids}
        await asyncio.gather(*(self._wait_ready(self.nodes[i], offsets[i]) for i in ids))

    def _spawn(self, node: NodeProcess) -> int:
        with open_log(node.log_path) as log_file:
            offset = log_file.tell()
            node.process = subprocess.Popen(
                node_command(node.config.data_dir / "node.toml"),
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
        await wait_ready(
            node.node_id,
            node.log_path,
            offset,
            running=lambda: node.running,
            timeout_s=READY_TIMEOUT_S,
            clock=SystemClock(),
        )

    async def restart(self, node_id: str) -> None:
        """Start a node that is not running (after a kill or a stop) and wait until it is ready."""
        node = self.nodes[node_id]
        offset = self._spawn(node)
        await self._wait_ready(node, offset)

    async def stop_node(self, node_id: str) -> None:
        """Stop one node gracefully, as an operator does before changing its files."""
        await self._terminate([self.nodes[node_id]])

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
        """Stop every node gracefully."""
        await self._terminate(list(self.nodes.values()))

    async def _terminate(self, nodes: Sequence[NodeProcess]) -> None:
        """SIGTERM (after SIGCONT, so a paused node can hear it); SIGKILL stragglers."""
        live = [n for n in nodes if n.running]
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
