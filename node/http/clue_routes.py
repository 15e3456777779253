"""The clue API (docs/clues.md): take a clue in, follow it, and the regulator's queue and
steps. Handlers only translate, as in counter_routes.py; the backend checks roles."""

from __future__ import annotations

from aiohttp import web

from node.counter.clue_contract import parse_clue_action, parse_submit_clue
from node.counter.contract import request_digest
from node.http.context import BACKEND, LIMITS, idempotency_key, json_body, principal_of

routes = web.RouteTableDef()


@routes.post("/api/v1/clues")
async def submit_clue(request: web.Request) -> web.Response:
    principal = principal_of(request)
    key = idempotency_key(request)
    doc = await json_body(request)
    digest = request_digest(doc)
    created = await request.app[BACKEND].submit_clue(
        principal, key, parse_submit_clue(doc, request.app[LIMITS], digest)
    )
    return web.json_response(created, status=201, headers={"Location": f"/api/v1/clues/{created['id']}"})


@routes.get("/api/v1/clues")
async def list_clues(request: web.Request) -> web.Response:
    clues = await request.app[BACKEND].list_clues(principal_of(request))
    return web.json_response({"clues": clues})


@routes.get("/api/v1/clues/{id}")
async def get_clue(request: web.Request) -> web.Response:
    clue = await request.app[BACKEND].get_clue(principal_of(request), request.match_info["id"])
    return web.json_response(clue)


async def _act(request: web.Request, action: str) -> web.Response:
    principal = principal_of(request)
    kwargs = parse_clue_action(action, await json_body(request), request.app[LIMITS])
    clue = await request.app[BACKEND].act_on_clue(principal, request.match_info["id"], action, **kwargs)
    return web.json_response(clue)


@routes.post("/api/v1/clues/{id}/acknowledge")
async def acknowledge(request: web.Request) -> web.Response:
    return await _act(request, "acknowledge")


@routes.post("/api/v1/clues/{id}/findings")
async def findings(request: web.Request) -> web.Response:
    return await _act(request, "findings")


@routes.post("/api/v1/clues/{id}/close")
async def close(request: web.Request) -> web.Response:
    return await _act(request, "close")
