"""A department webhook decides applications for its service; failures are retried, and a
new application is handed over as soon as it is stored, not at the next poll."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import tomllib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import tomli_w
from aiohttp import web

from simulations.local_federation import PROVINCES, SAMPLES
from simulations.sample_applications import application_body
from tests.support.federation import Federation, allow_all_specs
from tests.support.web_server import served

Department = Callable[[list[dict[str, Any]]], web.Response]


def webhook_catalogue(tmp: Path) -> Path:
    doc = tomllib.loads((SAMPLES / "zhejiang.toml").read_text())
    for service in doc["services"]:
        if service["id"] == "zj.industrial-licence":
            service["handler"] = "webhook"
    path = tmp / "zhejiang-webhook.toml"
    path.write_text(tomli_w.dumps(doc))
    return path


@asynccontextmanager
async def federation_with_department(
    tmp_path: Path, answer: Department
) -> AsyncIterator[tuple[Federation, list[dict[str, Any]]]]:
    """Jiangsu and Zhejiang, whose industrial licence is decided by a department's system
    that ``answer`` plays, given the calls so far (this one included)."""
    calls: list[dict[str, Any]] = []

    async def department(request: web.Request) -> web.Response:
        calls.append(await request.json())
        return answer(calls)

    app = web.Application()
    app.router.add_post("/decide", department)
    specs = [s for s in allow_all_specs(tmp_path, PROVINCES) if s.node_id in ("jiangsu", "zhejiang")]
    specs = [
        dataclasses.replace(s, catalogue=webhook_catalogue(tmp_path)) if s.node_id == "zhejiang" else s
        for s in specs
    ]
    async with served(app) as base:
        fed = await Federation(tmp_path, specs, extra={"handlers": {"webhook_url": f"{base}/decide"}}).start()
        try:
            yield fed, calls
        finally:
            await fed.close()


def approve() -> web.Response:
    return web.json_response({"decision": "approve", "reason": "材料齐全 complete"})


async def submit_licence(fed: Federation, key: str) -> str:
    defn = fed.nodes["jiangsu"].index.get("zj.industrial-licence")
    assert defn.handler == "webhook"
    status, created = await fed.submit("jiangsu", application_body(defn, random.Random(3)), key)
    assert status == 201, created
    return str(created["id"])


async def test_department_webhook_decides_after_a_failed_attempt(tmp_path: Path) -> None:
    def briefly_down(calls: list[dict[str, Any]]) -> web.Response:
        return web.Response(status=503) if len(calls) == 1 else approve()

    async with federation_with_department(tmp_path, briefly_down) as (fed, calls):
        app_id = await submit_licence(fed, "w1")
        view = await fed.wait_status("jiangsu", app_id, {"completed"})
        assert view["history"][-2]["reason"] == "材料齐全 complete"
        assert len(calls) == 2
        sent = calls[-1]["application"]
        assert sent["id"] == app_id and sent["applicant"]["id_number"]


async def test_a_new_application_reaches_the_department_without_waiting_for_a_poll(tmp_path: Path) -> None:
    """The owner wakes its dispatcher when the application commits: with an hour between
    polls, the department still decides it (a city node's 2 s poll was each one's wait)."""
    async with federation_with_department(tmp_path, lambda _calls: approve()) as (fed, calls):
        dispatcher = fed.nodes["zhejiang"].webhooks
        dispatcher.poll_interval_s = 3600
        await asyncio.sleep(0.5)  # the dispatcher's current wait, at the configured interval, runs out
        app_id = await submit_licence(fed, "w-at-once")
        await fed.wait_status("jiangsu", app_id, {"completed"})
        assert [c["application"]["id"] for c in calls] == [app_id]
