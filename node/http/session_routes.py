"""Bearer sessions: logging in and out, and the middleware that admits callers.

Everything under /api/v1 needs a token except logging in and reading the API description;
the check lives in one middleware so a new route is protected without remembering to be.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from core.errors import RateLimited, Unauthenticated, problem_of
from node.counter.contract import SessionRequest, validate
from node.http.context import LIMITS, PRINCIPAL, USERS, json_body
from node.http.problems import problem_response

API_PREFIX = "/api/v1"
SESSION_PATH = f"{API_PREFIX}/session"
OPENAPI_PATH = f"{API_PREFIX}/openapi.json"
_PUBLIC = {(hdrs.METH_POST, SESSION_PATH), (hdrs.METH_GET, OPENAPI_PATH), (hdrs.METH_HEAD, OPENAPI_PATH)}

routes = web.RouteTableDef()


def iso_utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def bearer_token(request: web.Request) -> str:
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is None:
        raise Unauthenticated("a bearer token is required", code="missing_token")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'", code="invalid_token")
    return token.strip()


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else request.path
    if path.startswith(API_PREFIX) and (request.method, path) not in _PUBLIC:
        request[PRINCIPAL] = await request.app[USERS].authenticate(bearer_token(request))
    return await handler(request)


@routes.post(SESSION_PATH)
async def login(request: web.Request) -> web.Response:
    """Throttled per account and per client address (node/counter/throttle.py); a refusal
    is 429 with ``Retry-After`` so a counter screen can say when to try again."""
    creds = validate(SessionRequest, await json_body(request), request.app[LIMITS])
    users = request.app[USERS]
    try:
        token, expires_at_ms = await users.login(creds.username, creds.password, request.remote or "")
    except RateLimited as e:
        status, problem = problem_of(e)
        return problem_response(status, problem, {hdrs.RETRY_AFTER: str(e.extra.get("retry_after_s", 1))})
    principal = await users.authenticate(token)
    return web.json_response({"token": token, "expires_at": iso_utc(expires_at_ms), "role": principal.role})


@routes.delete(SESSION_PATH)
async def logout(request: web.Request) -> web.Response:
    await request.app[USERS].logout(bearer_token(request))
    return web.Response(status=204)
