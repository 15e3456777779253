"""The federation manifest: who the members are, what they serve, which keys speak for them.

There is no central server to trust, so a manifest is trusted only with signatures of a
quorum of members, and a new version only with a quorum of the version a node already
trusts. The chain of quorums from the anchor (handed over out of band) is what lets the
membership and the keys change without ever trusting a newcomer's word alone.
Signatures cover the manifest bytes exactly as carried, so no protobuf canonicalisation
is needed (docs/protocol.md, section 6).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from google.protobuf.message import DecodeError
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from yrd.federation.v1.manifest_pb2 import (
    KEY_STATUS_ACTIVE,
    KEY_STATUS_RETIRING,
    KEY_STATUS_REVOKED,
    Manifest,
    ManifestSignature,
    Member,
    MemberKey,
    SignedManifest,
)

from core.division_table import DIVISIONS
from core.errors import ConfigError, EnvelopeRejected, ManifestRejected, NotFound
from core.keys import NodeKey, key_id_for
from core.wire import lp

log = logging.getLogger(__name__)

MANIFEST_DOMAIN = b"yrd-manifest-v1\x00"
_SIGNING_STATUSES = (KEY_STATUS_ACTIVE, KEY_STATUS_RETIRING)
_KNOWN_STATUSES = (KEY_STATUS_ACTIVE, KEY_STATUS_RETIRING, KEY_STATUS_REVOKED)


def manifest_signing_input(manifest_bytes: bytes) -> bytes:
    return MANIFEST_DOMAIN + lp(manifest_bytes)


def fingerprint(manifest_bytes: bytes) -> str:
    """SHA-256 in groups of four hex digits, short enough for operators to read out by phone."""
    digest = hashlib.sha256(manifest_bytes).hexdigest()
    return " ".join(digest[i : i + 4] for i in range(0, len(digest), 4))


def sign_manifest(signed: SignedManifest, node_id: str, key: NodeKey) -> SignedManifest:
    """A copy with this node's signature by ``key`` added, replacing an earlier one by the same key.

    Signatures by the node's other keys stay: during a rotation one key may count towards
    the previous version's quorum and the other towards the new one's.
    """
    out = SignedManifest(manifest=signed.manifest)
    out.signatures.extend(s for s in signed.signatures if (s.node_id, s.key_id) != (node_id, key.key_id))
    sig = key.sign(manifest_signing_input(signed.manifest))
    out.signatures.append(ManifestSignature(node_id=node_id, key_id=key.key_id, signature=sig))
    return out


def _malformed(reason: str, field: str | None = None) -> ManifestRejected:
    return ManifestRejected(reason, code="malformed_manifest", field=field)


def _check_jurisdiction(prefix: str, where: str) -> None:
    if not (prefix.isascii() and prefix.isdigit() and 2 <= len(prefix) <= 6 and len(prefix) % 2 == 0):
        raise _malformed(f"jurisdiction {prefix!r} is not 2, 4 or 6 digits", where)
    if prefix[:2] + "0000" not in DIVISIONS:
        raise _malformed(f"jurisdiction {prefix!r} is in no GB/T 2260 province", where)


def _check_key(key: MemberKey, where: str) -> None:
    if len(key.public_key) != 32:
        raise _malformed("a public key is 32 bytes", where)
    if key.key_id != key_id_for(key.public_key):
        raise _malformed(f"key id {key.key_id!r} does not match its public key", where)
    if not key.not_before_ms < key.not_after_ms:
        raise _malformed("not_before_ms must be before not_after_ms", where)
    if key.status not in _KNOWN_STATUSES:
        raise _malformed("key status must be active, retiring or revoked", where)


MAX_TLS_CERTIFICATES = 2  # the current one and its successor during a rotation
MAX_CERTIFICATE_BYTES = 4096


def _check_certificate(der: bytes, node_id: str, where: str) -> x509.Name:
    """A pinned certificate must parse and name its member (SAN dNSName = node id), since a
    client checks that name; a certificate naming another member would let it pass for one.
    Returns its subject, which must differ between a member's certificates: TLS stacks find a
    trust anchor by subject, and with two alike a handshake may check against the wrong one."""
    if len(der) > MAX_CERTIFICATE_BYTES:
        raise _malformed(f"a TLS certificate is at most {MAX_CERTIFICATE_BYTES} bytes", where)
    try:
        cert = x509.load_der_x509_certificate(der)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound) as e:
        raise _malformed("a TLS certificate is DER X.509 with a subjectAltName", where) from e
    if names.get_values_for_type(x509.DNSName) != [node_id]:
        raise _malformed(f"the TLS certificate must name {node_id!r} as its only DNS name", where)
    return cert.subject


def check_form(manifest: Manifest) -> None:
    """Everything that can be judged from the manifest alone, in the order of the spec."""
    if not manifest.federation_id:
        raise _malformed("federation_id is empty", "federation_id")
    if not 1 <= manifest.threshold <= len(manifest.members):
        raise _malformed(f"threshold {manifest.threshold} is not in 1..{len(manifest.members)}", "threshold")
    if not manifest.issued_at_ms < manifest.expires_at_ms:
        raise _malformed("issued_at_ms must be before expires_at_ms", "expires_at_ms")
    node_ids: set[str] = set()
    prefixes: set[str] = set()
    key_ids: set[str] = set()
    for i, member in enumerate(manifest.members):
        where = f"members[{i}]"
        if not member.node_id or member.node_id in node_ids:
            raise _malformed(f"node id {member.node_id!r} is empty or repeated", where)
        node_ids.add(member.node_id)
        for prefix in member.jurisdictions:
            _check_jurisdiction(prefix, f"{where}.jurisdictions")
            if prefix in prefixes:
                raise _malformed(f"jurisdiction {prefix} is claimed twice", f"{where}.jurisdictions")
            prefixes.add(prefix)
        for j, key in enumerate(member.keys):
            _check_key(key, f"{where}.keys[{j}]")
            if key.key_id in key_ids:
                raise _malformed(f"key {key.key_id} is listed twice", f"{where}.keys[{j}]")
            key_ids.add(key.key_id)
        if len(member.tls_certificates) > MAX_TLS_CERTIFICATES:
            raise _malformed(f"at most {MAX_TLS_CERTIFICATES} TLS certificates", f"{where}.tls_certificates")
        if len(set(member.tls_certificates)) != len(member.tls_certificates):
            raise _malformed("a TLS certificate is listed twice", f"{where}.tls_certificates")
        subjects = [
            _check_certificate(der, member.node_id, f"{where}.tls_certificates[{j}]")
            for j, der in enumerate(member.tls_certificates)
        ]
        if len(set(subjects)) != len(subjects):
            raise _malformed("two TLS certificates with the same subject", f"{where}.tls_certificates")
    direct = {m.node_id for m in manifest.members if not m.relay}
    for i, member in enumerate(manifest.members):
        if member.relay and (member.relay == member.node_id or member.relay not in direct):
            raise _malformed(
                f"relay {member.relay!r} is not another member reached directly", f"members[{i}].relay"
            )


def _parse(manifest_bytes: bytes) -> Manifest:
    manifest = Manifest()
    try:
        manifest.ParseFromString(manifest_bytes)
    except DecodeError as e:
        raise _malformed("manifest bytes are not a Manifest message", "manifest") from e
    check_form(manifest)
    return manifest


def _signers(
    manifest_bytes: bytes, signatures: Iterable[ManifestSignature], by: Manifest, at_ms: int
) -> set[str]:
    """Distinct members of ``by`` with a good signature by a key that may sign at ``at_ms``."""
    members = {m.node_id: m for m in by.members}
    message = manifest_signing_input(manifest_bytes)
    counted: set[str] = set()
    for sig in signatures:
        member = members.get(sig.node_id)
        key = next((k for k in member.keys if k.key_id == sig.key_id), None) if member else None
        if key is None or key.status not in _SIGNING_STATUSES:
            continue
        if not key.not_before_ms <= at_ms < key.not_after_ms or len(sig.signature) != 64:
            continue
        try:
            VerifyKey(key.public_key).verify(message, sig.signature)
        except BadSignatureError:
            log.warning("manifest signature by %s key %s does not verify", sig.node_id, sig.key_id)
            continue
        counted.add(sig.node_id)
    return counted


@dataclass(frozen=True)
class TrustedManifest:
    """A manifest that passed verification; also the node's key directory and routing table."""

    signed: SignedManifest
    manifest: Manifest
    fingerprint: str
    _by_id: dict[str, Member] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {m.node_id: m for m in self.manifest.members})

    @property
    def members(self) -> list[Member]:
        return list(self.manifest.members)

    def member(self, node_id: str) -> Member | None:
        return self._by_id.get(node_id)

    def expired(self, now_ms: int) -> bool:
        return now_ms >= self.manifest.expires_at_ms

    def verify_key(self, node_id: str, key_id: str, at_ms: int) -> bytes:
        member = self._by_id.get(node_id)
        if member is None:
            raise EnvelopeRejected(f"{node_id} is not a member", code="unknown_sender")
        key = next((k for k in member.keys if k.key_id == key_id), None)
        if key is None:
            raise EnvelopeRejected(f"{node_id} has no key {key_id}", code="unknown_key")
        if key.status == KEY_STATUS_REVOKED:
            raise EnvelopeRejected(f"key {key_id} of {node_id} is revoked", code="key_revoked")
        if not key.not_before_ms <= at_ms < key.not_after_ms:
            raise EnvelopeRejected(f"key {key_id} of {node_id} is not valid then", code="key_not_valid")
        return key.public_key

    def signing_key_id(self, node_id: str, at_ms: int) -> str:
        """The newest active key of ``node_id`` valid at ``at_ms``: the one to sign with."""
        member = self._by_id.get(node_id)
        usable = [
            k
            for k in (member.keys if member else ())
            if k.status == KEY_STATUS_ACTIVE and k.not_before_ms <= at_ms < k.not_after_ms
        ]
        if not usable:
            raise NotFound(f"{node_id} has no active key valid now", code="no_signing_key", field="node_id")
        return max(usable, key=lambda k: (k.not_before_ms, k.key_id)).key_id

    def owner_of(self, division_code: str) -> Member:
        """The member whose jurisdiction prefix matches ``division_code`` longest."""
        best: tuple[int, Member] | None = None
        for member in self.manifest.members:
            for prefix in member.jurisdictions:
                if division_code.startswith(prefix) and (best is None or len(prefix) > best[0]):
                    best = (len(prefix), member)
        if best is None:
            raise NotFound(f"no member serves {division_code}", code="no_route", field="division_code")
        return best[1]


def _trusted(signed: SignedManifest, manifest: Manifest) -> TrustedManifest:
    return TrustedManifest(signed=signed, manifest=manifest, fingerprint=fingerprint(signed.manifest))


def verify_anchor(signed: SignedManifest) -> TrustedManifest:
    """Trust a manifest handed over out of band; expiry is left to ``expired`` so a node
    holding a stale anchor can still start and report itself unhealthy."""
    manifest = _parse(signed.manifest)
    signers = _signers(signed.manifest, signed.signatures, manifest, manifest.issued_at_ms)
    if len(signers) < manifest.threshold:
        raise ManifestRejected(
            f"{len(signers)} counting signatures, threshold {manifest.threshold}", code="no_quorum"
        )
    return _trusted(signed, manifest)


def verify_successor(current: TrustedManifest, candidate: SignedManifest, now_ms: int) -> TrustedManifest:
    manifest = _parse(candidate.manifest)
    old = current.manifest
    if manifest.federation_id != old.federation_id:
        raise ManifestRejected(
            f"manifest of federation {manifest.federation_id!r}, not {old.federation_id!r}",
            code="federation_mismatch",
        )
    if manifest.version <= old.version:
        raise ManifestRejected(f"version {manifest.version} is not after {old.version}", code="rollback")
    if now_ms >= manifest.expires_at_ms:
        raise ManifestRejected(f"version {manifest.version} has already expired", code="expired")
    previous = _signers(candidate.manifest, candidate.signatures, old, manifest.issued_at_ms)
    if len(previous) < old.threshold:
        raise ManifestRejected(
            f"{len(previous)} signatures by members of version {old.version}, threshold {old.threshold}",
            code="no_quorum_of_previous",
        )
    own = _signers(candidate.manifest, candidate.signatures, manifest, manifest.issued_at_ms)
    if len(own) < manifest.threshold:
        raise ManifestRejected(
            f"{len(own)} counting signatures, threshold {manifest.threshold}", code="no_quorum"
        )
    log.info(
        "manifest %s version %d accepted after %d", manifest.federation_id, manifest.version, old.version
    )
    return _trusted(candidate, manifest)


def load_signed_manifest(path: Path) -> SignedManifest:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read manifest {path}: {e.strerror}", field="manifest_file") from e
    signed = SignedManifest()
    try:
        signed.ParseFromString(data)
    except DecodeError as e:
        raise ManifestRejected(
            f"{path} is not a SignedManifest", code="malformed_manifest", field="manifest_file"
        ) from e
    return signed


def save_signed_manifest(path: Path, signed: SignedManifest) -> None:
    """Write atomically: a reader (or a crash) sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(signed.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
