"""Request bodies: size limits and the shape checks that turn JSON into backend values.

Only shape is checked here (types, required keys, base64, counts and sizes), each failure
naming the exact input at fault (``applicant.id_number``, ``attachments[1].data``) so a
clerk can fix the form. Meaning (form schema, ID check digits, policy) is the backend's.
Unknown keys are refused rather than ignored: a misspelt ``consent`` must not read as "no".
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from core.errors import InvalidInput
from node.cases.requests import Attachment, Document, SubmitRequest

DECISIONS = ("approve", "reject", "need_materials")
_MAX_TEXT_CHARS = 512
_MAX_REASON_CHARS = 4000


@dataclass(frozen=True)
class HttpLimits:
    max_body_bytes: int = 8 * 1024 * 1024
    max_attachments: int = 10
    max_attachment_bytes: int = 5 * 1024 * 1024


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise InvalidInput("request body is not valid JSON", code="malformed_json", field="body") from e
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object", code="not_an_object", field="body")
    return body


def parse_submit(body: dict[str, Any], limits: HttpLimits) -> SubmitRequest:
    _only(body, "", {"service_id", "applicant", "form", "attachments", "consent", "purpose"})
    service_id = _text(body, "service_id", "")
    applicant = _object(body, "applicant", "")
    _only(applicant, "applicant.", {"name", "id_number"})
    name = _text(applicant, "name", "applicant.")
    id_number = _text(applicant, "id_number", "applicant.")
    form = _object(body, "form", "")
    items = _list(body, "attachments", limits)
    attachments = tuple(_attachment(item, f"attachments[{i}]", limits) for i, item in enumerate(items))
    consent = body.get("consent")
    if consent is None:
        raise InvalidInput("consent is required", code="missing_field", field="consent")
    if not isinstance(consent, bool):
        raise InvalidInput("consent must be true or false", code="bad_type", field="consent")
    purpose = _text(body, "purpose", "") if "purpose" in body else "service-delivery"
    return SubmitRequest(service_id, name, id_number, form, attachments, consent, purpose)


def parse_decision(body: dict[str, Any], limits: HttpLimits) -> tuple[str, str, list[Document]]:
    """``(decision, reason, documents)``; a refusal or a request for materials must say why."""
    _only(body, "", {"decision", "reason", "documents"})
    decision = body.get("decision")
    if decision not in DECISIONS:
        raise InvalidInput(
            f"decision must be one of {', '.join(DECISIONS)}", code="bad_decision", field="decision"
        )
    reason = body.get("reason", "")
    if not isinstance(reason, str) or len(reason) > _MAX_REASON_CHARS:
        raise InvalidInput(
            f"reason must be a string of at most {_MAX_REASON_CHARS} characters",
            code="bad_type",
            field="reason",
        )
    if decision != "approve" and not reason.strip():
        raise InvalidInput(f"a reason is required to {decision}", code="missing_field", field="reason")
    items = _list(body, "documents", limits)
    documents = [_document(item, f"documents[{i}]", limits) for i, item in enumerate(items)]
    return decision, reason, documents


def _attachment(item: Any, where: str, limits: HttpLimits) -> Attachment:
    if not isinstance(item, dict):
        raise InvalidInput("attachment must be an object", code="bad_type", field=where)
    _only(item, f"{where}.", {"material", "filename", "content_type", "data"})
    return Attachment(
        material=_text(item, "material", f"{where}."),
        filename=_text(item, "filename", f"{where}."),
        content_type=_text(item, "content_type", f"{where}."),
        data=_base64(item, f"{where}.", limits),
    )


def _document(item: Any, where: str, limits: HttpLimits) -> Document:
    if not isinstance(item, dict):
        raise InvalidInput("document must be an object", code="bad_type", field=where)
    _only(item, f"{where}.", {"name", "content_type", "data"})
    return Document(
        name=_text(item, "name", f"{where}."),
        content_type=_text(item, "content_type", f"{where}."),
        data=_base64(item, f"{where}.", limits),
    )


def _only(obj: dict[str, Any], prefix: str, allowed: set[str]) -> None:
    for key in obj:
        if key not in allowed:
            raise InvalidInput(f"unknown field {key!r}", code="unknown_field", field=f"{prefix}{key}")


def _text(obj: dict[str, Any], key: str, prefix: str) -> str:
    value = obj.get(key)
    if value is None:
        raise InvalidInput(f"{key} is required", code="missing_field", field=f"{prefix}{key}")
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_TEXT_CHARS:
        raise InvalidInput(
            f"{key} must be a non-empty string of at most {_MAX_TEXT_CHARS} characters",
            code="bad_type",
            field=f"{prefix}{key}",
        )
    return value


def _object(obj: dict[str, Any], key: str, prefix: str) -> dict[str, Any]:
    value = obj.get(key)
    if value is None:
        raise InvalidInput(f"{key} is required", code="missing_field", field=f"{prefix}{key}")
    if not isinstance(value, dict):
        raise InvalidInput(f"{key} must be a JSON object", code="bad_type", field=f"{prefix}{key}")
    return value


def _list(obj: dict[str, Any], key: str, limits: HttpLimits) -> list[Any]:
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise InvalidInput(f"{key} must be an array", code="bad_type", field=key)
    if len(value) > limits.max_attachments:
        raise InvalidInput(
            f"at most {limits.max_attachments} {key} are accepted", code=f"too_many_{key}", field=key
        )
    return value


def _base64(obj: dict[str, Any], prefix: str, limits: HttpLimits) -> bytes:
    value = obj.get("data")
    field = f"{prefix}data"
    if value is None:
        raise InvalidInput("data is required", code="missing_field", field=field)
    if not isinstance(value, str):
        raise InvalidInput("data must be a base64 string", code="bad_type", field=field)
    try:
        data = base64.b64decode(value, validate=True)
    except binascii.Error as e:
        raise InvalidInput("data is not valid base64", code="bad_base64", field=field) from e
    if len(data) > limits.max_attachment_bytes:
        raise InvalidInput(
            f"file is larger than {limits.max_attachment_bytes} bytes", code="file_too_large", field=field
        )
    return data
