"""The one place where errors become gRPC statuses.

Every servicer method is wrapped with :func:`grpc_errors`: a YrdError aborts the call
with its mapped status, its reason in the details and its stable code in the
``yrd-reason`` trailer; anything else is a bug, logged with its traceback and reported
as INTERNAL without details.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError

from core.errors import YrdError, grpc_status_of

log = logging.getLogger(__name__)

Resp = TypeVar("Resp")
# Where grpcio reports a request it could not deserialize (at ERROR, with a traceback).
GRPC_CORE_LOGGER = "grpc._cython.cygrpc"
REASON_KEY = "yrd-reason"


def grpc_errors(fn: Callable[..., Awaitable[Resp]]) -> Callable[..., Awaitable[Resp]]:
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Resp:
        try:
            return await fn(self, request, context)
        except YrdError as e:
            code, details = grpc_status_of(e)
            context.set_trailing_metadata(((REASON_KEY, e.code),))
            await context.abort(code, details)
        except Exception as e:
            if isinstance(e, grpc.aio.AbortError):
                raise
            log.exception("bug in %s", fn.__qualname__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        raise AssertionError("unreachable: abort raises")

    return wrapper


class QuietUndecodableRequests(logging.Filter):
    """Bytes that are not the method's message fail in grpcio before any servicer runs;
    grpcio answers the caller with an error status and logs an ERROR traceback, so anyone
    could flood the log with garbage. The answer stays; the record drops to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, DecodeError):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.exc_info, record.exc_text = None, None
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


QUIET_UNDECODABLE = QuietUndecodableRequests()
