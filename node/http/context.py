"""What a handler can reach: the typed app keys and the request helpers built on them.

Kept apart from app.py so route modules and the factory do not import each other.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from core.clock import Clock
from core.json_doc import parse_json_object
from node.cases.requests import Principal
from node.counter.api import CounterBackend
from node.counter.contract import CounterLimits, check_idempotency_key
from node.counter.users import UserStore

BACKEND = web.AppKey[CounterBackend]("yrd_backend")
USERS = web.AppKey("yrd_users", UserStore)
CLOCK = web.AppKey[Clock]("yrd_clock")
LIMITS = web.AppKey("yrd_limits", CounterLimits)
PRINCIPAL = web.RequestKey("yrd_principal", Principal)

IDEMPOTENCY_HEADER = "Idempotency-Key"


def principal_of(request: web.Request) -> Principal:
    """The authenticated caller; what its role may do is the backend's to decide, once for
    both doors (node/counter/backend.py)."""
    principal: Principal = request[PRINCIPAL]
    return principal


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def json_body(request: web.Request) -> dict[str, Any]:
    # A form post or text/plain is not JSON however it parses: refused before reading.
    if not _is_json(request.content_type):
        raise web.HTTPUnsupportedMediaType()
    # read() enforces the app's client_max_size and raises 413 past it.
    return parse_json_object(await request.read())


def idempotency_key(request: web.Request) -> str:
    return check_idempotency_key(request.headers.get(IDEMPOTENCY_HEADER), IDEMPOTENCY_HEADER)
