"""A department webhook decides applications for its service; failures are retried."""

from __future__ import annotations

import dataclasses
import random
import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from aiohttp import web

from simulations.local_federation import PROVINCES, SAMPLES
from simulations.sample_applications import application_body
from tests.support.federation import Federation, allow_all_specs


def webhook_catalogue(tmp: Path) -> Path:
    doc = tomllib.loads((SAMPLES / "zhejiang.toml").read_text())
    for service in doc["services"]:
        if service["id"] == "zj.industrial-licence":
            service["handler"] = "webhook"
    path = tmp / "zhejiang-webhook.toml"
    path.write_text(tomli_w.dumps(doc))
    return path


async def test_department_webhook_decides_after_a_failed_attempt(tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []

    async def department(request: web.Request) -> web.Response:
        calls.append(await request.json())
        if len(calls) == 1:
            return web.Response(status=503)  # the department's system is briefly down
        return web.json_response({"decision": "approve", "reason": "材料齐全 complete"})

    app = web.Application()
    app.router.add_post("/decide", department)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]

    specs = [s for s in allow_all_specs(tmp_path, PROVINCES) if s.node_id in ("jiangsu", "zhejiang")]
    specs = [
        dataclasses.replace(s, catalogue=webhook_catalogue(tmp_path)) if s.node_id == "zhejiang" else s
        for s in specs
    ]
    fed = await Federation(
        tmp_path, specs, extra={"handlers": {"webhook_url": f"http://127.0.0.1:{port}/decide"}}
    ).start()
    try:
        defn = fed.nodes["jiangsu"].index.get("zj.industrial-licence")
        assert defn.handler == "webhook"
        status, created = await fed.submit("jiangsu", application_body(defn, random.Random(3)), "w1")
        assert status == 201, created
        view = await fed.wait_status("jiangsu", created["id"], {"completed"})
        assert view["history"][-2]["reason"] == "材料齐全 complete"
        assert len(calls) == 2
        sent = calls[-1]["application"]
        assert sent["id"] == created["id"] and sent["applicant"]["id_number"]
    finally:
        await fed.close()
        await runner.cleanup()
