"""Strict JSON (core/json_doc.py), and every place a node reads JSON a peer wrote."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.errors import InvalidInput
from core.json_doc import MAX_JSON_DEPTH, parse_json, parse_json_object
from node.cases.bundles.status import parse_snapshot
from node.sharing.asker import _json_object

HOSTILE: dict[str, tuple[bytes, str]] = {
    "repeated name": (b'{"consent": false, "consent": true}', "duplicate_key"),
    "lone surrogate": (b'{"name": "\\udc80"}', "bad_text"),
    "nested too deep": (
        b'{"a": ' + b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1) + b"}",
        "too_deep",
    ),
    "not UTF-8": ('{"name": "张三"}'.encode("utf-16"), "malformed_json"),
    "NaN is no JSON number": (b'{"n": NaN}', "malformed_json"),
}


@pytest.mark.parametrize(("raw", "code"), HOSTILE.values(), ids=list(HOSTILE))
def test_what_json_loads_takes_and_a_door_refuses(raw: bytes, code: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_json_object(raw, field="form")
    assert e.value.code == code and (e.value.field or "").startswith("form")


def test_nesting_up_to_the_bound_and_real_text_are_taken() -> None:
    deep = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert parse_json(f'{{"a": "张三 😀", "b": {deep}}}'.encode())["a"] == "张三 😀"


@pytest.mark.parametrize("raw", [raw for raw, _ in HOSTILE.values()], ids=list(HOSTILE))
def test_json_a_peer_wrote_is_read_by_the_same_rules(raw: bytes) -> None:
    """A lead's parts snapshot (yrd.components) and a holder's record are refused as a
    counter refuses a body; the owner's form_json is held to it in test_owner_admission.py."""
    view = [{"name": "x"}]
    snapshot = raw.replace(b"{", b'[{"view": ' + json.dumps(view).encode() + b", ", 1) + b"]"
    assert parse_snapshot(snapshot.decode("utf-8", "replace")) is None
    with pytest.raises(InvalidInput) as e:
        _json_object(raw)
    assert e.value.code == "bad_answer"


def test_a_well_formed_record_is_read() -> None:
    record: dict[str, Any] = {"result": "阴性", "tested_at": "2026-11-30"}
    assert _json_object(json.dumps(record, ensure_ascii=False).encode()) == record
