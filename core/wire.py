"""Byte encodings shared by every signed structure (envelopes, manifests, catalogue entries,
policy bundles): big-endian integers and length prefixes, so that no two different field
tuples can ever produce the same bytes to sign (docs/protocol.md, section 2)."""

from __future__ import annotations

import struct


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


def i64(n: int) -> bytes:
    return struct.pack(">q", n)


def lp(b: bytes) -> bytes:
    """Length prefix, so no two different field tuples can produce the same signing input."""
    return u32(len(b)) + b
