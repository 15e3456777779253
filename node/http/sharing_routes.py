"""The data-sharing API (docs/sharing.md): the data catalogue, data requests and their
decisions, grants revoked, consented queries merged on one screen, the disclosure logs and the
meter. Handlers only translate, as in counter_routes.py; the backend checks roles."""

from __future__ import annotations

import re

from aiohttp import web

from core.errors import InvalidInput
from node.counter.contract import request_digest
from node.counter.sharing_contract import parse_data_request, parse_decision, parse_query, parse_revoke
from node.http.context import BACKEND, IDEMPOTENCY_HEADER, LIMITS, idempotency_key, json_body, principal_of

routes = web.RouteTableDef()

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
SIDES = ("asker", "holder")
SUBJECT_KINDS = ("person", "company")


def _query(
    request: web.Request, name: str, limit: int = 200, pattern: re.Pattern[str] | None = None
) -> str | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if len(value) > limit or (pattern is not None and not pattern.fullmatch(value)):
        raise InvalidInput(f"not a valid {name}", code="bad_value", field=name)
    return value


def _choice(request: web.Request, name: str, choices: tuple[str, ...], default: str | None) -> str | None:
    value = request.query.get(name) or default
    if value is not None and value not in choices:
        raise InvalidInput(f"one of {', '.join(choices)}", code="bad_value", field=name)
    return value


@routes.get("/api/v1/data-resources")
async def list_data_resources(request: web.Request) -> web.Response:
    found = await request.app[BACKEND].list_data_resources(
        principal_of(request),
        _query(request, "q"),
        _query(request, "holder", 12, re.compile(r"\d{2,12}")),
        _choice(request, "sharing", ("unconditional", "conditional", "not_shared"), None),
    )
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
        principal_of(request),
        _choice(request, "subject_kind", SUBJECT_KINDS, "person") or "person",
        _query(request, "subject_id", 18),
        _choice(request, "side", SIDES, None),
    )
    return web.json_response({"disclosures": found})


@routes.get("/api/v1/data-meter")
async def data_meter(request: web.Request) -> web.Response:
    found = await request.app[BACKEND].data_meter(
        principal_of(request),
        _query(request, "since", 10, _DAY),
        _query(request, "until", 10, _DAY),
        _query(request, "resource", 128),
    )
    return web.json_response(found)
