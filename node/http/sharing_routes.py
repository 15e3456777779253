"""The data-sharing API (docs/sharing.md): the data catalogue, data requests and their
decisions, grants revoked, consented queries merged on one screen, the disclosure logs and the
meter. Handlers only translate, as in counter_routes.py; the backend checks roles."""

from __future__ import annotations

from aiohttp import web

from node.counter.contract import request_digest
from node.counter.sharing_contract import (
    parse_data_request,
    parse_decision,
    parse_disclosure_filter,
    parse_meter_filter,
    parse_query,
    parse_revoke,
    parse_search,
)
from node.http.context import BACKEND, IDEMPOTENCY_HEADER, LIMITS, idempotency_key, json_body, principal_of

routes = web.RouteTableDef()


@routes.get("/api/v1/data-resources")
async def list_data_resources(request: web.Request) -> web.Response:
    principal = principal_of(request)
    found = await request.app[BACKEND].list_data_resources(principal, *parse_search(request.query))
    return web.json_response({"resources": found})


@routes.post("/api/v1/queries")
async def query_data(request: web.Request) -> web.Response:
    principal = principal_of(request)
    query = parse_query(await json_body(request), request.app[LIMITS])
    return web.json_response(await request.app[BACKEND].query_data(principal, query))


@routes.post("/api/v1/data-requests")
async def request_data(request: web.Request) -> web.Response:
    principal = principal_of(request)
    key = None
    if request.headers.get(IDEMPOTENCY_HEADER) is not None:  # optional here, unlike applications
        key = idempotency_key(request)
    doc = await json_body(request)
    body = parse_data_request(doc, request.app[LIMITS], request_digest(doc))
    created = await request.app[BACKEND].request_data(principal, body, key)
    return web.json_response(
        created, status=201, headers={"Location": f"/api/v1/data-requests/{created['id']}"}
    )


@routes.get("/api/v1/data-requests")
async def list_data_requests(request: web.Request) -> web.Response:
    return web.json_response(await request.app[BACKEND].list_data_requests(principal_of(request)))


@routes.post("/api/v1/data-requests/{id}/decision")
async def decide_data_request(request: web.Request) -> web.Response:
    principal = principal_of(request)
    kwargs = parse_decision(await json_body(request), request.app[LIMITS])
    decided = await request.app[BACKEND].decide_data_request(principal, request.match_info["id"], **kwargs)
    return web.json_response(decided)


@routes.post("/api/v1/grants/{id}/revoke")
async def revoke_grant(request: web.Request) -> web.Response:
    principal = principal_of(request)
    note = parse_revoke(await json_body(request), request.app[LIMITS])
    return web.json_response(
        await request.app[BACKEND].revoke_grant(principal, request.match_info["id"], note)
    )


@routes.get("/api/v1/disclosures")
async def disclosures(request: web.Request) -> web.Response:
    found = await request.app[BACKEND].disclosures(
        principal_of(request), *parse_disclosure_filter(request.query)
    )
    return web.json_response({"disclosures": found})


@routes.get("/api/v1/data-meter")
async def data_meter(request: web.Request) -> web.Response:
    found = await request.app[BACKEND].data_meter(principal_of(request), *parse_meter_filter(request.query))
    return web.json_response(found)
