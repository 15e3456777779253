"""Two replicas of one node (the same id, key and PostgreSQL database) as separate
``yrd node run`` processes behind a TCP balancer; one is SIGKILLed in the middle of a burst.

Nothing is lost (every application the clerks were given an id for completes), nothing is
handled twice (the owner stores and decides each once, the origin records each status once),
the audit chain the two replicas wrote together verifies, and the origin's outbound quota of
N admits N applications in total across the replicas, not N each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tomllib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import tomli_w
from sqlmodel import col, func, select

from core.clock import SystemClock
from core.db import Database
from core.keys import load_key
from node import migrations
from node.config import NodeConfig
from node.counter.users import UserStore
from node.delivery.relaying import DELIVER
from node.models import Application, OutboxEntry, StatusEvent
from node.trust.audit import load_chain, verify_chain
from policies.signing import sign_bundle
from registry.catalogue import load_catalogue_file
from simulations.local_federation import BUNDLES, PROVINCES, SAMPLES, free_port, prepare
from simulations.sample_applications import application_body

pytestmark = pytest.mark.slow

SERVICE = "zj.medical.cross-region-filing"
QUOTA = 14  # the origin's outbound quota for the service, never refilled within the test
BURST = 20  # applications submitted; QUOTA of them may pass
KILL_AFTER = 8  # submissions before replica A is killed
PASSWORD = "correct horse battery staple"


class Balancer:
    """A TCP load balancer: each connection goes to the first backend that accepts it,
    starting from the next in turn, as any TCP balancer with health checks would."""

    def __init__(self, port: int, backends: list[int]) -> None:
        self.port, self.backends, self._turn = port, backends, 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        try:
            await self._link(reader, writer)
        except asyncio.CancelledError:
            writer.close()
        finally:
            self._links.discard(task)

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._turn += 1
        for i in range(len(self.backends)):
            port = self.backends[(self._turn + i) % len(self.backends)]
            try:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
            await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))
            return
        writer.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._links):
            task.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)


def tight_bundle(directory: Path) -> Path:
    """Jiangsu's shipped bundle with its outbound per-service quota cut to QUOTA, no refill."""
    text = (BUNDLES / "jiangsu.yaml").read_text()
    old = "    kind: application\n    per_minute: 120\n    burst: 40\n"
    assert old in text
    path = directory / "jiangsu-tight.yaml"
    path.write_text(text.replace(old, f"    kind: application\n    per_minute: 0.001\n    burst: {QUOTA}\n"))
    return path


def replica_config(base: Path, name: str, url: str, grpc: int, http: int) -> Path:
    """The node's node.toml with its own listen ports and the shared database: one replica."""
    doc = tomllib.loads((base / "node.toml").read_text())
    doc.update(database_url=url, grpc_listen=f"127.0.0.1:{grpc}", http_listen=f"127.0.0.1:{http}")
    path = base / f"{name}.toml"
    path.write_text(tomli_w.dumps(doc))
    return path


def spawn(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "node.cli.main", "node", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def tail(log: Path) -> str:
    return log.read_text()[-3000:]


async def wait_http(http: aiohttp.ClientSession, base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(600):
        assert proc.poll() is None, tail(log)
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(f"{base}/healthz") as r:
                if r.status in (200, 503):
                    return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{base} did not come up: {tail(log)}")


async def login(http: aiohttp.ClientSession, base: str) -> str:
    async with http.post(f"{base}/api/v1/session", json={"username": "clerk", "password": PASSWORD}) as r:
        assert r.status == 200, await r.text()
        token: str = (await r.json())["token"]
        return token


async def settle(url: str, count: int) -> None:
    db = Database(url)
    try:
        for _ in range(900):
            done = await db.run(
                lambda s: len(
                    s.exec(
                        select(OutboxEntry.id).where(
                            col(OutboxEntry.method) == DELIVER, col(OutboxEntry.state) == "done"
                        )
                    ).all()
                )
            )
            if done == count:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{done} of {count} deliveries settled")
    finally:
        db.close()


@contextlib.asynccontextmanager
async def balanced(port: int, backends: list[int]) -> AsyncIterator[Balancer]:
    lb = Balancer(port, backends)
    await lb.start()
    try:
        yield lb
    finally:
        await lb.close()


def check_origin(url: str, created: list[str]) -> None:
    origin = Database(url)
    try:
        apps = origin.transact(lambda s: s.exec(select(Application.id)).all())
        delivers = origin.transact(
            lambda s: s.exec(
                select(OutboxEntry.item_id, OutboxEntry.state).where(col(OutboxEntry.method) == DELIVER)
            ).all()
        )
        events = origin.transact(
            lambda s: s.exec(
                select(StatusEvent.application_id, func.count()).group_by(StatusEvent.application_id)
            ).all()
        )
        chain = origin.transact(load_chain)
    finally:
        origin.close()
    assert sorted(apps) == sorted(created)  # nothing lost, nothing extra
    assert sorted(item for item, _state in delivers) == sorted(created)  # one delivery each
    assert {state for _item, state in delivers} == {"done"}
    assert len({n for _app, n in events}) == 1  # every application has the same status history length
    assert chain and list(verify_chain(chain)) == []  # both replicas wrote one chain


def check_owner(zj: NodeConfig, created: list[str]) -> None:
    zj_path = Database(zj.database_url).sqlite_path
    assert zj_path is not None
    with sqlite3.connect(zj_path) as conn:
        inbound = dict(conn.execute("SELECT id, receipt_run IS NOT NULL FROM inbound_application"))
        status_items = [r[0] for r in conn.execute("SELECT item_id FROM outbox_entry")]
    assert sorted(inbound) == sorted(created)  # handled once each at the owner
    per_app = Counter(item.split("#")[0] for item in status_items)
    assert len(status_items) == len(set(status_items))  # no status sent twice
    # Each decided once: its changes rode on the Deliver receipt, kept for a copy's receipt
    # (docs/protocol.md 10.6), or went out as one status item.
    assert all(per_app[app] + rode == 1 for app, rode in inbound.items())


class Clerks:
    """The clerk at each replica's counter (one account: the replicas share its table)."""

    def __init__(self, http: aiohttp.ClientSession, bases: dict[str, str]) -> None:
        self.http, self.bases = http, bases
        self.tokens: dict[str, str] = {}
        _owner, definitions = load_catalogue_file(SAMPLES / "zhejiang.toml")
        self.defn = next(d for d in definitions if d.service_id == SERVICE)
        self.rng = random.Random(15)

    async def log_in(self) -> None:
        for n, base in self.bases.items():
            self.tokens[n] = await login(self.http, base)
            for _ in range(200):  # the replica pulls the owner's catalogue at start
                if SERVICE in await self.get(n, "/api/v1/services"):
                    break
                await asyncio.sleep(0.1)

    async def get(self, n: str, path: str) -> str:
        async with self.http.get(
            f"{self.bases[n]}{path}", headers={"Authorization": f"Bearer {self.tokens[n]}"}
        ) as r:
            return await r.text()

    async def submit(self, n: str, i: int) -> tuple[int, Any]:
        async with self.http.post(
            f"{self.bases[n]}/api/v1/applications",
            json=application_body(self.defn, self.rng),
            headers={"Authorization": f"Bearer {self.tokens[n]}", "Idempotency-Key": f"burst-{i}"},
        ) as r:
            return r.status, await r.json()

    async def wait_completed(self, n: str, created: list[str]) -> None:
        pending = set(created)
        for _ in range(1200):
            for app_id in list(pending):
                if json.loads(await self.get(n, f"/api/v1/applications/{app_id}"))["status"] == "completed":
                    pending.discard(app_id)
            if not pending:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"not completed: {pending}")


async def test_two_replicas_one_killed_mid_burst_lose_nothing_and_repeat_nothing(
    tmp_path: Path, new_pg_schema: Callable[[], str], processes: list[subprocess.Popen[bytes]]
) -> None:
    specs = [p for p in PROVINCES if p.node_id in ("jiangsu", "zhejiang")]
    js_lb, zj_grpc = free_port(), free_port()
    js, zj = prepare(tmp_path, specs, now_ms=SystemClock().now_ms(), grpc_ports=[js_lb, zj_grpc])
    shutil.copyfile(tight_bundle(tmp_path), js.data_dir / "policy.yaml")
    sign_bundle(js.data_dir / "policy.yaml", load_key(js.key_file))

    url = new_pg_schema()
    db = Database(url)
    migrations.upgrade(db.engine)  # `yrd db upgrade`, once for both replicas
    await UserStore(db, SystemClock()).add_user("clerk", PASSWORD, "clerk")
    db.close()

    ports = {"a": (free_port(), free_port()), "b": (free_port(), free_port())}
    tomls = {n: replica_config(js.data_dir, f"replica-{n}", url, g, h) for n, (g, h) in ports.items()}
    logs = {n: tmp_path / f"{n}.log" for n in ("zhejiang", "a", "b")}
    async with balanced(js_lb, [ports["a"][0], ports["b"][0]]), aiohttp.ClientSession() as http:
        processes.append(spawn(zj.data_dir / "node.toml", logs["zhejiang"]))
        await wait_http(http, f"http://{zj.http_listen}", processes[0], logs["zhejiang"])
        processes.extend(spawn(tomls[n], logs[n]) for n in ("a", "b"))
        clerks = Clerks(http, {n: f"http://127.0.0.1:{ports[n][1]}" for n in ("a", "b")})
        for i, n in enumerate(("a", "b")):
            await wait_http(http, clerks.bases[n], processes[1 + i], logs[n])
        await clerks.log_in()

        created: list[str] = []
        for i in range(BURST):
            if i == KILL_AFTER:
                processes[1].send_signal(signal.SIGKILL)  # replica A, its outbox work in flight
                processes[1].wait()
            status, body = await clerks.submit("b" if i >= KILL_AFTER else "ab"[i % 2], i)
            assert status == 201 or body["code"] == "quota", body
            created.extend([body["id"]] if status == 201 else [])
        assert len(created) == QUOTA  # N in total across the replicas, not N per replica

        await clerks.wait_completed("b", created)
        # What A had sent but not settled when it died is resent by B once A's lease lapses
        # (node/delivery/outbox.py, 30 s); the owner answers it as a duplicate, and B settles it.
        await settle(url, len(created))

    for p in (processes[2], processes[0]):
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=15)
    check_origin(url, created)
    check_owner(zj, created)
