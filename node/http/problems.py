"""The one place where failures become HTTP answers (RFC 9457 problem+json).

Expected errors carry their own status and stable ``type`` (core.errors.problem_of);
aiohttp's routing and body-size errors are given the same shape so a client needs one
error parser; anything else is a bug, logged with its traceback and answered with a
bare 500 so internals never reach a counter screen.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from core.errors import Unauthenticated, YrdError, problem_of

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"

# aiohttp's own HTTP errors, named like YrdError types so clients match on one vocabulary.
_HTTP_ERROR_TYPES = {
    404: ("not_found", "no such resource", None),
    405: ("method_not_allowed", "method not allowed on this resource", None),
    413: ("body_too_large", "request body is too large", "body"),
    415: ("unsupported_media_type", "the request body must be application/json", "body"),
}


def problem_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(body, status=status, headers=headers, content_type=PROBLEM_CONTENT_TYPE)


def _http_error_problem(exc: web.HTTPError) -> web.Response:
    slug, detail, field = _HTTP_ERROR_TYPES.get(
        exc.status, (exc.reason.lower().replace(" ", "_"), exc.reason, None)
    )
    body: dict[str, Any] = {
        "type": f"urn:yrd:problem:{slug}",
        "title": slug.replace("_", " "),
        "status": exc.status,
        "code": slug,
        "detail": detail,
    }
    if field:
        body["field"] = field
    headers = {k: v for k, v in exc.headers.items() if k != hdrs.CONTENT_TYPE}
    return problem_response(exc.status, body, headers)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except YrdError as e:
        status, body = problem_of(e)
        headers: dict[str, str] | None = (
            {hdrs.WWW_AUTHENTICATE: 'Bearer realm="yrd"'} if isinstance(e, Unauthenticated) else None
        )
        if "retry_after_s" in e.extra:  # back-pressure (e.g. a peer's outbox too deep): say when
            headers = {**(headers or {}), hdrs.RETRY_AFTER: str(e.extra["retry_after_s"])}
        return problem_response(status, body, headers)
    except web.HTTPError as e:
        return _http_error_problem(e)
    except Exception as e:
        log.exception("unhandled error in %s %r", request.method, request.path)
        status, body = problem_of(e)
        return problem_response(status, body)
