"""Property test of the HTTP front against its own served OpenAPI document (schemathesis).

Generated requests, valid and not, must never get a 5xx nor an answer the document does
not describe. Bounded by example count, never by wall-clock time. A fake core stands
behind the backend protocol, so what is tested is the front: contract, routing, errors.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from argon2 import PasswordHasher
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection

from core.clock import FakeClock
from core.db import Database
from node.counter.contract import CounterLimits
from node.counter.users import UserStore
from node.http import build_http_app
from node.http.openapi import build_openapi
from tests.test_http_api import PASSWORD, FakeBackend

LIMITS = CounterLimits(max_body_bytes=64 * 1024, max_attachments=3, max_attachment_bytes=1024)
schema = schemathesis.openapi.from_dict(build_openapi(LIMITS))


class _Server:
    """The app on a loopback port, in its own thread and loop (schemathesis calls are sync)."""

    def __init__(self, tmp: Path) -> None:
        self.db = Database(f"sqlite:///{tmp / 'node.db'}")
        self.db.create_all()
        clock = FakeClock()
        self.users = UserStore(self.db, clock, PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
        self.app = build_http_app(FakeBackend(), self.users, clock, LIMITS)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner = web.AppRunner(self.app)
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result()

    async def _start(self) -> int:
        await self.users.add_user("li.clerk", PASSWORD, "clerk")
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        return int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()
        self.db.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    s = _Server(tmp_path_factory.mktemp("schemathesis"))
    base = f"http://127.0.0.1:{s.port}"
    login = requests.post(f"{base}/api/v1/session", json={"username": "li.clerk", "password": PASSWORD})
    token = login.json()["token"]
    try:
        yield base, {"Authorization": f"Bearer {token}"}
    finally:
        s.close()


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_no_5xx_and_every_answer_is_documented(case: Any, server: tuple[str, dict[str, str]]) -> None:
    base, auth = server
    headers = {} if case.path == "/api/v1/session" and case.method == "DELETE" else auth
    # Unknown query parameters are ignored, as HTTP servers do; everything else is checked.
    case.call_and_validate(
        base_url=base,
        headers={**headers, **(case.headers or {})},
        excluded_checks=[negative_data_rejection],
    )
