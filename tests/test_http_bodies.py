"""Shape checks of request bodies (the counter contract), without a server."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import InvalidInput
from core.json_doc import parse_json_object
from node.counter.contract import CounterLimits, parse_decision, parse_submit, request_digest

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


# Digests that requests stored before request_digest was rewritten (a loop over a stack, a
# scalar's text written directly): a retry across an upgrade must still match its first answer.
_STORED_DIGESTS: list[tuple[Any, str]] = [
    ({}, "f6442079068da1287c0ba7585ad3b841ae5da71c0792a75b1881d4892b4ee823"),
    ([], "f3b570de2ed32d6634efbaea4f4f23370b0c92750738e36f7626a1ae938fd9bc"),
    (
        {
            "service_id": "js.x",
            "applicant": {"name": "张三", "id_number": "11010519491231002X"},
            "consent": True,
            "form": {
                "a": 1,
                "b": -7,
                "c": 2.5,
                "d": None,
                "e": False,
                "f": "",
                "g": [1, "1", True, 1.0, [], {}],
            },
            "attachments": [{"material": "m", "data": "QUJD"}],
        },
        "e074fea83c64abb438b33e71a9a8fc93134d93a93a5d43a62425cc90f58a9f76",
    ),
    (
        {
            "n": [10000000000000000000000000000000000000000, -0.0, 1e-300, 123456789.125],
            "t": "line\nnext é 😀",
        },
        "767d7e856367f6ee05bd2f9afb225dc2413ea040445bdd38bf3362f3e2956d59",
    ),
    (
        {"z": 1, "a": 2, "m": {"y": [3, {"k": "v"}], "b": None}},
        "02493c971420e1e96a344aa4eb058f96bc7b25dec7aa2cdb14711dc48efb675f",
    ),
]


@pytest.mark.parametrize(("doc", "digest"), _STORED_DIGESTS)
def test_a_request_digest_is_the_one_stored_before(doc: Any, digest: str) -> None:
    assert request_digest(doc) == digest


def test_a_request_digest_ignores_key_order_and_tells_true_from_1() -> None:
    assert request_digest({"a": 1, "b": [True, None]}) == request_digest({"b": [True, None], "a": 1})
    assert request_digest({"a": 1}) != request_digest({"a": True})
    assert request_digest({"a": 1}) != request_digest({"a": 1.0}) != request_digest({"a": "1"})
