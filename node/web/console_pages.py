"""The operator console: the node, its keys, policy and catalogue, each peer's link with its
dead letters, and charts of the last hour. Counts and times only, never personal data."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import REGISTRY

from core.errors import NotFound
from node.cases.requests import Principal
from node.web.core import WEB_BACKEND, WEB_CLOCK, page, redirect, render
from node.web.sampler import SERIES, Sampler, peer_rtt_ms, svg_chart
from registry.dispatch import DOMAINS

routes = web.RouteTableDef()
SAMPLER = web.AppKey("yrd_web_sampler", Sampler)


@routes.get("/web/console")
@page
async def console(request: web.Request, principal: Principal) -> web.StreamResponse:
    from markupsafe import Markup  # comes with jinja2, loaded at the first page (node/web/core.py)

    backend = request.app[WEB_BACKEND]
    facts = await backend.console(principal)
    dead = await backend.dead_letters(principal)
    now = request.app[WEB_CLOCK].now_ms()
    sampler = request.app[SAMPLER]
    # Our own markup from numbers only: safe to mark as such.
    charts = {name: Markup(svg_chart(sampler.points(name), now)) for name in SERIES}
    return render(
        request,
        "console.html",
        principal,
        facts=facts,
        dead=dead,
        now=now,
        charts=charts,
        rtt=peer_rtt_ms(),
        clues=clue_figures(),
    )


# The clue metrics (node/metrics.py CLUES_*) by the console's column, by sample name.
CLUE_COLUMNS = {
    "yrd_clues_received_total": "received",
    "yrd_clues_open_entries": "open",
    "yrd_clues_overdue_entries": "overdue",
    "yrd_clues_escalated_total": "escalated",
    "yrd_clues_closed_total": "closed",
}


@dataclass
class ClueFigures:
    domain: str
    name: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLUE_COLUMNS.values(), 0))


def clue_figures() -> list[ClueFigures]:
    """This node's clue metrics summed over regions, one row per domain that has any: counts
    only (the metrics carry domain and region, never a subject or a reporter). Read from the
    registry, as the charts are, so the console shows what Prometheus scrapes."""
    rows = {d: ClueFigures(d, name) for d, name in DOMAINS.items()}
    for metric in REGISTRY.collect():
        if not metric.name.startswith("yrd_clues_"):
            continue
        for sample in metric.samples:
            column = CLUE_COLUMNS.get(sample.name)
            row = rows.get(sample.labels.get("domain", ""))
            if column is not None and row is not None:
                row.counts[column] += int(sample.value)
    return [r for r in rows.values() if any(r.counts.values())]


@routes.post("/web/console/dead-letters/{entry}/redrive")
@page
async def redrive(request: web.Request, principal: Principal) -> web.StreamResponse:
    try:
        entry = int(request.match_info["entry"])
    except ValueError:
        raise NotFound("no such dead letter") from None
    await request.app[WEB_BACKEND].redrive(principal, entry)
    return redirect("/web/console")
