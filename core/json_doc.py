"""Strict JSON documents: what a counter parses its clients' JSON by, and a node its peers'.

RFC 8259 leaves open what a parser does with a repeated name, an escaped lone surrogate, deep
nesting or a number too large for its floats, and Python's ``json.loads`` takes them all: the
last name wins (so ``"consent": false, "consent": true`` would mean yes), ``"\\udc80"``
becomes text that cannot be encoded again (the first page or log line that writes it fails),
nesting recurses, and ``1e400`` becomes infinity, as do ``NaN`` and ``Infinity``, which are not
JSON at all; NaN passes a schema's bounds (every comparison with it is false). A document
with any of them is refused here, so a counter's door and an owner reading the same form from
a peer take or refuse the same bytes (docs/protocol.md, section 1).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

from core.errors import InvalidInput, clip

# Forms are flat records; nesting deeper than this is an attack on the parser, not a form.
MAX_JSON_DEPTH = 32


def is_unicode(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate such as "\udc80" survives json.loads
        return False
    return True


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is no JSON number")  # json.loads takes NaN and Infinity


def _finite(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):  # 1e400 is a JSON number that json.loads makes infinite
        raise ValueError(f"{literal[:20]} is beyond a binary64 number")
    return value


# Every integer of up to 308 digits is below the largest binary64 (about 1.8e308).
_BINARY64_DIGITS = 308


def _integer(literal: str) -> int:
    value = int(literal)  # beyond 4,300 digits Python itself refuses (ValueError)
    if len(literal) > _BINARY64_DIGITS:
        float(value)  # OverflowError beyond the largest binary64, as 1e400 is for _finite
    return value


def _walk(doc: Any) -> Iterator[tuple[str, int, Any]]:
    """Every (path, depth, value) of a parsed JSON document, keys included; iterative, so a
    deep document costs no recursion, and it stops descending past MAX_JSON_DEPTH."""
    stack: list[tuple[str, int, Any]] = [("", 0, doc)]
    while stack:
        path, depth, value = stack.pop()
        yield path, depth, value
        if depth > MAX_JSON_DEPTH:
            continue
        if isinstance(value, dict):
            for key, item in value.items():
                yield f"{path}.{key}".lstrip("."), depth + 1, key
                stack.append((f"{path}.{key}".lstrip("."), depth + 1, item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", depth + 1, item) for i, item in enumerate(value))


# A lone surrogate in a parsed string comes only from a \u escape of D800-DFFF (strict UTF-8
# decoding refuses an encoded one), and a document nests no deeper than it has brackets: a
# text with neither needs no walk over its values, which cost as much as parsing it. A match
# inside a string, or after an escaped backslash, only sends a text the long way.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def needs_walk(text: str) -> bool:
    """Whether a UTF-8 ``text`` could parse to what :func:`check_values` refuses."""
    return text.count("[") + text.count("{") > MAX_JSON_DEPTH or _SURROGATE_ESCAPE.search(text) is not None


# Built once: ``json.loads`` with hooks builds a decoder (and its scanner) on every call.
_DECODER = json.JSONDecoder(
    object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_float=_finite, parse_int=_integer
)


def parse_json(raw: bytes | str, field: str = "body") -> Any:
    """A JSON document in UTF-8 with unique names, bounded nesting and only real Unicode text;
    InvalidInput naming ``field`` (or the place inside it) otherwise."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        doc = _DECODER.decode(text)
    except _DuplicateKey as e:
        raise InvalidInput(f"duplicate key {clip(e.key)}", code="duplicate_key", field=field) from e
    except (ValueError, OverflowError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise InvalidInput(f"{field} is not valid UTF-8 JSON", code="malformed_json", field=field) from e
    # A str given (not bytes decoded here) may hold a lone surrogate unescaped.
    if needs_walk(text) or (isinstance(raw, str) and not is_unicode(raw)):
        check_values(doc, field)
    return doc


def check_values(doc: Any, field: str) -> None:
    """Refuse a parsed document nested too deep or holding a lone surrogate, naming where."""
    for path, depth, value in _walk(doc):
        where = f"{field}.{path}" if field != "body" and path else path or field
        # The document itself is an array or object at depth 0: one at depth 32 lies inside
        # 32 others, which is one too many, even empty; any other value may lie inside 32.
        if depth > MAX_JSON_DEPTH or (depth == MAX_JSON_DEPTH and isinstance(value, (dict, list))):
            raise InvalidInput(f"nested deeper than {MAX_JSON_DEPTH} levels", code="too_deep", field=where)
        if isinstance(value, str) and not is_unicode(value):
            raise InvalidInput(
                "text must be valid Unicode (no lone surrogates)", code="bad_text", field=where
            )


def parse_json_object(raw: bytes | str, field: str = "body") -> dict[str, Any]:
    """:func:`parse_json` of a document that must be a JSON object."""
    doc = parse_json(raw, field)
    if not isinstance(doc, dict):
        raise InvalidInput(f"{field} must be a JSON object", code="not_an_object", field=field)
    return doc
