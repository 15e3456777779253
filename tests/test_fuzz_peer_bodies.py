"""Fuzzing the peer-side body parsers (oracle in tests/fuzz/peer_bodies.py)."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message
from hypothesis import example, given
from hypothesis import strategies as st

from core.errors import InvalidInput
from node.delivery.peer_client import parse_body
from tests.fuzz import FUZZ
from tests.fuzz.peer_bodies import BODIES, fuzz_one


def _nested(depth: int) -> bytes:
    """Field 1 inside field 1 inside ... ``depth`` times: past protobuf's recursion limit."""
    out = b""
    for _ in range(depth):
        size, prefix = len(out), b""
        while size >= 0x80:
            prefix += bytes([size & 0x7F | 0x80])
            size >>= 7
        out = b"\x0a" + prefix + bytes([size]) + out
    return out


NESTED = _nested(300)


@FUZZ
@given(st.binary(max_size=600))
@example(b"")
@example(bytes([0]) + b"\xff")
@example(bytes([0]) + b"\x0a\xff\xff\xff\xff\x0f")
@example(bytes([0]) + NESTED)
def test_any_body_parses_or_is_malformed_body(data: bytes) -> None:
    fuzz_one(data)


@pytest.mark.parametrize("message_type", [t for t, _ in BODIES], ids=lambda t: t.DESCRIPTOR.name)
def test_truncated_bodies_are_the_peers_fault(message_type: type[Message]) -> None:
    """A length prefix running past the end cannot parse as any of them."""
    with pytest.raises(InvalidInput) as err:
        parse_body(message_type, b"\x0a\x05ab")
    assert err.value.code == "malformed_body"
