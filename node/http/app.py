"""The factory of the HTTP front; the composition root calls it and runs the result."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from core.clock import Clock
from node.counter.api import CounterBackend
from node.counter.contract import CounterLimits
from node.counter.users import UserStore
from node.http import (
    certificate_routes,
    clue_routes,
    counter_routes,
    openapi,
    operator_routes,
    session_routes,
    sharing_routes,
)
from node.http.context import BACKEND, CLOCK, LIMITS, USERS
from node.http.limits import HTTP_LIMITS, HttpLimits, default_http_limits, limits_middleware
from node.http.metrics import metrics_middleware
from node.http.problems import problem_middleware
from node.web import register as register_pages


class _QuietBadRequests(logging.Filter):
    """aiohttp answers a malformed request (an over-long URL, a broken header) with a 4xx
    and logs it at ERROR with a traceback; anyone could flood the log that way. The answer
    stays; the record drops to DEBUG without the traceback, as aiohttp already does for
    non-HTTP bytes (BadHttpMethod)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, BadHttpMessage):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.msg = f"{record.msg}: {type(exc).__name__}"
            record.exc_info, record.exc_text = None, None
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_QUIET = _QuietBadRequests()


def build_http_app(
    backend: CounterBackend,
    users: UserStore,
    clock: Clock,
    limits: CounterLimits,
    http_limits: HttpLimits | None = None,
) -> web.Application:
    # Order matters: metrics outermost sees the final status; problems turns every failure,
    # including a refused token, into problem+json; auth runs inside it, and the per-account
    # limit inside auth, where the account is known.
    app = web.Application(
        middlewares=[
            metrics_middleware(clock),
            problem_middleware,
            session_routes.auth_middleware,
            limits_middleware,
        ],
        client_max_size=limits.max_body_bytes,
    )
    logging.getLogger("aiohttp.server").addFilter(_QUIET)
    app[BACKEND] = backend
    app[USERS] = users
    app[CLOCK] = clock
    app[LIMITS] = limits
    app[HTTP_LIMITS] = http_limits or default_http_limits(clock)
    for module in (
        session_routes,
        counter_routes,
        operator_routes,
        clue_routes,
        certificate_routes,
        sharing_routes,
        openapi,
    ):
        app.add_routes(module.routes)
    register_pages(app, backend, users, clock, limits)  # the HTML pages (node/web/)
    return app
