"""The factory of the HTTP front; the composition root calls it and runs the result."""

from __future__ import annotations

from aiohttp import web

from core.clock import Clock
from node.counter.api import CounterBackend
from node.counter.users import UserStore
from node.http import counter_routes, openapi, operator_routes, session_routes
from node.http.bodies import HttpLimits
from node.http.context import BACKEND, CLOCK, LIMITS, USERS
from node.http.metrics import metrics_middleware
from node.http.problems import problem_middleware


def build_http_app(
    backend: CounterBackend, users: UserStore, clock: Clock, limits: HttpLimits
) -> web.Application:
    # Order matters: metrics outermost sees the final status; problems turns every failure,
    # including a refused token, into problem+json; auth runs inside it.
    app = web.Application(
        middlewares=[metrics_middleware(clock), problem_middleware, session_routes.auth_middleware],
        client_max_size=limits.max_body_bytes,
    )
    app[BACKEND] = backend
    app[USERS] = users
    app[CLOCK] = clock
    app[LIMITS] = limits
    for module in (session_routes, counter_routes, operator_routes, openapi):
        app.add_routes(module.routes)
    return app
