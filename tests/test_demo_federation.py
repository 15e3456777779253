"""``yrd demo`` as a newcomer runs it: real node processes under the supervisor, on 127.0.0.1.

Everything goes through what an outsider has: the state file, the counter HTTP API, OS
signals, and (to count rows at the owner) the owner's SQLite file opened read-only.
Every wait is bounded; nothing asserts on how long anything took.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node.models import InboundApplication, StatusEvent
from registry.catalogue import load_catalogue_file
from simulations.local_federation import SAMPLES
from simulations.sample_applications import application_body

pytestmark = pytest.mark.slow

WORKLIST_SERVICE = "zj.industrial-licence"
AUTO_SERVICE = "zj.medical.cross-region-filing"
AUTO_JOURNEY = ["submitted", "delivered", "in_review", "approved", "completed"]
WORKLIST_JOURNEY = ["submitted", "delivered", "in_review"]
WAIT_S = 45.0
POLL_S = 0.1


def free_base_port() -> int:
    """A base whose 4 gRPC and 4 HTTP ports are free, below the ephemeral range that
    other tests' port-0 servers draw from."""
    for _ in range(50):
        base = random.randrange(20_000, 30_000)
        try:
            for port in [*range(base, base + 4), *range(base + 100, base + 104)]:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no free port range found")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def eventually(what: str, probe: Callable[[], Any], seconds: float = WAIT_S) -> Any:
    """Poll ``probe`` (sync or async) until it returns something truthy."""
    for _ in range(int(seconds / POLL_S)):
        result = probe()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Demo:
    process: asyncio.subprocess.Process
    state_file: Path
    data_dir: Path
    output: Path

    def state(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.state_file.read_text())
        return document

    def node(self, node_id: str) -> dict[str, Any]:
        return next(n for n in self.state()["nodes"] if n["id"] == node_id)

    def pids(self) -> set[int]:
        return {n["pid"] for n in self.state()["nodes"]} if self.state_file.exists() else set()


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    state_file, output = tmp_path / "state.json", tmp_path / "demo.out"
    with output.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "node.cli.main",
            "demo",
            "--base-port",
            str(free_base_port()),
            "--data-dir",
            str(tmp_path / "demo"),
            "--state-file",
            str(state_file),
            "--no-sample",
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    d = Demo(process, state_file, tmp_path / "demo", output)
    seen: set[int] = set()
    try:

        def started() -> bool:
            assert process.returncode is None, output.read_text()
            return state_file.exists()

        await eventually("the state file", started)
        yield d
    finally:
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            seen |= d.pids()
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
        # Never leave a node behind, whatever the test did to the supervisor.
        for pid in seen:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


class Counter:
    def __init__(self, http: aiohttp.ClientSession, node: dict[str, Any], role: str = "clerk") -> None:
        self.http, self.base, self.node, self.token = http, node["http"], node, ""
        self.account = node["accounts"][role]

    async def login(self) -> Counter:
        body = {"username": self.account["username"], "password": self.account["password"]}
        async with self.http.post(f"{self.base}/api/v1/session", json=body) as r:
            assert r.status == 200, await r.text()
            self.token = (await r.json())["token"]
        return self

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        async with self.http.request(method, self.base + path, headers=headers, **kwargs) as r:
            return r.status, await r.json(content_type=None)

    async def knows(self, *service_ids: str) -> bool:
        status, body = await self.call("GET", "/api/v1/services?owner=33")
        return status == 200 and set(service_ids) <= {s["id"] for s in body["services"]}

    async def submit(self, body: dict[str, Any], key: str) -> str:
        status, created = await self.call(
            "POST", "/api/v1/applications", json=body, headers={"Idempotency-Key": key}
        )
        assert status == 201, created
        assert created["owner_node"] == "zhejiang"
        app_id: str = created["id"]
        return app_id

    async def view(self, app_id: str) -> dict[str, Any]:
        status, view = await self.call("GET", f"/api/v1/applications/{app_id}")
        assert status == 200, view
        result: dict[str, Any] = view
        return result

    async def status_in(self, app_id: str, wanted: set[str]) -> dict[str, Any] | None:
        view = await self.view(app_id)
        return view if view["status"] in wanted else None


def bodies() -> Callable[[str, int], dict[str, Any]]:
    _, definitions = load_catalogue_file(SAMPLES / "zhejiang.toml")
    by_id = {d.service_id: d for d in definitions}
    return lambda service_id, seed: application_body(by_id[service_id], random.Random(seed))


async def healthy(http: aiohttp.ClientSession, node: dict[str, Any]) -> bool:
    try:
        async with http.get(f"{node['http']}/healthz") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


async def restarted(demo: Demo, node_id: str, old_pid: int) -> int:
    """The supervisor's new pid for ``node_id``, once its counter answers again."""

    def new_pid() -> int | None:
        pid: int = demo.node(node_id)["pid"]
        return pid if pid != old_pid else None

    pid: int = await eventually(f"{node_id} restarted", new_pid)
    async with aiohttp.ClientSession() as http:
        await eventually(f"{node_id} healthy", lambda: healthy(http, demo.node(node_id)))
    return pid


async def test_demo_routes_a_decision_restarts_a_killed_node_and_stops_cleanly(demo: Demo) -> None:
    state = demo.state()
    assert [n["id"] for n in state["nodes"]] == ["shanghai", "jiangsu", "zhejiang", "anhui"]
    for n in state["nodes"]:
        assert {"id", "name", "jurisdiction", "grpc", "http", "pid", "username", "password"} <= n.keys()
        assert n["username"] == f"clerk-{n['id']}" and alive(n["pid"])
    make = bodies()
    async with aiohttp.ClientSession() as http:
        jiangsu = await Counter(http, demo.node("jiangsu")).login()
        zhejiang = await Counter(http, demo.node("zhejiang"), "owner_clerk").login()
        status, _ = await (await Counter(http, demo.node("zhejiang")).login()).call("GET", "/api/v1/worklist")
        assert status == 403  # a counter clerk does not see the owner's work queue
        await eventually("the Zhejiang catalogue at Jiangsu", lambda: jiangsu.knows(WORKLIST_SERVICE))

        app_id = await jiangsu.submit(make(WORKLIST_SERVICE, 1), "demo-1")
        await eventually("in_review at Jiangsu", lambda: jiangsu.status_in(app_id, {"in_review"}))
        status, work = await zhejiang.call("GET", "/api/v1/worklist")
        assert status == 200 and app_id in {a["id"] for a in work["applications"]}
        status, decided = await zhejiang.call(
            "POST", f"/api/v1/applications/{app_id}/decision", json={"decision": "approve", "reason": "核准"}
        )
        assert status == 200, decided
        view = await eventually("completed at Jiangsu", lambda: jiangsu.status_in(app_id, {"completed"}))
        assert [h["status"] for h in view["history"]] == [*WORKLIST_JOURNEY, "approved", "completed"]

    old_pid = demo.node("anhui")["pid"]
    os.kill(old_pid, signal.SIGKILL)
    new_pid = await restarted(demo, "anhui", old_pid)
    assert alive(new_pid)

    pids = demo.pids() | {old_pid}
    demo.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(demo.process.wait(), 30) == 0
    assert not any(alive(pid) for pid in pids)
    assert not demo.state_file.exists()


def read_only(db: Path, query: str, ids: list[str]) -> list[tuple[Any, ...]]:
    """Rows of ``query`` (with ``{ids}`` for the id list) from a live node's SQLite file."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute(query.format(ids=",".join("?" * len(ids))), ids).fetchall()


def inbound_counts(db: Path, ids: list[str]) -> dict[str, int]:
    query = f"SELECT id, COUNT(*) FROM {InboundApplication.__tablename__} WHERE id IN ({{ids}}) GROUP BY id"
    return dict(read_only(db, query, ids))


def origin_sequences(db: Path, ids: list[str]) -> dict[str, list[int]]:
    """Each application's status event sequence numbers at the origin, in stored order."""
    table = StatusEvent.__tablename__
    query = f"SELECT application_id, sequence FROM {table} WHERE application_id IN ({{ids}}) ORDER BY id"
    sequences: dict[str, list[int]] = {}
    for app_id, sequence in read_only(db, query, ids):
        sequences.setdefault(app_id, []).append(sequence)
    return sequences


async def test_sigkill_of_the_owner_mid_flight_loses_and_duplicates_nothing(demo: Demo) -> None:
    make = bodies()
    services = [AUTO_SERVICE if i % 2 else WORKLIST_SERVICE for i in range(20)]
    async with aiohttp.ClientSession() as http:
        jiangsu = await Counter(http, demo.node("jiangsu")).login()
        await eventually(
            "Zhejiang services at Jiangsu", lambda: jiangsu.knows(AUTO_SERVICE, WORKLIST_SERVICE)
        )
        ids = [await jiangsu.submit(make(s, i), f"batch-{i}") for i, s in enumerate(services[:10])]
        # The owner dies while the first half is in flight; the second half is submitted
        # while it is down, so it can only arrive through retries after the restart.
        old_pid = demo.node("zhejiang")["pid"]
        os.kill(old_pid, signal.SIGKILL)
        ids += [await jiangsu.submit(make(s, i), f"batch-{i}") for i, s in enumerate(services[10:], 10)]
        await restarted(demo, "zhejiang", old_pid)

        views = []
        for app_id, service in zip(ids, services, strict=True):
            final = "completed" if service == AUTO_SERVICE else "in_review"
            views.append(
                await eventually(f"{app_id} {final}", lambda a=app_id, f=final: jiangsu.status_in(a, {f}))
            )
        for view, service in zip(views, services, strict=True):
            # Exactly the journey, each status once and in order: nothing was applied twice.
            assert [h["status"] for h in view["history"]] == (
                AUTO_JOURNEY if service == AUTO_SERVICE else WORKLIST_JOURNEY
            )

        zhejiang = await Counter(http, demo.node("zhejiang"), "owner_clerk").login()
        status, work = await zhejiang.call("GET", "/api/v1/worklist")
        assert status == 200
        listed = [a["id"] for a in work["applications"] if a["id"] in ids]
        expected = [i for i, s in zip(ids, services, strict=True) if s == WORKLIST_SERVICE]
        assert sorted(listed) == sorted(expected)

    assert inbound_counts(demo.data_dir / "zhejiang" / "node.db", ids) == dict.fromkeys(ids, 1)
    sequences = origin_sequences(demo.data_dir / "jiangsu" / "node.db", ids)
    assert all(sequences[i] == list(range(len(v["history"]))) for i, v in zip(ids, views, strict=True))
