"""The counter front's per-account request limit and its slow-client deadline.

Both sit in front of the handlers so a new route is limited without remembering to be:
- every authenticated request spends a token of its account (core/ratelimit.py); past the
  limit the answer is 429 ``rate_limited`` with ``Retry-After``, and other accounts are
  served as before;
- a request body must arrive within ``body_timeout_s``: a client trickling bytes to hold a
  connection and a worker is cut off with 408 ``body_timeout``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from core.clock import Clock
from core.errors import InvalidInput, RateLimited, problem_of
from core.ratelimit import RateLimiter
from node import metrics
from node.config import LimitsConfig
from node.http.context import PRINCIPAL
from node.http.problems import problem_response


@dataclass(frozen=True)
class HttpLimits:
    clerks: RateLimiter
    body_timeout_s: float


HTTP_LIMITS = web.AppKey("yrd_http_limits", HttpLimits)


def http_limits(clock: Clock, config: LimitsConfig) -> HttpLimits:
    return HttpLimits(
        clerks=RateLimiter(clock, rate=config.clerk_requests_per_s, burst=config.clerk_burst),
        body_timeout_s=config.http_body_timeout_s,
    )


def default_http_limits(clock: Clock) -> HttpLimits:
    return http_limits(clock, LimitsConfig())


class BodyTimeout(InvalidInput):
    http_status = 408


@web.middleware
async def limits_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Runs inside the auth middleware, so the caller is known; public routes (login, the
    API description) have no account and are limited elsewhere (node/counter/throttle.py)."""
    limits = request.app[HTTP_LIMITS]
    principal = request.get(PRINCIPAL)
    if principal is not None:
        try:
            limits.clerks.check(f"account:{principal.username}", "requests")
        except RateLimited as e:
            metrics.COUNTER_REQUESTS_LIMITED.inc()
            status, problem = problem_of(e)
            return problem_response(status, problem, {hdrs.RETRY_AFTER: str(e.extra.get("retry_after_s", 1))})
    if request.body_exists and request.can_read_body:
        try:
            async with asyncio.timeout(limits.body_timeout_s):
                # Both are cached for the handler. A form is read through post(): a multipart
                # body read as raw bytes first could no longer be parsed by post().
                if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
                    await request.post()
                else:
                    await request.read()
        except TimeoutError:
            raise BodyTimeout(
                f"the request body did not arrive within {limits.body_timeout_s:g} s",
                code="body_timeout",
                field="body",
            ) from None
    return await handler(request)
