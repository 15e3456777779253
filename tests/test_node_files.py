"""The node's own files: a database is born only by ``yrd node init``; a missing, empty or
damaged one is refused at start with a ``yrd:`` line; databases and logs are private
(0600 in 0700 folders); a node that hangs is killed and restarted by the demo supervisor."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from core.clock import FakeClock, SystemClock
from core.db import Database
from core.errors import ConfigError
from node.app import build_node, create_node_database, open_node_database
from node.cli.main import main
from node.config import NodeConfig
from simulations.demo.layout import DemoNode, NodeAccounts, lay_out
from simulations.demo.supervisor import NodeProcess, Supervisor, healthz_answers
from simulations.local_federation import PROVINCES, free_port, prepare

ZHEJIANG = [p for p in PROVINCES if p.node_id == "zhejiang"]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def config(tmp_path: Path) -> NodeConfig:
    return prepare(tmp_path, ZHEJIANG, now_ms=SystemClock().now_ms())[0]


def db_path(config: NodeConfig) -> Path:
    return config.data_dir / "node.db"


def run_node(config: NodeConfig, capsys: pytest.CaptureFixture[str]) -> str:
    """``yrd node run`` as an operator types it; the one ``yrd:`` line it ends with."""
    assert main(["node", "run", "--config", str(config.data_dir / "node.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("yrd: ") and "Traceback" not in err, err
    return err


def test_a_missing_database_is_refused_and_not_recreated(
    config: NodeConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    db_path(config).unlink()
    err = run_node(config, capsys)
    assert "database_missing" in err and "yrd node init" in err
    assert not db_path(config).exists()


def test_an_empty_database_is_refused(config: NodeConfig, capsys: pytest.CaptureFixture[str]) -> None:
    db_path(config).write_bytes(b"")
    assert "database_empty" in run_node(config, capsys)
    db_path(config).unlink()
    with sqlite3.connect(db_path(config)) as conn:  # a valid SQLite file without our tables
        conn.execute("PRAGMA user_version = 1")
    assert "database_empty" in run_node(config, capsys)


@pytest.mark.parametrize("where", ["header", "page"])
def test_a_damaged_database_is_refused(
    config: NodeConfig, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    path = db_path(config)
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 3 * page
    if where == "header":
        data[:16] = b"not a database!!"
    else:  # the b-tree pages of the first tables
        data[page : 3 * page] = bytes([0xA5]) * (2 * page)
    path.write_bytes(bytes(data))
    assert "database_corrupt" in run_node(config, capsys)


def test_a_database_is_never_created_over_one_that_exists(config: NodeConfig) -> None:
    with pytest.raises(ConfigError) as e:
        create_node_database(config)
    assert e.value.code == "database_exists"


def test_node_init_creates_a_private_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node_dir = tmp_path / "js"
    argv = ["node", "init", "--jurisdiction", "320000", "--name", "Jiangsu", "--dir", str(node_dir)]
    assert main(argv) == 0
    assert mode(node_dir) == 0o700 and mode(node_dir / "node.db") == 0o600
    capsys.readouterr()
    (node_dir / "node.key").unlink()
    (node_dir / "node.toml").unlink()
    assert main(argv) == 2  # the database of a node that was there is never replaced
    assert "database" in capsys.readouterr().err


async def test_a_running_node_keeps_its_database_files_private(config: NodeConfig) -> None:
    os.chmod(db_path(config), 0o644)  # as an older release left it
    node = build_node(config, SystemClock())
    await node.start()
    try:
        await node.users.add_user("li.clerk", "correct horse battery", "clerk")
        files = [p for p in config.data_dir.iterdir() if p.name.startswith("node.db")]
        assert {p.name for p in files} == {"node.db", "node.db-wal", "node.db-shm"}
        assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    finally:
        await node.stop()
    assert mode(config.data_dir) == 0o700


async def test_a_node_that_cannot_start_releases_what_it_had_started(config: NodeConfig) -> None:
    """The HTTP port is taken after gRPC is listening: start fails, and the gRPC listener and
    the database are released (a leaked server kept a test run from exiting)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        http = f"127.0.0.1:{taken.getsockname()[1]}"
        node = build_node(dataclasses.replace(config, http_listen=http), SystemClock())
        with pytest.raises(OSError):
            await node.start()
    with socket.socket() as again:
        again.bind(("127.0.0.1", node.grpc_port))  # the gRPC port is free again
    node = build_node(config, SystemClock())  # and the database opens again
    await node.start()
    await node.stop()


OLD_USER_ACCOUNT = (  # user_account as the first release made it
    "CREATE TABLE user_account (username VARCHAR NOT NULL PRIMARY KEY, role VARCHAR NOT NULL, "
    "password_hash VARCHAR NOT NULL, created_at_ms BIGINT NOT NULL)",
    "INSERT INTO user_account VALUES ('li.clerk', 'clerk', 'x', 1)",
)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_older_database_is_refused_until_yrd_db_upgrade(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
        with sqlite3.connect(tmp_path / "old.db") as conn:
            for sql in OLD_USER_ACCOUNT:
                conn.execute(sql)
    else:
        url = request.getfixturevalue("new_pg_schema")()
        old = Database(url)
        with old.engine.begin() as conn:
            for sql in OLD_USER_ACCOUNT:
                conn.exec_driver_sql(sql)
        old.close()
    with pytest.raises(ConfigError, match="yrd db upgrade") as e:  # tests/test_migrations.py upgrades
        open_node_database(
            NodeConfig(node_id="js", jurisdiction="320000", data_dir=tmp_path, database_url=url)
        )
    assert e.value.code == "schema_outdated"


# --- a node that hangs ------------------------------------------------------------------


class FakeProcess:
    pid = 4242

    def __init__(self) -> None:
        self.returncode: int | None = None
        self.kills = 0

    def kill(self) -> None:
        self.kills += 1


async def test_the_supervisor_kills_a_node_that_misses_several_probes_in_a_row(config: NodeConfig) -> None:
    clock = FakeClock()
    answers = iter([True, False, False, True, False, False, False])
    node = DemoNode(ZHEJIANG[0], config, NodeAccounts(*(None,) * 4, department=""))  # type: ignore[arg-type]
    fake = FakeProcess()
    probes = 0

    async def probe(_proc: NodeProcess) -> bool:
        nonlocal probes
        probes += 1
        return next(answers)

    supervisor = Supervisor(
        [node], clock, lambda: None, probe=probe, liveness_interval_s=2.0, liveness_misses=3
    )
    proc = supervisor.processes[0]
    proc.process, proc.ready = fake, True  # type: ignore[assignment]
    task = asyncio.create_task(supervisor._check_liveness(proc))
    for _ in range(100):  # FakeClock: each probe interval passes at once
        await asyncio.sleep(0)
    supervisor._stopping = True
    await asyncio.wait_for(task, 30)
    # Two misses then an answer: nothing. Three misses in a row: one SIGKILL, and no more
    # probes of that process (it is no longer ready) until it has been restarted.
    assert fake.kills == 1 and proc.hang_kills == 1 and not proc.ready
    assert probes == 7


@pytest.mark.slow
async def test_the_demo_supervisor_restarts_a_stopped_node(tmp_path: Path) -> None:
    from tests.test_demo_federation import free_base_port

    clock = SystemClock()
    nodes = await lay_out(tmp_path / "demo", free_base_port(), ZHEJIANG, clock)

    async def probe(proc: NodeProcess) -> bool:
        return await healthz_answers(proc, timeout_s=1.0)

    supervisor = Supervisor(
        nodes, clock, lambda: None, probe=probe, liveness_interval_s=0.5, liveness_misses=3
    )
    pids: list[Any] = []
    try:
        await supervisor.start_all()
        supervisor.watch()
        proc = supervisor.processes[0]
        assert mode(nodes[0].log_path) == 0o600 and mode(nodes[0].config.data_dir) == 0o700
        stopped = proc.pid
        assert stopped is not None
        pids.append(stopped)
        os.kill(stopped, signal.SIGSTOP)
        for _ in range(600):  # bounded: 60 s
            if proc.pid != stopped and proc.ready:
                break
            await asyncio.sleep(0.1)
        pids.append(proc.pid)
        assert proc.pid != stopped and proc.ready and proc.hang_kills >= 1
        assert await healthz_answers(proc, timeout_s=10.0)
    finally:
        await supervisor.stop_all()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(pid, signal.SIGKILL)


def test_free_ports_are_never_handed_out_twice_and_never_ephemeral() -> None:
    """Ports checked free one after the other and bound later: a repeat within one process, or
    one from the kernel's ephemeral range, lets two listeners (or a connection) collide."""
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)
    low, _high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert max(ports) < low
