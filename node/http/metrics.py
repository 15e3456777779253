"""Request counters and latency for the HTTP front.

The ``route`` label is the matched resource's canonical path (``/api/v1/applications/{id}``),
never the raw path: application ids and scanners' random URLs must not mint new series.
"""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import Counter, Histogram

from core.clock import Clock
from node.metrics import Labelled

HTTP_REQUESTS = Labelled(
    Counter(
        "yrd_http_requests_total",
        "HTTP requests answered, by route, method and status",
        ["route", "method", "status"],
    )
)
HTTP_REQUEST_DURATION = Labelled(
    Histogram("yrd_http_request_duration_seconds", "Time to answer an HTTP request, by route", ["route"])
)

UNMATCHED_ROUTE = "<unmatched>"


def route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED_ROUTE


def metrics_middleware(clock: Clock) -> Middleware:
    """Outermost middleware: it sees the final status, after errors became problem+json."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = clock.monotonic()
        route = route_label(request)
        response = await handler(request)
        HTTP_REQUEST_DURATION.labels(route).observe(clock.monotonic() - started)
        method = request.method if request.method in hdrs.METH_ALL else "OTHER"
        HTTP_REQUESTS.labels(route, method, str(response.status)).inc()
        return response

    return middleware
