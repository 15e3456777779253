"""The operator console: the node, its keys, policy and catalogue, each peer's link with its
dead letters, and charts of the last hour. Counts and times only, never personal data."""

from __future__ import annotations

from aiohttp import web
from markupsafe import Markup

from core.errors import NotFound
from node.cases.requests import Principal
from node.web.core import WEB_BACKEND, WEB_CLOCK, page, redirect, render
from node.web.sampler import SERIES, Sampler, peer_rtt_ms, svg_chart

routes = web.RouteTableDef()
SAMPLER = web.AppKey("yrd_web_sampler", Sampler)


@routes.get("/web/console")
@page
async def console(request: web.Request, principal: Principal) -> web.StreamResponse:
    backend = request.app[WEB_BACKEND]
    facts = await backend.console(principal)
    dead = await backend.dead_letters(principal)
    now = request.app[WEB_CLOCK].now_ms()
    sampler = request.app[SAMPLER]
    # Our own markup from numbers only: safe to mark as such.
    charts = {name: Markup(svg_chart(sampler.points(name), now)) for name in SERIES}
    return render(
        request, "console.html", principal, facts=facts, dead=dead, now=now, charts=charts, rtt=peer_rtt_ms()
    )


@routes.post("/web/console/dead-letters/{entry}/redrive")
@page
async def redrive(request: web.Request, principal: Principal) -> web.StreamResponse:
    try:
        entry = int(request.match_info["entry"])
    except ValueError:
        raise NotFound("no such dead letter") from None
    await request.app[WEB_BACKEND].redrive(principal, entry)
    return redirect("/web/console")
