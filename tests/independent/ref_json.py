"""Section 1 of docs/protocol.md, the paragraph "JSON text": which bytes a receiver takes as the
JSON of a field (`form_json`, the `yrd.components` result, a shared record's `fields_json`).

Written from protocol.md section 1 alone, like the rest of this package. Python's json module is
used only as an RFC 8259 parser; every rule of the paragraph is checked here, in this order:
no byte order mark, UTF-8, nesting, lone surrogate escapes, then (while parsing) the grammar,
finite numbers and repeated names. Where the document leaves a choice open, the comment says so.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

BOM = b"\xef\xbb\xbf"
MAX_DEPTH = 32  # "arrays and objects nest at most 32 deep"
# RFC 8259 section 6, ASCII digits only (a parser must not take other digits for them).
NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
UNIT_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


class NotJsonText(ValueError):
    """The text breaks a rule of section 1, JSON text; the message names the rule."""


def read_json_text(raw: bytes) -> object:
    """The value of a JSON text, or NotJsonText when a receiver refuses it."""
    if raw.startswith(BOM):
        raise NotJsonText("UTF-8 without a byte order mark: the text starts with one")
    try:
        text = raw.decode("utf-8", errors="strict")  # RFC 3629: no overlong form, no surrogate
    except UnicodeDecodeError as error:
        raise NotJsonText(f"UTF-8: {error.reason} at byte {error.start}") from None
    scan_structure(text)
    try:
        return json.loads(
            text,
            strict=True,  # RFC 8259 section 7: no unescaped control character in a string
            object_pairs_hook=object_without_repeats,
            parse_int=finite_number,
            parse_float=finite_number,
            parse_constant=not_a_number,
        )
    except json.JSONDecodeError as error:
        raise NotJsonText(f"JSON (RFC 8259): {error.msg} at character {error.pos}") from None


def scan_structure(text: str) -> None:
    """Nesting depth and surrogate escapes, read from the text itself (before any parser recurses).

    Depth is read as "no array or object inside 32 others": the 33rd container is refused even
    when empty (the document's "a value inside 32 of them is the deepest" could admit `[]` there).
    """
    depth, i = 0, 0
    while i < len(text):
        char = text[i]
        if char == '"':
            i = string_end(text, i + 1)
            continue
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise NotJsonText(f"arrays and objects nest at most {MAX_DEPTH} deep")
        elif char in "]}":
            depth -= 1
        i += 1


def string_end(text: str, i: int) -> int:
    """The index after the string whose content starts at `i`; refuses a lone surrogate escape.

    A string and a name alike: an escaped high surrogate (D800–DBFF) must be followed at once by
    an escaped low one (DC00–DFFF), and a low one must follow such a high one.
    """
    after_high = False
    while i < len(text) and text[i] != '"':
        unit, step = None, 1
        if text[i] == "\\":
            escape = UNIT_ESCAPE.match(text, i)
            unit, step = (int(escape[1], 16), 6) if escape else (None, 2)
        is_high = unit is not None and 0xD800 <= unit <= 0xDBFF
        is_low = unit is not None and 0xDC00 <= unit <= 0xDFFF
        if is_low != after_high:
            raise NotJsonText(f"a lone surrogate escape near character {i}")
        after_high = is_high
        i += step
    if after_high:
        raise NotJsonText(f"a lone surrogate escape before character {i}")
    return i + 1


def object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """No object repeats a name, compared after escapes are decoded (code point by code point,
    no Unicode normalisation: section 1 normalises nothing)."""
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            raise NotJsonText(f"an object repeats the name {name!r}")
        seen.add(name)
    return dict(pairs)


def finite_number(literal: str) -> int | float:
    """Every number, integers included, is finite as a binary64 (rounded to nearest, ties to even,
    which Python's float() does); one that underflows to zero is finite.

    "Integers are not bounded here" is read as: no bound such as 2**53 or 64 bits, not an
    exemption from this rule (so an integer of 310 digits is refused).
    """
    if not NUMBER.fullmatch(literal):
        raise NotJsonText(f"JSON (RFC 8259): {literal!r} is not a number")
    if not math.isfinite(float(literal)):
        shown = literal if len(literal) <= 24 else f"{literal[:20]}… ({len(literal)} characters)"
        raise NotJsonText(f"every number is finite as an IEEE 754 binary64: {shown} overflows")
    return float(literal) if any(c in literal for c in ".eE") else int(literal)


def not_a_number(literal: str) -> object:
    raise NotJsonText(f"every number is finite as an IEEE 754 binary64: {literal} is not JSON")
