"""Section 6 of docs/protocol.md: reading, checking, counting and chaining federation manifests.

Manifests are read with the hand-written wire reader from the field numbers of 6.1 and signed over
the bytes as carried, so nothing here ever re-serialises a message.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from tests.independent import der, wire
from tests.independent.primitives import Rejected, ed25519_verify, key_id_for, lp

MANIFEST_DOMAIN = b"yrd-manifest-v1\x00"
ACTIVE, RETIRING, REVOKED = 1, 2, 3
PROVINCES = frozenset((
    "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41", "42",
    "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65", "71", "81", "82",
))  # fmt: skip
_LD, _VARINT = wire.LENGTH_DELIMITED, wire.VARINT


@dataclass(frozen=True)
class MemberKey:
    key_id: str
    public_key: bytes
    not_before_ms: int
    not_after_ms: int
    status: int


@dataclass(frozen=True)
class Member:
    node_id: str
    display_name: str
    jurisdictions: tuple[str, ...]
    grpc_endpoint: str
    http_endpoint: str
    keys: tuple[MemberKey, ...]
    relay: str
    tls_certificates: tuple[bytes, ...] = ()

    def key(self, key_id: str) -> MemberKey | None:
        return next((key for key in self.keys if key.key_id == key_id), None)


@dataclass(frozen=True)
class Manifest:
    federation_id: str
    version: int
    threshold: int
    issued_at_ms: int
    expires_at_ms: int
    members: tuple[Member, ...]

    def member(self, node_id: str) -> Member | None:
        return next((member for member in self.members if member.node_id == node_id), None)


@dataclass(frozen=True)
class ManifestSignature:
    node_id: str
    key_id: str
    signature: bytes


@dataclass(frozen=True)
class SignedManifest:
    manifest: bytes
    signatures: tuple[ManifestSignature, ...]


# Reading (6.1). Each reader keeps proto3 defaults for absent fields and the last of repeated scalars.


def _read_key(buf: bytes) -> MemberKey:
    fields: dict[int, int | bytes] = {1: b"", 2: b"", 3: 0, 4: 0, 5: 0}
    schema = {1: _LD, 2: _LD, 3: _VARINT, 4: _VARINT, 5: _VARINT}
    fields.update(wire.known_fields(buf, schema))
    return MemberKey(
        key_id=wire.as_string(_bytes(fields[1])),
        public_key=_bytes(fields[2]),
        not_before_ms=wire.as_int64(_int(fields[3])),
        not_after_ms=wire.as_int64(_int(fields[4])),
        status=wire.as_int32(_int(fields[5])),
    )


def _read_member(buf: bytes) -> Member:
    scalars: dict[int, bytes] = {1: b"", 2: b"", 4: b"", 5: b"", 7: b""}
    jurisdictions: list[str] = []
    keys: list[MemberKey] = []
    certificates: list[bytes] = []
    for number, value in wire.known_fields(buf, dict.fromkeys(range(1, 9), _LD)):
        if number == 3:
            jurisdictions.append(wire.as_string(_bytes(value)))
        elif number == 6:
            keys.append(_read_key(_bytes(value)))
        elif number == 8:
            certificates.append(_bytes(value))
        else:
            scalars[number] = _bytes(value)
    text = {number: wire.as_string(value) for number, value in scalars.items()}
    return Member(
        text[1], text[2], tuple(jurisdictions), text[4], text[5], tuple(keys), text[7], tuple(certificates)
    )


def _read_manifest(buf: bytes) -> Manifest:
    fields: dict[int, int | bytes] = {1: b"", 2: 0, 3: 0, 4: 0, 5: 0}
    members: list[Member] = []
    schema = {1: _LD, 2: _VARINT, 3: _VARINT, 4: _VARINT, 5: _VARINT, 6: _LD}
    for number, value in wire.known_fields(buf, schema):
        if number == 6:
            members.append(_read_member(_bytes(value)))
        else:
            fields[number] = value
    return Manifest(
        federation_id=wire.as_string(_bytes(fields[1])),
        version=_int(fields[2]),
        threshold=wire.as_uint32(_int(fields[3])),
        issued_at_ms=wire.as_int64(_int(fields[4])),
        expires_at_ms=wire.as_int64(_int(fields[5])),
        members=tuple(members),
    )


def _read_signature(buf: bytes) -> ManifestSignature:
    fields: dict[int, int | bytes] = {1: b"", 2: b"", 3: b""}
    fields.update(wire.known_fields(buf, {1: _LD, 2: _LD, 3: _LD}))
    return ManifestSignature(
        wire.as_string(_bytes(fields[1])), wire.as_string(_bytes(fields[2])), _bytes(fields[3])
    )


def _bytes(value: int | bytes) -> bytes:
    assert isinstance(value, bytes), "the schema admits only length-delimited values here"
    return value


def _int(value: int | bytes) -> int:
    assert isinstance(value, int), "the schema admits only varints here"
    return value


def parse_signed_manifest(raw: bytes) -> SignedManifest:
    """The document gives no code for a SignedManifest that does not parse; malformed_manifest is assumed."""
    manifest = b""
    signatures: list[ManifestSignature] = []
    try:
        for number, value in wire.known_fields(raw, {1: _LD, 2: _LD}):
            if number == 1:
                manifest = _bytes(value)
            else:
                signatures.append(_read_signature(_bytes(value)))
    except wire.WireError as exc:
        raise Rejected("malformed_manifest", f"SignedManifest: {exc}") from exc
    return SignedManifest(manifest, tuple(signatures))


def parse_manifest(raw: bytes) -> Manifest:
    try:
        return _read_manifest(raw)
    except wire.WireError as exc:
        raise Rejected("malformed_manifest", f"Manifest: {exc}") from exc


# Form checks (6.3).


def _valid_prefix(prefix: str) -> bool:
    digits = prefix.isascii() and prefix.isdigit()
    return digits and len(prefix) in (2, 4, 6) and prefix[:2] in PROVINCES


def _valid_key(key: MemberKey) -> bool:
    identified = len(key.public_key) == 32 and key.key_id == key_id_for(key.public_key)
    return identified and key.not_before_ms < key.not_after_ms and key.status in (ACTIVE, RETIRING, REVOKED)


def _valid_certificates(member: Member) -> bool:
    """Rule 10: at most two, none twice, each small, naming the member only, subjects distinct."""
    certs = member.tls_certificates
    if len(certs) > 2 or len(set(certs)) != len(certs) or any(len(c) > 4096 for c in certs):
        return False
    subjects = []
    for cert in certs:
        try:
            subject, names = der.subject_and_dns_names(cert)
        except (der.DerError, UnicodeDecodeError):
            return False
        if names != [member.node_id]:
            return False
        subjects.append(subject)
    return len(set(subjects)) == len(subjects)


def form_violations(m: Manifest) -> set[int]:
    """The numbers of the 6.3 rules the manifest breaks, all of them, so vector coverage can be judged."""
    node_ids = [member.node_id for member in m.members]
    prefixes = [prefix for member in m.members for prefix in member.jurisdictions]
    keys = [key for member in m.members for key in member.keys]
    relays = {member.node_id: member.relay for member in m.members}
    rules = {
        1: bool(m.federation_id),
        2: 1 <= m.threshold <= len(m.members),
        3: m.issued_at_ms < m.expires_at_ms,
        4: all(node_ids) and len(set(node_ids)) == len(node_ids),
        5: all(_valid_prefix(prefix) for prefix in prefixes),
        6: len(set(prefixes)) == len(prefixes),
        7: all(_valid_key(key) for key in keys),
        8: len({key.key_id for key in keys}) == len(keys),
        9: all(not member.relay or relays.get(member.relay) == "" for member in m.members),
        10: all(_valid_certificates(member) for member in m.members),
    }
    return {number for number, holds in rules.items() if not holds}


def read_checked_manifest(raw: bytes) -> Manifest:
    manifest = parse_manifest(raw)
    broken = form_violations(manifest)
    if broken:
        raise Rejected("malformed_manifest", f"breaks 6.3 rules {sorted(broken)}")
    return manifest


# Signatures, anchor and successor (6.2, 6.4, 6.5).


def manifest_signing_input(manifest_bytes: bytes) -> bytes:
    return MANIFEST_DOMAIN + lp(manifest_bytes)


def fingerprint(manifest_bytes: bytes) -> str:
    digest = hashlib.sha256(manifest_bytes).hexdigest()
    return " ".join(digest[i : i + 4] for i in range(0, 64, 4))


def counting_signers(signed: SignedManifest, candidate: Manifest, basis: Manifest) -> set[str]:
    """The distinct node ids whose signatures count under 6.2, keys taken from `basis`."""
    message = manifest_signing_input(signed.manifest)
    signers: set[str] = set()
    for sig in signed.signatures:
        member = basis.member(sig.node_id)
        key = member.key(sig.key_id) if member is not None else None
        if key is None or key.status not in (ACTIVE, RETIRING):
            continue
        if not key.not_before_ms <= candidate.issued_at_ms < key.not_after_ms:
            continue
        if ed25519_verify(key.public_key, message, sig.signature):
            signers.add(sig.node_id)
    return signers


def verify_anchor(raw_signed: bytes) -> Manifest:
    """6.4; expiry is deliberately not checked."""
    signed = parse_signed_manifest(raw_signed)
    manifest = read_checked_manifest(signed.manifest)
    if len(counting_signers(signed, manifest, manifest)) < manifest.threshold:
        raise Rejected("no_quorum", "too few members of the anchor signed it")
    return manifest


def verify_successor(trusted: Manifest, raw_signed: bytes, now_ms: int) -> Manifest:
    """6.5, the six checks in their order."""
    signed = parse_signed_manifest(raw_signed)
    candidate = read_checked_manifest(signed.manifest)
    if candidate.federation_id != trusted.federation_id:
        raise Rejected("federation_mismatch", candidate.federation_id)
    if candidate.version <= trusted.version:
        raise Rejected("rollback", f"version {candidate.version} after {trusted.version}")
    if not now_ms < candidate.expires_at_ms:
        raise Rejected("expired", f"expired at {candidate.expires_at_ms}")
    if len(counting_signers(signed, candidate, trusted)) < trusted.threshold:
        raise Rejected("no_quorum_of_previous", "too few members of the trusted manifest signed")
    if len(counting_signers(signed, candidate, candidate)) < candidate.threshold:
        raise Rejected("no_quorum", "too few members of the candidate signed")
    return candidate
