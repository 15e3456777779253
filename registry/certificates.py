"""E-certificates (电子证照): the signed format, its text form for QR codes, and the offline
check against the federation manifest (docs/protocol.md, section 15).

An owner signs the certificates it issues with its node key, so whoever holds a verified
manifest (any member, a counter with no network, `yrd cert verify`) can tell a genuine
licence from a forged or altered one without asking the issuer. As with envelopes, the
signature covers a domain-separated, length-prefixed signing input built from the fields,
not the protobuf bytes, so a re-encoded certificate still verifies and no unsigned byte is
ever shown as attested.

Everything here is pure: no clock (the caller passes ``now_ms``), no network, no node.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from yrd.certificate.v1.certificate_pb2 import (
    HOLDER_KIND_ORGANISATION,
    HOLDER_KIND_PERSON,
    Certificate,
    SignedCertificate,
)

from core.errors import CertificateRejected, EnvelopeRejected
from core.keys import NodeKey
from core.wire import i64, lp, u32
from registry.manifest import TrustedManifest

CERTIFICATE_DOMAIN = b"yrd-certificate-v1\x00"
TEXT_PREFIX = "YRDC1:"
CONTENT_TYPE = "application/vnd.yrd.certificate+protobuf"
FILE_NAME = "certificate.yrdc"
SIGNATURE_BYTES = 64
# Small enough that the text form (base32: 8 characters per 5 bytes) fits a QR code in
# alphanumeric mode at error correction M (3,391 characters at version 40) with room to spare.
MAX_CERTIFICATE_BYTES = 1536
MAX_TEXT_CHARS = len(TEXT_PREFIX) + (MAX_CERTIFICATE_BYTES * 8 + 4) // 5 + 64  # + whitespace
MAX_FIELDS = 16
MAX_NAME_CHARS = 64
MAX_TEXT_VALUE_CHARS = 200
# A certificate issued later than this after "now" is refused: the issuer's clock may run
# a little ahead of the verifier's, but not by minutes.
MAX_FUTURE_SKEW_MS = 300_000
_HOLDER_KINDS = {HOLDER_KIND_PERSON: "person", HOLDER_KIND_ORGANISATION: "organisation"}
# What the manifest check's envelope reasons mean for a certificate.
_KEY_REASONS = {
    "unknown_sender": "unknown_issuer",
    "unknown_key": "unknown_key",
    "key_revoked": "key_revoked",
    "key_not_valid": "key_not_valid",
}


def signing_input(cert: Certificate) -> bytes:
    """Every field of ``cert`` in a fixed order; the list of fields is counted, so no two
    different certificates give the same bytes."""
    parts = [
        CERTIFICATE_DOMAIN,
        lp(cert.certificate_id.encode()),
        lp(cert.name.encode()),
        lp(cert.name_en.encode()),
        u32(cert.holder.kind),
        lp(cert.holder.display_name.encode()),
        lp(cert.holder.display_id.encode()),
        u32(len(cert.fields)),
    ]
    for f in cert.fields:
        parts += [lp(f.name.encode()), lp(f.label.encode()), lp(f.value.encode())]
    parts += [
        i64(cert.issued_at_ms),
        i64(cert.valid_until_ms),
        lp(cert.issuer.encode()),
        lp(cert.department.encode()),
        lp(cert.service_id.encode()),
        lp(cert.application_id.encode()),
        lp(cert.key_id.encode()),
    ]
    return b"".join(parts)


def sign_certificate(cert: Certificate, key: NodeKey) -> SignedCertificate:
    """``cert`` with ``key``'s id set and signed; refused when it would not pass :func:`check_form`."""
    signed = SignedCertificate(certificate=cert)
    signed.certificate.key_id = key.key_id
    signed.signature = key.sign(signing_input(signed.certificate))
    check_form(signed)
    if signed.ByteSize() > MAX_CERTIFICATE_BYTES:
        raise CertificateRejected(
            f"certificate is {signed.ByteSize()} bytes, more than {MAX_CERTIFICATE_BYTES}", code="malformed"
        )
    return signed


def mask_name(name: str) -> str:
    """张三 → 张*, 张小三 → 张*三: enough for a clerk to compare with the ID card."""
    name = name.strip()
    if len(name) <= 1:
        return name
    if len(name) == 2:
        return name[0] + "*"
    return name[0] + "*" * (len(name) - 2) + name[-1]


def mask_id(id_number: str) -> str:
    """The first six (the issuing division) and the last four characters; the birth date hidden."""
    id_number = id_number.strip()
    if len(id_number) <= 10:
        return "*" * len(id_number)
    return id_number[:6] + "*" * (len(id_number) - 10) + id_number[-4:]


# -- the text form ------------------------------------------------------------------------


def to_text(signed: SignedCertificate) -> str:
    """``YRDC1:`` and base32 without padding: only upper-case letters, digits and the colon,
    which a QR code stores in alphanumeric mode (5.5 bits a character instead of 8)."""
    return TEXT_PREFIX + base64.b32encode(signed.SerializeToString()).decode().rstrip("=")


def decode(data: bytes | str) -> SignedCertificate:
    """A certificate from its text form or its file bytes (docs/protocol.md 15.3); ``malformed``
    for anything else. The text is read as a clerk may paste a scanned QR code: any case, ASCII
    whitespace anywhere after the prefix, its ``=`` padding kept or not. Either form is held to
    the 1,536 bytes an issuer may sign, so no certificate is valid as a file but not as text."""
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else data
    if len(raw) > MAX_TEXT_CHARS:
        raise CertificateRejected(f"more than {MAX_TEXT_CHARS} bytes", code="malformed")
    if is_text(raw):
        raw = _from_text(raw)
    if len(raw) > MAX_CERTIFICATE_BYTES:
        raise CertificateRejected(f"more than {MAX_CERTIFICATE_BYTES} bytes", code="malformed")
    signed = SignedCertificate()
    try:
        signed.ParseFromString(raw)
    except (DecodeError, ValueError) as e:
        raise CertificateRejected(
            "not a certificate (neither its text form nor its file)", code="malformed"
        ) from e
    check_form(signed)
    return signed


def is_text(data: bytes | str) -> bool:
    """Whether ``data`` is the text form: the prefix, in any case, after ASCII whitespace only
    (15.3), so a no-break or ideographic space in front makes it no text, wherever it is read."""
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else data
    return raw.lstrip()[: len(TEXT_PREFIX)].upper() == TEXT_PREFIX.encode()


def _from_text(raw: bytes) -> bytes:
    body = b"".join(raw.split())[len(TEXT_PREFIX) :].upper()
    try:
        return base64.b32decode(body + b"=" * (-len(body) % 8))
    except (binascii.Error, ValueError) as e:
        raise CertificateRejected("the text after YRDC1: is not base32", code="malformed") from e


def check_form(signed: SignedCertificate) -> None:
    """Everything that can be judged from the certificate alone."""
    c = signed.certificate
    if len(signed.signature) != SIGNATURE_BYTES:
        raise _malformed(f"signature must be {SIGNATURE_BYTES} bytes", "signature")
    for name in ("certificate_id", "name", "issuer", "key_id", "service_id", "application_id"):
        value = getattr(c, name)
        if not value or len(value) > MAX_TEXT_VALUE_CHARS:
            raise _malformed(f"{name} is empty or longer than {MAX_TEXT_VALUE_CHARS}", name)
    for name in ("name_en", "department"):
        if len(getattr(c, name)) > MAX_TEXT_VALUE_CHARS:
            raise _malformed(f"{name} is longer than {MAX_TEXT_VALUE_CHARS}", name)
    if c.certificate_id != f"{c.issuer}/{c.application_id}":
        raise _malformed("certificate_id is not <issuer>/<application_id>", "certificate_id")
    if c.holder.kind not in _HOLDER_KINDS:
        raise _malformed("holder kind must be person or organisation", "holder.kind")
    for name in ("display_name", "display_id"):
        value = getattr(c.holder, name)
        if not value or len(value) > MAX_TEXT_VALUE_CHARS:
            raise _malformed(
                f"holder {name} is empty or longer than {MAX_TEXT_VALUE_CHARS}", f"holder.{name}"
            )
    if len(c.fields) > MAX_FIELDS:
        raise _malformed(f"more than {MAX_FIELDS} fields", "fields")
    seen: set[str] = set()
    for i, f in enumerate(c.fields):
        if not f.name or f.name in seen or len(f.name) > MAX_NAME_CHARS or len(f.label) > MAX_NAME_CHARS:
            raise _malformed("a field name is empty, repeated or too long", f"fields[{i}]")
        if len(f.value) > MAX_TEXT_VALUE_CHARS:
            raise _malformed(f"a value is longer than {MAX_TEXT_VALUE_CHARS}", f"fields[{i}]")
        seen.add(f.name)
    if c.issued_at_ms <= 0:
        raise _malformed("issued_at_ms must be positive", "issued_at_ms")
    if c.valid_until_ms and c.valid_until_ms <= c.issued_at_ms:
        raise _malformed("valid_until_ms must be after issued_at_ms", "valid_until_ms")


def _malformed(reason: str, field: str) -> CertificateRejected:
    return CertificateRejected(reason, code="malformed", field=field)


# -- verification -------------------------------------------------------------------------


def check(signed: SignedCertificate, manifest: TrustedManifest, now_ms: int) -> None:
    """The checks of docs/protocol.md 15.4 in their order; the first that fails raises
    :class:`CertificateRejected` with its reason. The signature is checked before time, so
    ``expired`` is said only of a certificate the issuer really signed."""
    check_form(signed)
    c = signed.certificate
    if manifest.expired(now_ms):
        raise CertificateRejected(
            "the manifest this check relies on has expired; fetch a current one", code="manifest_expired"
        )
    try:
        public_key = manifest.verify_key(c.issuer, c.key_id, c.issued_at_ms)
    except EnvelopeRejected as e:
        raise CertificateRejected(e.reason, code=_KEY_REASONS.get(e.code, "unknown_key")) from e
    try:
        VerifyKey(public_key).verify(signing_input(c), signed.signature)
    except BadSignatureError as e:
        raise CertificateRejected("the signature does not verify", code="bad_signature") from e
    if c.issued_at_ms > now_ms + MAX_FUTURE_SKEW_MS:
        raise CertificateRejected("issued later than now", code="not_yet_valid")
    if c.valid_until_ms and now_ms >= c.valid_until_ms:
        raise CertificateRejected("the certificate's validity has ended", code="expired")


@dataclass(frozen=True)
class Verdict:
    """What a counter is told: valid or the reason it is not, and what the certificate
    says (when it could be read at all, so a clerk sees what an expired licence was)."""

    valid: bool
    reason: str
    detail: str
    certificate: dict[str, Any] | None

    def to_api(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "reason": self.reason,
            "detail": self.detail,
            "certificate": self.certificate,
        }


def verify(data: bytes | str, manifest: TrustedManifest, now_ms: int) -> Verdict:
    """Decode and check; never raises for what the certificate holds."""
    try:
        signed = decode(data)
    except CertificateRejected as e:
        return Verdict(False, e.code, e.reason, None)
    try:
        check(signed, manifest, now_ms)
    except CertificateRejected as e:
        return Verdict(False, e.code, e.reason, describe(signed))
    return Verdict(True, "valid", "", describe(signed))


def describe(signed: SignedCertificate) -> dict[str, Any]:
    """The certificate as the API and the pages show it (times in milliseconds, UTC)."""
    c = signed.certificate
    return {
        "certificate_id": c.certificate_id,
        "name": c.name,
        "name_en": c.name_en,
        "holder": {
            "kind": _HOLDER_KINDS.get(c.holder.kind, "unknown"),
            "name": c.holder.display_name,
            "id": c.holder.display_id,
        },
        "fields": [{"name": f.name, "label": f.label, "value": f.value} for f in c.fields],
        "issued_at_ms": c.issued_at_ms,
        "valid_until_ms": c.valid_until_ms or None,
        "issuer": c.issuer,
        "department": c.department,
        "service_id": c.service_id,
        "application_id": c.application_id,
        "key_id": c.key_id,
    }
