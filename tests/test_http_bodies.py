"""Shape checks of request bodies (the counter contract), without a server."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import InvalidInput
from core.json_doc import parse_json_object
from node.counter.contract import CounterLimits, parse_decision, parse_submit

LIMITS = CounterLimits(max_attachments=3, max_attachment_bytes=64)


def body(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "service_id": "js-001",
        "applicant": {"name": "张三", "id_number": "11010519491231002X"},
        "form": {},
        "consent": False,
    }
    doc.update(overrides)
    return doc


def field_of(fn: Any, *args: Any) -> str | None:
    with pytest.raises(InvalidInput) as info:
        fn(*args)
    return info.value.field


@given(st.lists(st.binary(max_size=64), max_size=3), st.sampled_from(["service-delivery", "statistics"]))
def test_attachment_bytes_and_purpose_survive_parsing(files: list[bytes], purpose: str) -> None:
    attachments = [
        {
            "material": f"m{i}",
            "filename": f"f{i}",
            "content_type": "application/octet-stream",
            "data": base64.b64encode(data).decode(),
        }
        for i, data in enumerate(files)
    ]
    parsed = parse_submit(body(attachments=attachments, purpose=purpose), LIMITS, "d")
    assert [a.data for a in parsed.attachments] == files
    assert parsed.purpose == purpose
    assert parsed.consent is False


def test_attachments_are_optional() -> None:
    assert parse_submit(body(), LIMITS, "d").attachments == ()


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (body(service_id=""), "service_id"),
        (body(service_id=7), "service_id"),
        ({k: v for k, v in body().items() if k != "service_id"}, "service_id"),
        (body(applicant="张三"), "applicant"),
        (body(applicant={"name": "张三", "id_number": "1", "age": 3}), "applicant.age"),
        (body(form=None), "form"),
        (body(consent=None), "consent"),
        (body(attachments={"a": 1}), "attachments"),
        (body(attachments=["x"]), "attachments[0]"),
        (
            body(attachments=[{"material": "m", "filename": "f", "content_type": "text/plain"}]),
            "attachments[0].data",
        ),
        (
            body(attachments=[{"material": "m", "filename": "f", "content_type": "text/plain", "data": 5}]),
            "attachments[0].data",
        ),
        (body(purpose=""), "purpose"),
        (body(service_id="x" * 513), "service_id"),
    ],
)
def test_submit_errors_name_the_field(doc: dict[str, Any], field: str) -> None:
    assert field_of(parse_submit, doc, LIMITS, "d") == field


def test_size_limit_is_on_decoded_bytes() -> None:
    at_limit = {
        "material": "m",
        "filename": "f",
        "content_type": "text/plain",
        "data": base64.b64encode(b"x" * 64).decode(),
    }
    assert parse_submit(body(attachments=[at_limit]), LIMITS, "d").attachments[0].data == b"x" * 64
    over = {**at_limit, "data": base64.b64encode(b"x" * 65).decode()}
    assert field_of(parse_submit, body(attachments=[over]), LIMITS, "d") == "attachments[0].data"


def test_decision_documents_share_the_attachment_limits() -> None:
    doc = {"name": "n", "content_type": "text/plain", "data": ""}
    assert parse_decision({"decision": "approve", "documents": [doc] * 3}, LIMITS)[2][0].data == b""
    assert field_of(parse_decision, {"decision": "approve", "documents": [doc] * 4}, LIMITS) == "documents"
    assert field_of(parse_decision, {"decision": "approve", "reason": 3}, LIMITS) == "reason"


@pytest.mark.parametrize("raw", [b"", b"\xff\xfe", b"[" * 100_000, b'"text"', b"null"])
def test_only_json_objects_are_bodies(raw: bytes) -> None:
    assert field_of(parse_json_object, raw) == "body"
