"""``POST /api/v1/certificates/verify``: an e-certificate checked offline against this
node's manifest (docs/protocol.md, 15). The handler only translates; the backend checks
the role and registry/certificates.py the certificate."""

from __future__ import annotations

from aiohttp import web

from node.counter.certificate_contract import parse_verify
from node.http.context import BACKEND, LIMITS, json_body, principal_of

routes = web.RouteTableDef()


@routes.post("/api/v1/certificates/verify")
async def verify_certificate(request: web.Request) -> web.Response:
    principal = principal_of(request)
    data = parse_verify(await json_body(request), request.app[LIMITS])
    return web.json_response(await request.app[BACKEND].verify_certificate(principal, data))
