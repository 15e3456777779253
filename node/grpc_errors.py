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


_UNPARSABLE = object()  # stands in for a request whose bytes did not deserialise


class MalformedRequests(grpc.aio.ServerInterceptor):
    """A request that does not deserialise (invalid UTF-8 in a string, a truncated field) is
    the caller's fault: INVALID_ARGUMENT with reason ``malformed_request``, not grpcio's own
    UNKNOWN answer that quotes the parser and logs a traceback for anyone who sends bad bytes."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler  # streaming calls (reflection) parse nothing of ours
        parse, behaviour = handler.request_deserializer, handler.unary_unary

        def deserialize(raw: bytes) -> Any:
            try:
                return parse(raw)
            except DecodeError:
                return _UNPARSABLE

        async def unary_unary(request: Any, context: Any) -> Any:
            if request is _UNPARSABLE:
                context.set_trailing_metadata(((REASON_KEY, "malformed_request"),))
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "malformed_request: the request does not parse"
                )
            return await behaviour(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, request_deserializer=deserialize, response_serializer=handler.response_serializer
        )
