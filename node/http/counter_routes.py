"""The counter API: the catalogue, submitting and following applications, the work queue.

Handlers only translate: shape-check the request (node.counter.contract), call the backend,
wrap its answer.
"""

from __future__ import annotations

from aiohttp import web

from node.counter.api import submit_or_replay
from node.counter.contract import parse_decision, parse_decision_results, parse_resubmit
from node.http.context import BACKEND, LIMITS, idempotency_key, json_body, principal_of

routes = web.RouteTableDef()


def _query_text(request: web.Request, name: str) -> str | None:
    value = request.query.get(name, "").strip()
    return value or None


@routes.get("/api/v1/services")
async def list_services(request: web.Request) -> web.Response:
    services = await request.app[BACKEND].list_services(
        _query_text(request, "q"), _query_text(request, "owner")
    )
    return web.json_response({"services": services})


@routes.post("/api/v1/applications")
async def submit_application(request: web.Request) -> web.Response:
    principal = principal_of(request)
    key = idempotency_key(request)
    doc = await json_body(request)
    created = await submit_or_replay(request.app[BACKEND], principal, key, doc, request.app[LIMITS])
    return web.json_response(
        created, status=201, headers={"Location": f"/api/v1/applications/{created['id']}"}
    )


@routes.get("/api/v1/applications/{id}")
async def get_application(request: web.Request) -> web.Response:
    application = await request.app[BACKEND].get_application(principal_of(request), request.match_info["id"])
    return web.json_response(application)


@routes.post("/api/v1/applications/{id}/release")
async def release(request: web.Request) -> web.Response:
    result = await request.app[BACKEND].release(principal_of(request), request.match_info["id"])
    return web.json_response(result)


@routes.post("/api/v1/applications/{id}/components/{component}/resubmit")
async def resubmit_component(request: web.Request) -> web.Response:
    form, attachments = parse_resubmit(await json_body(request), request.app[LIMITS])
    result = await request.app[BACKEND].resubmit_component(
        principal_of(request), request.match_info["id"], request.match_info["component"], form, attachments
    )
    return web.json_response(result)


@routes.get("/api/v1/worklist")
async def worklist(request: web.Request) -> web.Response:
    applications = await request.app[BACKEND].worklist(principal_of(request))
    return web.json_response({"applications": applications})


@routes.post("/api/v1/applications/{id}/decision")
async def decide(request: web.Request) -> web.Response:
    principal = principal_of(request)
    doc = await json_body(request)
    decision, reason, documents = parse_decision(doc, request.app[LIMITS])
    results = parse_decision_results(doc, request.app[LIMITS])
    result = await request.app[BACKEND].decide(
        principal, request.match_info["id"], decision, reason, documents, results=results
    )
    return web.json_response(result)
