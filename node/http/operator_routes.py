"""What operators and their monitoring read: health, metrics and the policy decision log.

/healthz and /metrics sit outside /api/v1 and need no token, so load balancers and
Prometheus can read them; the decision log names applicants' matters and is operator-only.
"""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.errors import InvalidInput
from node.http.context import BACKEND, principal_of

log = logging.getLogger(__name__)

MAX_DECISIONS = 1000
DEFAULT_DECISIONS = 100

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """A health check that fails closed: if asking the core raises, the node is not healthy."""
    try:
        ok, details = await request.app[BACKEND].health()
    except Exception:
        log.exception("health check raised")
        ok, details = False, {"error": "health check failed"}
    status = ("degraded" if details.get("stalled_peers") else "ok") if ok else "fail"
    return web.json_response({**details, "status": status}, status=200 if ok else 503)


@routes.get("/metrics")
async def metrics(_request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _int_param(request: web.Request, name: str, low: int, high: int) -> int | None:
    raw = request.query.get(name, "")
    if not raw:
        return None
    bad = InvalidInput(f"{name} must be an integer from {low} to {high}", code="bad_query", field=name)
    try:
        value = int(raw)
    except ValueError as e:
        raise bad from e
    if not low <= value <= high:
        raise bad
    return value


@routes.get("/api/v1/policy/decisions")
async def policy_decisions(request: web.Request) -> web.Response:
    principal = principal_of(request)
    limit = _int_param(request, "limit", 1, MAX_DECISIONS)
    since_ms = _int_param(request, "since", 0, 2**63 - 1)
    decisions = await request.app[BACKEND].policy_decisions(
        principal, DEFAULT_DECISIONS if limit is None else limit, since_ms
    )
    return web.json_response({"decisions": decisions})
