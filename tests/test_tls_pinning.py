"""Pinned TLS certificates: in members.toml, in the manifest checks, in a node's start-up
checks and in `yrd node init`; plaintext only when node.toml says so."""

from __future__ import annotations

import dataclasses
import datetime
import tomllib
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from core.errors import ConfigError, ManifestRejected
from core.keys import NodeKey
from node.app import build_node
from node.cli.node import init_node, members_snippet
from node.config import TransportConfig, config_from_document
from node.trust.tls import certificate_fingerprint, create_tls_identity, load_tls_identity
from registry.federation_file import manifest_from_members
from registry.manifest import check_form
from simulations.local_federation import PROVINCES, prepare

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def cert(tmp_path: Path, name: str, tag: str = "") -> tuple[bytes, str]:
    """A certificate naming ``name``: its DER and its PEM text."""
    path = tmp_path / f"{name}{tag}.crt"
    der = create_tls_identity(name, path, tmp_path / f"{name}{tag}.key", NOW)
    return der, path.read_text()


def members_doc(certificates: list[Any]) -> dict[str, Any]:
    return {
        "federation_id": "yrd",
        "threshold": 1,
        "members": [
            {
                "node_id": "jiangsu",
                "jurisdictions": ["32"],
                "grpc_endpoint": "127.0.0.1:7100",
                "http_endpoint": "http://127.0.0.1:7200",
                "tls_certificates": certificates,
                "keys": [{"public_key": NodeKey.generate().public_key.hex()}],
            }
        ],
    }


def test_members_file_pins_pem_certificates_as_der(tmp_path: Path) -> None:
    der, pem = cert(tmp_path, "jiangsu")
    manifest = manifest_from_members(members_doc([pem]), version=1, now_ms=NOW_MS)
    assert list(manifest.members[0].tls_certificates) == [der]
    check_form(manifest)
    assert len(certificate_fingerprint(der)) == 64


@pytest.mark.parametrize("bad", ["not a certificate", 42])
def test_members_file_refuses_what_is_no_pem_certificate(bad: object) -> None:
    with pytest.raises(ConfigError) as err:
        manifest_from_members(members_doc([bad]), version=1, now_ms=NOW_MS)
    assert err.value.field == "members[0].tls_certificates[0]"


def test_manifest_refuses_a_certificate_naming_another_member(tmp_path: Path) -> None:
    other, _ = cert(tmp_path, "zhejiang")
    manifest = manifest_from_members(members_doc([]), version=1, now_ms=NOW_MS)
    manifest.members[0].tls_certificates.append(other)
    with pytest.raises(ManifestRejected) as err:
        check_form(manifest)
    assert (err.value.code, err.value.field) == ("malformed_manifest", "members[0].tls_certificates[0]")


def test_manifest_refuses_garbage_repeats_and_more_than_two_certificates(tmp_path: Path) -> None:
    certs = [cert(tmp_path, "jiangsu", str(i))[0] for i in range(3)]
    for pinned in ([b"\x30\x03garbage"], [certs[0], certs[0]], certs):
        manifest = manifest_from_members(members_doc([]), version=1, now_ms=NOW_MS)
        manifest.members[0].tls_certificates.extend(pinned)
        with pytest.raises(ManifestRejected) as err:
            check_form(manifest)
        assert err.value.code == "malformed_manifest"
    manifest = manifest_from_members(members_doc([]), version=1, now_ms=NOW_MS)
    manifest.members[0].tls_certificates.extend(certs[:2])  # a rotation: old and new
    check_form(manifest)


def test_transport_config_is_strict() -> None:
    base = {"node_id": "jiangsu", "jurisdiction": "320000"}
    default = config_from_document(base, Path("/srv/yrd")).transport
    assert not default.plaintext and default.tls_cert == Path("/srv/yrd/tls.crt")
    for transport, field in (
        ({"plaintext": True, "mutual_tls": True}, "transport.mutual_tls"),
        ({"https_cert": "web.crt"}, "transport.https_key"),
        ({"plaintext": "yes"}, "transport.plaintext"),
        ({"plain_text": True}, "transport.plain_text"),
    ):
        with pytest.raises(ConfigError) as err:
            config_from_document({**base, "transport": transport}, Path("/srv/yrd"))
        assert err.value.field == field


async def test_a_node_refuses_to_start_with_an_unpinned_or_missing_certificate(tmp_path: Path) -> None:
    (config,) = prepare(tmp_path, PROVINCES[:1], now_ms=NOW_MS)
    tls = config.transport
    tls.tls_cert.unlink()
    tls.tls_key.unlink()
    with pytest.raises(ConfigError) as err:
        build_node(config)
    assert err.value.field == "transport.tls_cert"  # missing: no silent fall-back to plaintext
    create_tls_identity(config.node_id, tls.tls_cert, tls.tls_key, NOW)  # a new, unpinned one
    with pytest.raises(ConfigError) as err:
        build_node(config)
    assert err.value.field == "transport.tls_cert" and "not pinned" in str(err.value)
    plain = dataclasses.replace(config, transport=TransportConfig(plaintext=True))
    node = build_node(plain)  # explicitly plaintext: builds, with no server credentials
    try:
        assert node.grpc_credentials is None
    finally:
        node.db.close()
        node.users.close()


def test_a_swapped_tls_key_is_refused(tmp_path: Path) -> None:
    cert(tmp_path, "jiangsu", "a")
    cert(tmp_path, "jiangsu", "b")
    with pytest.raises(ConfigError) as err:
        load_tls_identity(tmp_path / "jiangsua.crt", tmp_path / "jiangsub.key")
    assert err.value.field == "transport.tls_key"


def test_node_init_creates_a_private_certificate_that_the_members_file_pins(tmp_path: Path) -> None:
    config, key = init_node(tmp_path / "js", jurisdiction="320000", name="Jiangsu")
    tls = load_tls_identity(config.transport.tls_cert, config.transport.tls_key)
    assert config.transport.tls_key.stat().st_mode & 0o077 == 0
    snippet = tomllib.loads(members_snippet(config, key))
    doc = {"federation_id": "yrd", "threshold": 1, **snippet}
    manifest = manifest_from_members(doc, version=1, now_ms=NOW_MS)
    check_form(manifest)
    assert list(manifest.members[0].tls_certificates) == [tls.cert_der]


def plain_cert(node_id: str) -> bytes:
    """A certificate whose subject is only ``CN=<node_id>``, as a hand-made one might be."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(node_id)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def test_a_members_two_certificates_need_distinct_subjects() -> None:
    """Found by the rotation test: with two pinned anchors of one subject name, a handshake
    was checked against the wrong one and failed ("self signed certificate")."""
    manifest = manifest_from_members(members_doc([]), version=1, now_ms=NOW_MS)
    manifest.members[0].tls_certificates.extend([plain_cert("jiangsu"), plain_cert("jiangsu")])
    with pytest.raises(ManifestRejected) as err:
        check_form(manifest)
    assert "same subject" in str(err.value)
