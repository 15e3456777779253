"""What a handler can reach: the typed app keys and the request helpers built on them.

Kept apart from app.py so route modules and the factory do not import each other.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from core.clock import Clock
from core.errors import InvalidInput, PermissionDenied
from node.cases.requests import Principal
from node.counter.api import CounterBackend
from node.counter.users import UserStore
from node.http.bodies import HttpLimits, parse_json_object

BACKEND = web.AppKey[CounterBackend]("yrd_backend")
USERS = web.AppKey("yrd_users", UserStore)
CLOCK = web.AppKey[Clock]("yrd_clock")
LIMITS = web.AppKey("yrd_limits", HttpLimits)
PRINCIPAL = web.RequestKey("yrd_principal", Principal)

IDEMPOTENCY_HEADER = "Idempotency-Key"
_IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,128}")


def principal_of(request: web.Request, *roles: str) -> Principal:
    """The authenticated caller, refused with 403 unless it holds one of ``roles`` (if any)."""
    principal = request[PRINCIPAL]
    if roles and principal.role not in roles:
        raise PermissionDenied(f"this needs the {' or '.join(roles)} role", code="role_required")
    return principal


async def json_body(request: web.Request) -> dict[str, Any]:
    # read() enforces the app's client_max_size and raises 413 past it.
    return parse_json_object(await request.read())


def idempotency_key(request: web.Request) -> str:
    value = request.headers.get(IDEMPOTENCY_HEADER)
    if value is None:
        raise InvalidInput(
            f"the {IDEMPOTENCY_HEADER} header is required", code="missing_header", field=IDEMPOTENCY_HEADER
        )
    if not _IDEMPOTENCY_KEY.fullmatch(value):
        raise InvalidInput(
            f"{IDEMPOTENCY_HEADER} must be 1-128 printable ASCII characters",
            code="bad_header",
            field=IDEMPOTENCY_HEADER,
        )
    return value
