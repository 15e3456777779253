"""A minimal proto3 wire-format reader and writer, enough for the independent implementations
to read and write the messages they exchange without a protobuf library.

It follows the protobuf encoding rules rather than a stricter reading: unknown fields are skipped
(they stay covered by the manifest signatures, docs/protocol.md 6.1), and so is a known field
that arrives with an unexpected wire type, which is what protobuf parsers do. A singular scalar
seen twice keeps the last value. Anything that cannot be walked to the end raises WireError.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

VARINT = 0
FIXED64 = 1
LENGTH_DELIMITED = 2
FIXED32 = 5

_MAX_VARINT_BYTES = 10
_UINT64_LIMIT = 1 << 64


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


@dataclass(frozen=True)
class WireField:
    number: int
    wire_type: int
    value: int | bytes


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Return the unsigned value and the position after it; over 64 bits is refused, not truncated."""
    value = 0
    for index in range(_MAX_VARINT_BYTES):
        if pos >= len(buf):
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            if value >= _UINT64_LIMIT:
                raise WireError("varint over 64 bits")
            return value, pos
    raise WireError("varint longer than 10 bytes")


def _take(buf: bytes, pos: int, size: int) -> tuple[bytes, int]:
    end = pos + size
    if end > len(buf):
        raise WireError("truncated field")
    return buf[pos:end], end


def iter_fields(buf: bytes) -> Iterator[WireField]:
    """Walk every field of one message; groups (wire types 3, 4) are refused, proto3 has none."""
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        value: int | bytes
        if wire_type == VARINT:
            value, pos = read_varint(buf, pos)
        elif wire_type == FIXED64:
            value, pos = _take(buf, pos, 8)
        elif wire_type == LENGTH_DELIMITED:
            size, pos = read_varint(buf, pos)
            value, pos = _take(buf, pos, size)
        elif wire_type == FIXED32:
            value, pos = _take(buf, pos, 4)
        else:
            raise WireError(f"unsupported wire type {wire_type}")
        yield WireField(number, wire_type, value)


def as_int64(value: int) -> int:
    """Reinterpret a varint as int64 (two's complement), as docs/protocol.md section 3 says."""
    return value - _UINT64_LIMIT if value >= 1 << 63 else value


def as_uint32(value: int) -> int:
    """Protobuf keeps the low 32 bits of a uint32 varint; the document does not say otherwise."""
    return value & 0xFFFFFFFF


def as_int32(value: int) -> int:
    """Enums are int32 on the wire; negative values arrive sign-extended to 64 bits."""
    low = value & 0xFFFFFFFF
    return low - (1 << 32) if low >= 1 << 31 else low


def as_string(value: bytes) -> str:
    """proto3 strings must be valid UTF-8; a parser refuses the message otherwise."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError("string field is not UTF-8") from exc


def known_fields(buf: bytes, schema: dict[int, int]) -> Iterator[tuple[int, int | bytes]]:
    """Yield (number, value) for fields whose number and wire type the schema names; skip the rest."""
    for field in iter_fields(buf):
        if schema.get(field.number) == field.wire_type:
            yield field.number, field.value


# The writing side: what the independent implementations send.


def write_varint(value: int) -> bytes:
    """Unsigned LEB128; a negative int64 is written as its 64-bit two's complement (ten bytes)."""
    value &= _UINT64_LIMIT - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    """A scalar; proto3 leaves a default (0, false) out, and a reader reads it back as the default."""
    return write_varint(number << 3 | VARINT) + write_varint(value) if value else b""


def field_bytes(number: int, data: bytes, *, always: bool = False) -> bytes:
    """A string, bytes or message field, left out when empty unless ``always`` (a oneof member,
    an element of a repeated field, a message that is present though empty)."""
    if not data and not always:
        return b""
    return write_varint(number << 3 | LENGTH_DELIMITED) + write_varint(len(data)) + data


def field_string(number: int, text: str) -> bytes:
    return field_bytes(number, text.encode("utf-8"))
