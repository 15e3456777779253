"""Strict JSON (core/json_doc.py), and every place a node reads JSON a peer wrote."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import InvalidInput
from core.json_doc import MAX_JSON_DEPTH, check_values, is_unicode, needs_walk, parse_json, parse_json_object
from node.cases.bundles.status import parse_snapshot
from node.sharing.asker import _json_object

HOSTILE: dict[str, tuple[bytes, str]] = {
    "repeated name": (b'{"consent": false, "consent": true}', "duplicate_key"),
    "lone surrogate": (b'{"name": "\\udc80"}', "bad_text"),
    "nested too deep": (
        b'{"a": ' + b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1) + b"}",
        "too_deep",
    ),
    "objects nested too deep": (
        b'{"a": ' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 1),
        "too_deep",
    ),
    "not UTF-8": ('{"name": "张三"}'.encode("utf-16"), "malformed_json"),
    "NaN is no JSON number": (b'{"n": NaN}', "malformed_json"),
    "a number beyond binary64": (b'{"n": 1e400}', "malformed_json"),
}


@pytest.mark.parametrize(("raw", "code"), HOSTILE.values(), ids=list(HOSTILE))
def test_what_json_loads_takes_and_a_door_refuses(raw: bytes, code: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_json_object(raw, field="form")
    assert e.value.code == code and (e.value.field or "").startswith("form")


def test_nesting_up_to_the_bound_and_real_text_are_taken() -> None:
    deep = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)  # inside the object: 32 in all
    assert parse_json(f'{{"a": "张三 😀", "b": {deep}}}'.encode())["a"] == "张三 😀"
    with pytest.raises(InvalidInput):
        parse_json(f'{{"b": [{deep}]}}'.encode())  # one more, though empty


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


# Text with what the walk looks for (lone surrogates, both halves of a pair, backslashes and
# brackets inside strings), in values nested up to past the bound.
_TEXT = st.lists(
    st.one_of(st.characters(), st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff", "\\", "u", "[", "{"]))
).map("".join)
_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), _TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_TEXT, inner, max_size=3)),
    max_leaves=12,
)


@given(_VALUES, st.lists(st.booleans(), max_size=MAX_JSON_DEPTH + 3), st.booleans())
def test_a_text_the_walk_is_skipped_for_holds_nothing_it_would_refuse(
    value: Any, wraps: list[bool], ascii_only: bool
) -> None:
    """The short way is sound: whenever needs_walk says no, the walk finds nothing."""
    for in_object in wraps:
        value = {"k": value} if in_object else [value]
    text = json.dumps(value, ensure_ascii=ascii_only)
    if not is_unicode(text):  # not UTF-8 text: bytes never decode to it
        return
    if not needs_walk(text):
        check_values(json.loads(text), "body")
