"""Section 15 of docs/protocol.md: e-certificates (电子证照), their text form and the checks of 15.4.

Written from the document alone, like the rest of this package: the messages are read with the
hand-written wire reader, the signing input is built from the fields as 15.2 lists them, and the
keys come from a manifest read by ref_manifest. Where the first text was silent the choice was
listed in CERTIFICATE_GAPS.md beside this file; each is now settled there, by the section named.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from tests.independent import wire
from tests.independent.primitives import (
    SIGNATURE_BYTES,
    Rejected,
    ed25519_sign,
    ed25519_verify,
    i64,
    lp,
)
from tests.independent.ref_manifest import REVOKED, Manifest
from tests.independent.wire import field_bytes, field_string, field_varint

CERTIFICATE_DOMAIN = b"yrd-certificate-v1\x00"
TEXT_PREFIX = b"YRDC1:"
MAX_INPUT_BYTES = 2528
MAX_CERTIFICATE_BYTES = 1536
MAX_TEXT = 200
MAX_FIELDS = 16
MAX_FIELD_NAME = 64
AHEAD_MS = 5 * 60 * 1000
PERSON, ORGANISATION = 1, 2
# 15.3: whitespace is the six ASCII bytes of a text file or a scanner's output, nothing else.
_WHITESPACE = frozenset(b" \t\n\r\x0b\x0c")
_BASE32 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
_LD, _VARINT = wire.LENGTH_DELIMITED, wire.VARINT


@dataclass(frozen=True)
class Holder:
    kind: int
    display_name: str
    display_id: str


@dataclass(frozen=True)
class CertifiedField:
    name: str
    label: str
    value: str


@dataclass(frozen=True)
class Certificate:
    """The twelve fields of the 15.1 table, in field-number order."""

    certificate_id: str
    name: str
    name_en: str
    holder: Holder
    fields: tuple[CertifiedField, ...]
    issued_at_ms: int
    valid_until_ms: int
    issuer: str
    department: str
    service_id: str
    application_id: str
    key_id: str


@dataclass(frozen=True)
class SignedCertificate:
    certificate: Certificate
    signature: bytes


# 15.2: the signing input, from the fields, never from protobuf bytes.


def _text(value: str) -> bytes:
    return lp(value.encode("utf-8"))


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def certificate_signing_input(c: Certificate) -> bytes:
    parts = [
        CERTIFICATE_DOMAIN,
        _text(c.certificate_id),
        _text(c.name),
        _text(c.name_en),
        _u32(c.holder.kind),
        _text(c.holder.display_name),
        _text(c.holder.display_id),
        _u32(len(c.fields)),
    ]
    for field in c.fields:
        parts += [_text(field.name), _text(field.label), _text(field.value)]
    parts += [i64(c.issued_at_ms), i64(c.valid_until_ms)]
    parts += [_text(c.issuer), _text(c.department), _text(c.service_id), _text(c.application_id)]
    parts.append(_text(c.key_id))
    return b"".join(parts)


def sign_certificate(c: Certificate, seed: bytes) -> SignedCertificate:
    return SignedCertificate(c, ed25519_sign(seed, certificate_signing_input(c)))


# Writing, so tests can carry the worked example in both forms of 15.3; the numbers of Holder and
# CertifiedField are those of 15.1's second table.


def ld_field(number: int, data: bytes) -> bytes:
    """One length-delimited field, written even when empty."""
    return field_bytes(number, data, always=True)


def encode_certificate(c: Certificate) -> bytes:
    holder = (
        field_varint(1, c.holder.kind)
        + field_string(2, c.holder.display_name)
        + field_string(3, c.holder.display_id)
    )
    fields = b"".join(
        ld_field(5, field_string(1, f.name) + field_string(2, f.label) + field_string(3, f.value))
        for f in c.fields
    )
    return b"".join((
        field_string(1, c.certificate_id), field_string(2, c.name), field_string(3, c.name_en),
        ld_field(4, holder), fields, field_varint(6, c.issued_at_ms), field_varint(7, c.valid_until_ms),
        field_string(8, c.issuer), field_string(9, c.department), field_string(10, c.service_id),
        field_string(11, c.application_id), field_string(12, c.key_id),
    ))  # fmt: skip


def encode_signed(signed: SignedCertificate) -> bytes:
    return ld_field(1, encode_certificate(signed.certificate)) + ld_field(2, signed.signature)


def text_form(certificate_bytes: bytes) -> str:
    """15.3: the prefix and unpadded upper-case base32."""
    return (TEXT_PREFIX + base64.b32encode(certificate_bytes).rstrip(b"=")).decode("ascii")


# Reading (15.1 with the parsing rules of section 8).


def _bytes(value: int | bytes) -> bytes:
    assert isinstance(value, bytes), "the schema admits only length-delimited values here"
    return value


def _int(value: int | bytes) -> int:
    assert isinstance(value, int), "the schema admits only varints here"
    return value


def _read_holder(buf: bytes) -> Holder:
    fields: dict[int, int | bytes] = {1: 0, 2: b"", 3: b""}
    fields.update(wire.known_fields(buf, {1: _VARINT, 2: _LD, 3: _LD}))
    # 15.1: an open enum, kept to its low 32 bits; as_int32 then gives the enum's sign.
    kind = wire.as_int32(_int(fields[1]))
    return Holder(kind, wire.as_string(_bytes(fields[2])), wire.as_string(_bytes(fields[3])))


def _read_field(buf: bytes) -> CertifiedField:
    fields: dict[int, bytes] = {1: b"", 2: b"", 3: b""}
    for number, value in wire.known_fields(buf, {1: _LD, 2: _LD, 3: _LD}):
        fields[number] = _bytes(value)
    return CertifiedField(*(wire.as_string(fields[n]) for n in (1, 2, 3)))


def _read_certificate(buf: bytes) -> Certificate:
    strings: dict[int, bytes] = dict.fromkeys((1, 2, 3, 8, 9, 10, 11, 12), b"")
    times = {6: 0, 7: 0}
    holder = b""
    fields: list[CertifiedField] = []
    schema = dict.fromkeys((*strings, 4, 5), _LD) | dict.fromkeys(times, _VARINT)
    for number, value in wire.known_fields(buf, schema):
        if number == 4:
            holder += _bytes(value)  # section 8: a singular message seen twice is merged
        elif number == 5:
            fields.append(_read_field(_bytes(value)))
        elif number in times:
            times[number] = wire.as_int64(_int(value))
        else:
            strings[number] = _bytes(value)
    text = {number: wire.as_string(value) for number, value in strings.items()}
    return Certificate(
        certificate_id=text[1],
        name=text[2],
        name_en=text[3],
        holder=_read_holder(holder),
        fields=tuple(fields),
        issued_at_ms=times[6],
        valid_until_ms=times[7],
        issuer=text[8],
        department=text[9],
        service_id=text[10],
        application_id=text[11],
        key_id=text[12],
    )


def read_signed_certificate(raw: bytes) -> SignedCertificate:
    """Concatenating every occurrence of field 1 and parsing once is protobuf's merge rule."""
    certificate, signature = b"", b""
    try:
        for number, value in wire.known_fields(raw, {1: _LD, 2: _LD}):
            if number == 1:
                certificate += _bytes(value)
            else:
                signature = _bytes(value)
        return SignedCertificate(_read_certificate(certificate), signature)
    except wire.WireError as exc:
        raise Rejected("malformed", f"does not parse: {exc}") from exc


def certificate_bytes(data: str | bytes) -> bytes:
    """15.3 and the first clauses of 15.4 step 1: the SignedCertificate bytes of either form.

    The 2,528-byte limit is on the input as given (a str as UTF-8), whitespace included; leading
    whitespace is skipped to look for the prefix, and whitespace anywhere after it is dropped; the
    file is taken byte for byte (a SignedCertificate starts with 0x0a, a newline). The base32 is read
    in any case, with its '=' padding or without it, and either form is at most 1,536 bytes.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > MAX_INPUT_BYTES:
        raise Rejected("malformed", f"{len(raw)} bytes, more than {MAX_INPUT_BYTES}")
    start = next((i for i, byte in enumerate(raw) if byte not in _WHITESPACE), len(raw))
    if raw[start : start + len(TEXT_PREFIX)].upper() != TEXT_PREFIX:
        decoded = raw
    else:
        decoded = _base32(raw[start + len(TEXT_PREFIX) :])
    if len(decoded) > MAX_CERTIFICATE_BYTES:
        raise Rejected("malformed", f"{len(decoded)} bytes, more than {MAX_CERTIFICATE_BYTES}")
    return decoded


def _base32(text: bytes) -> bytes:
    """RFC 4648 base32 in either case; '=' only at the end and no more than completes a block of 8."""
    body = bytes(byte for byte in text if byte not in _WHITESPACE).upper()
    unpadded = body.rstrip(b"=")
    if len(body) - len(unpadded) > -len(unpadded) % 8:
        raise Rejected("malformed", "more '=' than the padding of the text form")
    if not set(unpadded) <= _BASE32 or len(unpadded) % 8 in (1, 3, 6):
        raise Rejected("malformed", "the text form is not base32")
    try:
        return base64.b32decode(unpadded + b"=" * (-len(unpadded) % 8))
    except binascii.Error as exc:
        raise Rejected("malformed", f"base32: {exc}") from exc


# 15.4, the checks in their order.


def _form_problem(signed: SignedCertificate) -> str | None:
    """The rest of step 1; the first rule broken, or None. "characters" are read as code points."""
    c = signed.certificate
    required = {
        "certificate_id": c.certificate_id,
        "name": c.name,
        "issuer": c.issuer,
        "key_id": c.key_id,
        "service_id": c.service_id,
        "application_id": c.application_id,
    }
    names = [field.name for field in c.fields]
    rules = [
        (len(signed.signature) == SIGNATURE_BYTES, "signature is not 64 bytes"),
        *((0 < len(value) <= MAX_TEXT, f"{key} empty or too long") for key, value in required.items()),
        (len(c.name_en) <= MAX_TEXT and len(c.department) <= MAX_TEXT, "name_en or department too long"),
        (c.certificate_id == f"{c.issuer}/{c.application_id}", "certificate_id is not issuer/application_id"),
        (c.holder.kind in (PERSON, ORGANISATION), "holder.kind is not 1 or 2"),
        (0 < len(c.holder.display_name) <= MAX_TEXT, "holder.display_name empty or too long"),
        (0 < len(c.holder.display_id) <= MAX_TEXT, "holder.display_id empty or too long"),
        (len(c.fields) <= MAX_FIELDS, "more than 16 fields"),
        (all(0 < len(name) <= MAX_FIELD_NAME for name in names), "field name empty or too long"),
        (len(set(names)) == len(names), "field names repeat"),
        # 15.4 step 1.8: labels have only the 64-character limit; they may be empty or repeat.
        (all(len(field.label) <= MAX_FIELD_NAME for field in c.fields), "field label too long"),
        (all(len(field.value) <= MAX_TEXT for field in c.fields), "field value too long"),
        (c.issued_at_ms > 0, "issued_at_ms is not positive"),
        (c.valid_until_ms == 0 or c.valid_until_ms > c.issued_at_ms, "valid_until_ms not after issued_at_ms"),
    ]
    return next((problem for holds, problem in rules if not holds), None)


def check_certificate(data: str | bytes, manifest: Manifest, now_ms: int) -> SignedCertificate:
    """Steps 1 to 9 of 15.4; the first that fails raises Rejected with its reason code."""
    signed = read_signed_certificate(certificate_bytes(data))
    problem = _form_problem(signed)
    if problem is not None:
        raise Rejected("malformed", problem)
    c = signed.certificate
    if now_ms >= manifest.expires_at_ms:  # "expired" as 6.4 defines it
        raise Rejected("manifest_expired", str(manifest.expires_at_ms))
    member = manifest.member(c.issuer)
    if member is None:
        raise Rejected("unknown_issuer", c.issuer)
    key = member.key(c.key_id)
    if key is None:
        raise Rejected("unknown_key", c.key_id)
    if key.status == REVOKED:
        raise Rejected("key_revoked", c.key_id)
    if not key.not_before_ms <= c.issued_at_ms < key.not_after_ms:
        raise Rejected("key_not_valid", str(c.issued_at_ms))
    if not ed25519_verify(key.public_key, certificate_signing_input(c), signed.signature):
        raise Rejected("bad_signature", c.key_id)
    if c.issued_at_ms > now_ms + AHEAD_MS:
        raise Rejected("not_yet_valid", str(c.issued_at_ms))
    if c.valid_until_ms != 0 and not now_ms < c.valid_until_ms:
        raise Rejected("expired", str(c.valid_until_ms))
    return signed


def verdict(data: str | bytes, manifest: Manifest, now_ms: int) -> str:
    """`valid` or the reason code of 15.4, as the counter API's `reason` would say it."""
    try:
        check_certificate(data, manifest, now_ms)
    except Rejected as rejected:
        return rejected.code
    return "valid"
