"""Node TLS: each node's own key pair and self-signed certificate, and the gRPC credentials
that trust exactly the certificates the manifest pins.

There is no certificate authority. A node's certificate is self-signed and the federation
manifest lists it in the member's ``tls_certificates`` (docs/protocol.md, section 6), so the
same quorum that vouches for a member's signing keys vouches for its TLS identity. A client
channel to a peer trusts that peer's pinned certificates and nothing else, and checks the
name in them (the peer's node id); a peer presenting any other certificate fails the
handshake. Under mutual TLS the server asks for a client certificate and accepts only
members' pinned ones. TLS hides routing metadata from the network and binds the channel;
the signed envelope stays the proof of who sent what.

The TLS key is a separate ECDSA P-256 key, not the Ed25519 signing key: it lives in a
different file with its own rotation, and every TLS stack speaks P-256.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from yrd.federation.v1.manifest_pb2 import Member

from core.errors import ConfigError

DEFAULT_VALID_DAYS = 730


def certificate_fingerprint(der: bytes) -> str:
    """SHA-256 of the DER certificate, the form ``yrd tls show`` prints for a phone check."""
    return hashlib.sha256(der).hexdigest()


def der_to_pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def pem_to_der(pem: bytes, where: str) -> bytes:
    try:
        return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    except ValueError as e:
        raise ConfigError("not a PEM X.509 certificate", field=where) from e


def _write_private(path: Path, data: bytes) -> None:
    """Atomically, readable by the owner only, never replacing an existing file."""
    if path.exists():
        raise ConfigError(f"{path} already exists; refusing to replace it", field=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # fails if someone created ``path`` meanwhile
    finally:
        Path(tmp).unlink(missing_ok=True)


def create_tls_identity(
    node_id: str,
    cert_path: Path,
    key_path: Path,
    now: datetime.datetime,
    valid_days: int = DEFAULT_VALID_DAYS,
) -> bytes:
    """A new P-256 key and a self-signed certificate naming ``node_id``; returns the DER
    certificate (what the manifest pins). Refuses to overwrite either file."""
    for path in (cert_path, key_path):
        if path.exists():
            raise ConfigError(f"{path} already exists; refusing to replace it", field=str(path))
    key = ec.generate_private_key(ec.SECP256R1())
    serial = x509.random_serial_number()
    # A distinct subject per certificate: while two are pinned (a rotation) a TLS stack looks
    # its trust anchor up by subject name, and with two alike it may try only the wrong one.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, node_id),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, f"{serial:x}"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        # An hour back so a peer whose clock is a little behind still accepts it.
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(node_id)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_private(key_path, key_pem)
    try:
        _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    except BaseException:
        key_path.unlink(missing_ok=True)
        raise
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class TlsIdentity:
    """This node's certificate (PEM and DER) and private key (PEM), as gRPC wants them."""

    cert_pem: bytes
    key_pem: bytes
    cert_der: bytes


def load_tls_identity(cert_path: Path, key_path: Path) -> TlsIdentity:
    """The node's certificate and key, checked to belong together (a swapped file would
    otherwise only show as every peer failing its handshake)."""
    try:
        cert_pem, key_pem = cert_path.read_bytes(), key_path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {e.filename}: {e.strerror}", field="transport.tls_cert") from e
    cert_der = pem_to_der(cert_pem, "transport.tls_cert")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError("not an unencrypted PEM private key", field="transport.tls_key") from e
    cert = x509.load_der_x509_certificate(cert_der)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, public) != cert.public_key().public_bytes(
        serialization.Encoding.DER, public
    ):
        raise ConfigError("the TLS key does not match the certificate", field="transport.tls_key")
    return TlsIdentity(cert_pem=der_to_pem(cert_der), key_pem=key_pem, cert_der=cert_der)


def pinned_pem(members: list[Member]) -> bytes:
    """The pinned certificates of ``members`` as one PEM bundle (gRPC's root store)."""
    return b"".join(der_to_pem(der) for m in members for der in m.tls_certificates)


def channel_credentials(peer: Member, own: TlsIdentity) -> grpc.ChannelCredentials:
    """Credentials that trust exactly ``peer``'s pinned certificates, presenting ours.

    A peer with no pinned certificate gets our own certificate as its only root: never
    ``None`` (that would mean the system's CA store), and no peer can present our certificate
    under its own name, so the handshake fails and delivery backs off as for any dead link.
    """
    roots = pinned_pem([peer]) or own.cert_pem
    return grpc.ssl_channel_credentials(
        root_certificates=roots, private_key=own.key_pem, certificate_chain=own.cert_pem
    )


def member_of_peer_certificate(pem: bytes, members: list[Member]) -> str | None:
    """The member whose pinned certificate a client presented (mutual TLS), if any."""
    try:
        der = pem_to_der(pem, "peer")
    except ConfigError:
        return None
    return next((m.node_id for m in members if der in m.tls_certificates), None)


def server_credentials(
    own: TlsIdentity, members: Callable[[], list[Member]], *, mutual: bool
) -> grpc.ServerCredentials:
    """The server presents its certificate; under mutual TLS it requires a client certificate
    among the members' pinned ones. The roots are fetched again on each handshake when the
    manifest changed, so a member added or a certificate rotated by a manifest successor is
    accepted without a restart."""
    state: dict[str, bytes] = {}

    def config() -> grpc.ServerCertificateConfiguration:
        roots = pinned_pem(members()) if mutual else None
        state["roots"] = roots or b""
        return grpc.ssl_server_certificate_configuration([(own.key_pem, own.cert_pem)], roots)

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        if not mutual or pinned_pem(members()) == state.get("roots"):
            return None  # unchanged: gRPC keeps the current configuration
        return config()

    # The stubs type the fetcher as never returning None, but None is gRPC's "keep the
    # current configuration" (grpc/__init__.py, dynamic_ssl_server_credentials).
    return grpc.dynamic_ssl_server_credentials(
        config(),
        fetch,  # type: ignore[arg-type]
        require_client_authentication=mutual,
    )
