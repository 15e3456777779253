"""The demo's health-code screen (docs/sharing.md): a clerk at Shanghai asks, with the
citizen's recorded consent, for the health code (Shanghai 大数据中心), the latest nucleic-acid
result (Jiangsu 卫生健康统计信息中心) and the vaccination record (Zhejiang 免疫规划信息系统) of
one person, and gets one merged view; asked again without consent, every holder refuses."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from core.clock import Clock
from core.errors import Unavailable
from simulations.demo.layout import DemoNode
from simulations.demo.sample import CATALOGUE_TIMEOUT_S, POLL_S, CounterClient

SCREEN_ASKER = "shanghai"
SCREEN = ("sh.health-code", "js.nucleic-acid", "zj.vaccination")
# The demo citizen: a record in every province (registry/samples/data_records/).
CITIZEN = "310101199003071230"


def screen_query(consent: bool, now: datetime) -> dict[str, Any]:
    body: dict[str, Any] = {
        "subject": {"kind": "person", "id": CITIZEN},
        "purpose": "health-check",
        "resources": [{"id": r} for r in SCREEN],
        "deadline_ms": 3000,
    }
    if consent:
        body["consent"] = {
            "given_by": "张三",
            "subject_id": CITIZEN,
            "resources": list(SCREEN),
            "purpose": "health-check",
            "until": (now + timedelta(hours=1)).isoformat(),
        }
    return body


def _item_line(item: dict[str, Any]) -> str:
    where = f"{item['holder_node']:<9} {item.get('department', '')}"
    if item["outcome"] == "answered":
        values = ", ".join(f"{k}={v}" for k, v in item["fields"].items())
        return f"  {item['resource_id']:<16} {where}  {values}  (updated {item['updated_at']})"
    return f"  {item['resource_id']:<16} {where}  {item['outcome']}: {item['reason_code']}"


async def _wait_for_resources(counter: CounterClient, clock: Clock) -> None:
    started = clock.monotonic()
    while clock.monotonic() - started < CATALOGUE_TIMEOUT_S:
        found = await counter.call("GET", "/api/v1/data-resources")
        if set(SCREEN) <= {r["id"] for r in found["resources"]}:
            return
        await clock.sleep(POLL_S)
    raise Unavailable("the data catalogue did not reach the asker in time", code="catalogue_not_synced")


async def show_health_screen(asker: DemoNode, clock: Clock, out: Callable[[str], None]) -> dict[str, Any]:
    """Ask the screen with consent and print the merged view, then without; the first view."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        counter = CounterClient(http, asker.http_url)
        await counter.login(asker.accounts.clerk)
        await _wait_for_resources(counter, clock)
        now = datetime.fromtimestamp(clock.now_ms() / 1000, UTC)
        view: dict[str, Any] = await counter.call("POST", "/api/v1/queries", json=screen_query(True, now))
        out(f"\nHealth-code screen at {asker.spec.node_id} for citizen {CITIZEN[:6]}…, with consent:")
        for item in view["items"]:
            out(_item_line(item))
        refused = await counter.call("POST", "/api/v1/queries", json=screen_query(False, now))
        out("The same screen without consent:")
        for item in refused["items"]:
            out(_item_line(item))
        out(f"  disclosures: GET {asker.http_url}/api/v1/disclosures?subject_id=<id> (at every holder too)")
        return view
