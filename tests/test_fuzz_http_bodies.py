"""Fuzzing the HTTP counter's body parsers: any bytes or JSON give a request or InvalidInput
(a 4xx problem), never another exception (which the front would answer with a 500)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from core.errors import InvalidInput
from core.json_doc import parse_json_object
from node.counter.contract import CounterLimits, parse_decision, parse_submit
from tests.fuzz import FUZZ

LIMITS = CounterLimits(max_body_bytes=64 * 1024, max_attachments=3, max_attachment_bytes=64)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
# Base64 text with its alphabet, padding and a few strays; non-ASCII data has its own test below.
B64 = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n -_", max_size=120)
ATTACHMENT = st.fixed_dictionaries(
    {},
    optional={
        "material": JSON,
        "filename": JSON,
        "content_type": JSON,
        "data": B64 | SCALARS.filter(lambda v: not isinstance(v, str)),
        "extra": JSON,
    },
)
SUBMIT = st.fixed_dictionaries(
    {},
    optional={
        "service_id": JSON,
        "applicant": st.fixed_dictionaries({}, optional={"name": JSON, "id_number": JSON}) | JSON,
        "form": JSON,
        "attachments": st.lists(ATTACHMENT | JSON, max_size=5) | JSON,
        "consent": JSON,
        "purpose": JSON,
    },
)
DECISION = st.fixed_dictionaries(
    {},
    optional={
        "decision": st.sampled_from(["approve", "reject", "request_materials"]) | JSON,
        "reason": JSON,
        "documents": st.lists(ATTACHMENT | JSON, max_size=5) | JSON,
    },
)


def refused_cleanly(call: Any, *args: Any) -> None:
    try:
        call(*args)
    except InvalidInput as e:
        assert e.http_status // 100 == 4 and e.code and e.field, e


@FUZZ
@given(st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode()))
@example(b"[" * 100_000)
@example(b'{"a": ' + b"1" * 5000 + b"}")
def test_any_request_body_is_an_object_or_a_client_error(raw: bytes) -> None:
    refused_cleanly(parse_json_object, raw)


@FUZZ
@given(SUBMIT)
def test_any_submission_parses_or_is_a_client_error(body: dict[str, Any]) -> None:
    refused_cleanly(parse_submit, body, LIMITS, "digest")


@FUZZ
@given(DECISION)
def test_any_decision_parses_or_is_a_client_error(body: dict[str, Any]) -> None:
    refused_cleanly(parse_decision, body, LIMITS)


def test_non_ascii_attachment_data_is_a_client_error() -> None:
    body = {"material": "m", "filename": "f", "content_type": "t", "data": "数据"}
    with pytest.raises(InvalidInput):
        parse_submit(
            {
                "service_id": "s",
                "applicant": {"name": "n", "id_number": "i"},
                "form": {},
                "consent": True,
                "attachments": [body],
            },
            LIMITS,
            "digest",
        )
