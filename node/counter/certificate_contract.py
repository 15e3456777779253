"""The e-certificate check's contract (docs/protocol.md, 15), in the style of
node/counter/contract.py: the request is a closed model checked for shape only; what the
certificate says is registry/certificates.py's to judge, and its verdict is an answer
(200, ``valid`` false with a reason), not an error: the request itself was fine."""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

from pydantic import Field

from core.errors import CERTIFICATE_REASONS, InvalidInput
from node.counter.contract import CounterLimits, _Closed, _Open, validate
from registry.certificates import MAX_TEXT_CHARS, is_text

# The reason codes of core/errors.py spelt out for the schema; tests/test_certificates.py
# keeps them equal.
Reason = Literal[
    "valid",
    "malformed",
    "manifest_expired",
    "unknown_issuer",
    "unknown_key",
    "key_revoked",
    "key_not_valid",
    "bad_signature",
    "not_yet_valid",
    "expired",
]
REASONS = ("valid", *CERTIFICATE_REASONS)


class VerifyCertificate(_Closed):
    certificate: str = Field(
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        description="the QR code's text (YRDC1:…), or the certificate file in standard base64",
    )


class CertificateHolder(_Open):
    kind: Literal["person", "organisation"]
    name: str = Field(description="a person's name masked, or the organisation's name")
    id: str = Field(description="a person's resident id masked, or the unified social credit code")


class CertifiedField(_Open):
    name: str
    label: str
    value: str


class CertificateView(_Open):
    certificate_id: str
    name: str
    name_en: str
    holder: CertificateHolder
    fields: list[CertifiedField]
    issued_at_ms: int
    valid_until_ms: int | None = Field(description="null: does not expire")
    issuer: str
    department: str
    service_id: str
    application_id: str
    key_id: str


class CertificateVerdict(_Open):
    valid: bool
    reason: Reason = Field(description="valid, or the first check that failed (docs/protocol.md 15.4)")
    detail: str
    certificate: CertificateView | None = Field(description="what it says, when it could be read at all")


def parse_verify(doc: dict[str, Any], limits: CounterLimits) -> bytes:
    """The certificate's bytes as the checks take them: the text form as sent, a file
    decoded from base64 (400 naming the field when it is not base64)."""
    text = validate(VerifyCertificate, doc, limits).certificate
    if is_text(text):  # the one rule of 15.3: ASCII whitespace only before the prefix
        return text.encode()
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidInput(
            "neither YRDC1: text nor base64 of a certificate file",
            code="invalid_certificate",
            field="certificate",
        ) from e
