"""Just enough DER (X.690) to check rule 10 of docs/protocol.md 6.3 on a pinned certificate:
its subject and the dNSNames of its subjectAltName (RFC 5280 4.1 and 4.2.1.6).

Written from the standards, not from any X.509 library, so a disagreement with the reference's
``cryptography`` shows in the vectors."""

from __future__ import annotations

SEQUENCE, OID, BOOLEAN, OCTET_STRING = 0x30, 0x06, 0x01, 0x04
EXTENSIONS = 0xA3  # [3] EXPLICIT in TBSCertificate
DNS_NAME = 0x82  # [2] IMPLICIT IA5String in GeneralName
SUBJECT_ALT_NAME = bytes([0x55, 0x1D, 0x11])  # 2.5.29.17


class DerError(ValueError):
    pass


def _tlv(buf: bytes, pos: int) -> tuple[int, bytes, int, int]:
    """(tag, content, start of this element, position after it)."""
    if pos + 2 > len(buf):
        raise DerError("truncated")
    tag, first = buf[pos], buf[pos + 1]
    at = pos + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or at + count > len(buf):
            raise DerError("bad length")
        length = int.from_bytes(buf[at : at + count], "big")
        at += count
    if at + length > len(buf):
        raise DerError("truncated content")
    return tag, buf[at : at + length], pos, at + length


def _children(content: bytes) -> list[tuple[int, bytes, bytes]]:
    """(tag, content, whole encoding) of each element in a constructed value."""
    out, pos = [], 0
    while pos < len(content):
        tag, value, start, pos = _tlv(content, pos)
        out.append((tag, value, content[start:pos]))
    return out


def subject_and_dns_names(cert: bytes) -> tuple[bytes, list[str]]:
    """The subject's DER encoding and the dNSNames of the subjectAltName; DerError otherwise."""
    tag, body, _, end = _tlv(cert, 0)
    if tag != SEQUENCE or end != len(cert):
        raise DerError("a certificate is one SEQUENCE")
    tbs = _children(body)
    if not tbs or tbs[0][0] != SEQUENCE:
        raise DerError("no TBSCertificate")
    fields = _children(tbs[0][1])
    if fields and fields[0][0] == 0xA0:  # [0] version
        fields = fields[1:]
    # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, then optional fields.
    if len(fields) < 6 or fields[4][0] != SEQUENCE:
        raise DerError("TBSCertificate too short")
    subject = fields[4][2]
    names: list[str] | None = None
    for tag, value, _ in fields[6:]:
        if tag != EXTENSIONS:
            continue
        (seq_tag, extensions, _), *rest = _children(value) or [(0, b"", b"")]
        if seq_tag != SEQUENCE or rest:
            raise DerError("extensions are one SEQUENCE")
        for ext_tag, ext, _ in _children(extensions):
            parts = _children(ext) if ext_tag == SEQUENCE else []
            if len(parts) < 2 or parts[0][0] != OID:
                raise DerError("bad extension")
            if parts[0][1] != SUBJECT_ALT_NAME:
                continue
            octets = parts[-1]
            if octets[0] != OCTET_STRING:
                raise DerError("extension value is an OCTET STRING")
            san_tag, general_names, _, san_end = _tlv(octets[1], 0)
            if san_tag != SEQUENCE or san_end != len(octets[1]):
                raise DerError("GeneralNames is one SEQUENCE")
            names = [v.decode("ascii") for t, v, _ in _children(general_names) if t == DNS_NAME]
    if names is None:
        raise DerError("no subjectAltName")
    return subject, names
