"""The one error hierarchy of yrd-gateway.

Every expected failure is a :class:`YrdError`. Each subclass carries, once, the gRPC
status code and the HTTP status it maps to, plus a stable problem ``type`` slug. The
gRPC servers and the HTTP front translate with :func:`core.errors.grpc_status_of` and
``problem_of`` and nowhere else, so a new error needs no new mapping code. Anything
that is not a YrdError is a bug and is reported as an internal error without details.
"""

from __future__ import annotations

from typing import Any, ClassVar

import grpc

# An error quotes at most this much of what a caller sent, and says at most this much in all:
# an echoed 5,000-character id must not push a gRPC status past the metadata limit (which
# turns NOT_FOUND into RESOURCE_EXHAUSTED) nor flood a log.
MAX_ECHO_CHARS = 64
MAX_REASON_CHARS = 1000


def clip(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """``value`` quoted for an error message, cut to ``limit`` characters."""
    return repr(_bounded(str(value), limit))


def _bounded(text: str, limit: int) -> str:
    """Cut to ``limit`` and made valid UTF-8: an echoed lone surrogate must not break the
    gRPC status or the log line that carries the error."""
    text = text if len(text) <= limit else text[:limit] + "…"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class YrdError(Exception):
    """Root of all expected errors.

    ``code`` is a stable machine-readable reason (e.g. ``nonce_replayed``); ``field``
    names the input at fault when there is one, so a clerk or operator sees where.
    """

    type: ClassVar[str] = "internal"
    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    http_status: ClassVar[int] = 500

    def __init__(
        self, reason: str, *, code: str | None = None, field: str | None = None, **extra: Any
    ) -> None:
        reason = _bounded(reason, MAX_REASON_CHARS)
        super().__init__(reason)
        self.reason = reason
        self.code = _bounded(code or self.type, MAX_ECHO_CHARS)
        self.field = None if field is None else _bounded(field, MAX_ECHO_CHARS)
        self.extra = extra

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        return f"{self.code}: {self.reason}{where}"


class InvalidInput(YrdError):
    type = "invalid_input"
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400


class ConfigError(InvalidInput):
    """A config file or command-line value is wrong; ``field`` names the key."""

    type = "invalid_config"


class NotFound(YrdError):
    type = "not_found"
    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 404


class Conflict(YrdError):
    type = "conflict"
    grpc_code = grpc.StatusCode.ALREADY_EXISTS
    http_status = 409


class Unprocessable(YrdError):
    """Well-formed, but contradicts what was accepted before (an idempotency key reused
    with another request)."""

    type = "unprocessable"
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 422


class Unauthenticated(YrdError):
    type = "unauthenticated"
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401


class EnvelopeRejected(Unauthenticated):
    """A signed envelope failed verification; ``code`` is one of :data:`ENVELOPE_REASONS`."""

    type = "envelope_rejected"


ENVELOPE_REASONS = (
    "malformed_envelope",
    "unknown_sender",
    "unknown_key",
    "key_revoked",
    "key_not_valid",
    "wrong_destination",
    "method_mismatch",
    "clock_skew",
    "nonce_replayed",
    "bad_signature",
    "response_mismatch",
)


class CertificateRejected(InvalidInput):
    """An e-certificate failed offline verification; ``code`` is one of :data:`CERTIFICATE_REASONS`."""

    type = "certificate_rejected"


CERTIFICATE_REASONS = (
    "malformed",
    "manifest_expired",
    "unknown_issuer",
    "unknown_key",
    "key_revoked",
    "key_not_valid",
    "bad_signature",
    "not_yet_valid",
    "expired",
)


class ManifestRejected(YrdError):
    """A federation manifest is not valid (quorum, rollback, expiry, form)."""

    type = "manifest_rejected"
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 422


class PermissionDenied(YrdError):
    type = "forbidden"
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    http_status = 403


class PolicyDenied(PermissionDenied):
    """A policy refused; ``extra['rule_id']`` names the deciding rule (empty: default deny)."""

    type = "policy_denied"


class RateLimited(YrdError):
    type = "rate_limited"
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 429


class Unavailable(YrdError):
    type = "unavailable"
    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503


def grpc_status_of(err: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status and details for any exception, hiding internals of bugs."""
    if isinstance(err, YrdError):
        return err.grpc_code, str(err)
    return grpc.StatusCode.INTERNAL, "internal error"


def problem_of(err: BaseException) -> tuple[int, dict[str, Any]]:
    """The HTTP status and RFC 9457 problem body for any exception."""
    if not isinstance(err, YrdError):
        return 500, {"type": "urn:yrd:problem:internal", "title": "internal error", "status": 500}
    body: dict[str, Any] = {
        "type": f"urn:yrd:problem:{err.type}",
        "title": err.type.replace("_", " "),
        "status": err.http_status,
        "code": err.code,
        "detail": err.reason,
    }
    if err.field:
        body["field"] = err.field
    body.update({k: v for k, v in err.extra.items() if v is not None})
    return err.http_status, body
