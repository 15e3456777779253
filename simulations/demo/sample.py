"""The demo's one routed application, shown the way a counter clerk would follow it.

It goes through the public counter API only (log in, wait for the catalogue, submit,
poll), so what the newcomer watches is exactly what a clerk at the Jiangsu counter sees,
and the elapsed times are those of the counter, not of the nodes' own clocks.
"""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import Callable
from typing import Any

import aiohttp

from core.clock import Clock
from core.errors import NotFound, Unavailable
from node.cases.statuses import FINAL
from registry.catalogue import load_catalogue_file
from registry.dispatch import credit_code_check_character
from simulations.demo.layout import Credentials, DemoNode
from simulations.sample_applications import application_body

log = logging.getLogger(__name__)

SAMPLE_ORIGIN = "jiangsu"
SAMPLE_OWNER = "zhejiang"
SAMPLE_SERVICE = "zj.medical.cross-region-filing"
# 新生儿出生一件事: led by Hangzhou's health commission, parts owned by Hangzhou and by Zhejiang.
SAMPLE_BUNDLE = "zj.hangzhou.newborn"
CATALOGUE_TIMEOUT_S = 30.0
JOURNEY_TIMEOUT_S = 30.0
POLL_S = 0.1


class CounterClient:
    """Just enough of the counter API for the demo, with problem details turned into errors."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str) -> None:
        self._http = http
        self._base = base_url
        self._token = ""

    async def login(self, cred: Credentials) -> None:
        body = {"username": cred.username, "password": cred.password}
        self._token = (await self.call("POST", "/api/v1/session", json=body))["token"]

    async def call(
        self, method: str, path: str, *, json: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        h = {"Authorization": f"Bearer {self._token}", **(headers or {})} if self._token else headers
        async with self._http.request(method, self._base + path, json=json, headers=h) as r:
            answer = await r.json(content_type=None)
            if r.status >= 400:
                raise Unavailable(
                    f"{method} {path} answered {r.status}: {answer.get('detail', answer)}",
                    code="counter_call_failed",
                    field=path,
                )
            return answer


async def _wait_for_service(counter: CounterClient, service_id: str, clock: Clock) -> None:
    """The origin learns other members' catalogues by pulling them after start-up."""
    deadline = clock.monotonic() + CATALOGUE_TIMEOUT_S
    while clock.monotonic() < deadline:
        services = (await counter.call("GET", "/api/v1/services"))["services"]
        if any(s["id"] == service_id for s in services):
            return
        await clock.sleep(POLL_S)
    raise Unavailable(
        f"{service_id} not in the origin's catalogue after {CATALOGUE_TIMEOUT_S:.0f} s",
        code="catalogue_not_synced",
        field=service_id,
    )


def _sample_body(owner: DemoNode, service_id: str) -> dict[str, Any]:
    _, definitions = load_catalogue_file(owner.config.catalogue)
    for defn in definitions:
        if defn.service_id == service_id:
            return application_body(defn, random.Random())
    raise NotFound(f"{owner.spec.node_id} does not publish {service_id}", field="service_id")


def _line(elapsed_s: float, event: dict[str, Any]) -> str:
    reason = f"  {event['reason']}" if event.get("reason") else ""
    return f"  {elapsed_s * 1000:7.0f} ms  {event['status']:<16}{reason}".rstrip()


async def show_sample_journey(
    origin: DemoNode, owner: DemoNode, clock: Clock, out: Callable[[str], None]
) -> str:
    """Submit one application at ``origin`` for a service of ``owner`` and print each
    status as it reaches the origin's counter. Returns the last status seen."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        counter = CounterClient(http, origin.http_url)
        await counter.login(origin.accounts.clerk)
        await _wait_for_service(counter, SAMPLE_SERVICE, clock)
        started = clock.monotonic()
        created = await counter.call(
            "POST",
            "/api/v1/applications",
            json=_sample_body(owner, SAMPLE_SERVICE),
            headers={"Idempotency-Key": f"demo-sample-{secrets.token_hex(8)}"},
        )
        app_id = created["id"]
        out(
            f"\nSample: {SAMPLE_SERVICE} submitted at the {origin.spec.node_id} counter as {app_id}, "
            f"routed to {created['owner_node']}:"
        )
        shown = 0
        status = created["status"]
        while clock.monotonic() - started < JOURNEY_TIMEOUT_S:
            view = await counter.call("GET", f"/api/v1/applications/{app_id}")
            elapsed = clock.monotonic() - started
            for event in view["history"][shown:]:
                out(_line(elapsed, event))
            shown = len(view["history"])
            status = view["status"]
            if status in FINAL:
                documents = ", ".join(d["name"] for d in view.get("documents", []))
                out(f"  done: {status}" + (f", result document {documents}" if documents else ""))
                out(f"  follow it: GET {origin.http_url}/api/v1/applications/{app_id}")
                await _show_bundle(counter, origin, owner, clock, out)
                return str(status)
            await clock.sleep(POLL_S)
        out(f"  still {status} after {JOURNEY_TIMEOUT_S:.0f} s; the supervisor keeps the nodes running")
        return str(status)


CLUE_SOURCE = "shanghai"
CLUE_HANDLER = "jiangsu"
# A Zhangjiagang (320582) food maker supplying Shanghai schools; the check character is computed,
# as a counter would verify it.
CLUE_COMPANY = "91320582MA1N2P3Q4" + credit_code_check_character("91320582MA1N2P3Q4")


def _clue_line(elapsed_s: float, step: dict[str, Any]) -> str:
    who = f"  {step['department']}" if step.get("department") else ""
    note = f"  {step['note']}" if step.get("note") else ""
    return f"  {elapsed_s * 1000:7.0f} ms  {step['step']:<22}{who}{note}".rstrip()


async def show_sample_clue(
    source: DemoNode, handler: DemoNode, clock: Clock, out: Callable[[str], None]
) -> str:
    """Take one food-safety clue in at ``source`` (Shanghai) about a company under
    ``handler`` (Jiangsu); its supervisor handles and closes it; print each step as the
    source sees it (docs/clues.md). Returns the last step seen."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        counter, regulator = CounterClient(http, source.http_url), CounterClient(http, handler.http_url)
        await counter.login(source.accounts.clerk)
        await regulator.login(handler.accounts.supervisor)
        started = clock.monotonic()
        created = await counter.call(
            "POST",
            "/api/v1/clues",
            json={
                "source": "national",
                "region_code": "320582",
                "domains": ["food_drug"],
                "subject": {"credit_code": CLUE_COMPANY},
                "severity": "high",
                "description": "供应上海学校的食品企业抽检不合格 (a school supplier failed a sample check)",
                "acknowledge_within_hours": 4,
                "close_within_days": 7,
            },
            headers={"Idempotency-Key": f"demo-clue-{secrets.token_hex(8)}"},
        )
        clue_id = created["id"]
        out(
            f"\nSample clue: food safety in 320582 taken in at {source.spec.node_id} as {clue_id}, sent to "
            f"{created['owner_node']}:"
        )
        path = f"/api/v1/clues/{clue_id}"
        shown, acted, last = 0, False, created["status"]
        while clock.monotonic() - started < JOURNEY_TIMEOUT_S:
            view = await counter.call("GET", path)
            for step in view["history"][shown:]:
                out(_clue_line(clock.monotonic() - started, step))
            shown, last = len(view["history"]), view["status"]
            if last in ("completed", "refused"):
                out(f"  follow it: GET {source.http_url}{path}")
                return str(last)
            if not acted and last == "dispatched":
                await regulator.call("POST", path + "/acknowledge", json={})
                await regulator.call(
                    "POST",
                    path + "/findings",
                    json={
                        "text": "现场检查属实 (confirmed on site)",
                        "rectification": "停产整改 (stop and fix)",
                    },
                )
                await regulator.call("POST", path + "/close", json={"note": "复查合格 (re-inspected)"})
                acted = True
            await clock.sleep(POLL_S)
        out(f"  still {last} after {JOURNEY_TIMEOUT_S:.0f} s")
        return str(last)


def _parts(view: dict[str, Any]) -> str:
    return ", ".join(f"{c['name']} {c['status']}" for c in view.get("components") or [])


async def _show_bundle(
    counter: CounterClient, origin: DemoNode, owner: DemoNode, clock: Clock, out: Callable[[str], None]
) -> str:
    """One 一件事 submission at the same counter: each change of its parts as the lead reports it."""
    await _wait_for_service(counter, SAMPLE_BUNDLE, clock)
    started = clock.monotonic()
    created = await counter.call(
        "POST",
        "/api/v1/applications",
        json=_sample_body(owner, SAMPLE_BUNDLE),
        headers={"Idempotency-Key": f"demo-bundle-{secrets.token_hex(8)}"},
    )
    app_id = created["id"]
    out(f"\nBundle: {SAMPLE_BUNDLE} (新生儿出生一件事) submitted once at {origin.spec.node_id} as {app_id}:")
    shown = ""
    status = created["status"]
    while clock.monotonic() - started < JOURNEY_TIMEOUT_S:
        view = await counter.call("GET", f"/api/v1/applications/{app_id}")
        status = view["status"]
        line = f"{status:<16}{_parts(view)}"
        if line != shown:
            out(f"  {(clock.monotonic() - started) * 1000:7.0f} ms  {line}".rstrip())
            shown = line
        if status in FINAL:
            for c in view.get("components") or []:
                out(f"    {c['name']:<18}{c['department']} ({c['owner_node']}), due {c['due_at'][:10]}")
            out(f"  follow it: GET {origin.http_url}/api/v1/applications/{app_id}")
            return str(status)
        await clock.sleep(POLL_S)
    out(f"  bundle still {status} after {JOURNEY_TIMEOUT_S:.0f} s")
    return str(status)
