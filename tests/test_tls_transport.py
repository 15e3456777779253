"""gRPC between nodes over TLS with manifest-pinned certificates, end to end on 127.0.0.1."""

from __future__ import annotations

import asyncio
import datetime
import random
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from sqlmodel import select
from yrd.federation.v1 import manifest_pb2
from yrd.peer.v1 import peer_pb2, peer_pb2_grpc

from core.keys import load_key
from node.models import OutboxEntry
from node.trust.tls import create_tls_identity, load_tls_identity
from registry.manifest import load_signed_manifest, save_signed_manifest, sign_manifest
from simulations.local_federation import PROVINCES
from simulations.sample_applications import application_body
from tests.support.federation import Federation, allow_all_specs, node_channel

SERVICE = "zj.medical.cross-region-filing"  # owned by Zhejiang, handled automatically
TWO = [p for p in PROVINCES if p.node_id in {"jiangsu", "zhejiang"}]


async def started(tmp_path: Path, extra: dict[str, object] | None = None) -> Federation:
    return await Federation(tmp_path, allow_all_specs(tmp_path, TWO), extra=extra).start()


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    f = await started(tmp_path)
    try:
        yield f
    finally:
        await f.close()


def body(fed: Federation) -> dict[str, object]:
    return application_body(fed.nodes["jiangsu"].index.get(SERVICE), random.Random(7))


async def reach(channel: grpc.aio.Channel) -> grpc.StatusCode:
    """The status of an unsigned GetManifest: UNAVAILABLE when the TLS handshake fails,
    UNAUTHENTICATED when it passed and the node itself refused the empty envelope."""
    stub = peer_pb2_grpc.PeerServiceStub(channel)
    try:
        await stub.GetManifest(peer_pb2.GetManifestRequest(), timeout=10)
    except grpc.aio.AioRpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def impostor(tmp_path: Path, node_id: str) -> tuple[bytes, bytes, bytes]:
    """A certificate that names ``node_id`` but is not the one the manifest pins."""
    cert, key = tmp_path / f"impostor-{node_id}.crt", tmp_path / f"impostor-{node_id}.key"
    der = create_tls_identity(node_id, cert, key, datetime.datetime.now(datetime.UTC))
    ident = load_tls_identity(cert, key)
    return der, ident.cert_pem, ident.key_pem


async def test_a_tls_federation_routes_an_application_end_to_end(fed: Federation) -> None:
    assert all(n.grpc_credentials is not None for n in fed.nodes.values())  # TLS, not plaintext
    status, created = await fed.submit("jiangsu", body(fed), "tls-1")
    assert status == 201, created
    view = await fed.wait_status("jiangsu", created["id"], {"completed"})
    assert any(r["from_node"] == "zhejiang" for r in view["receipts"])


async def test_plaintext_and_unpinned_servers_are_refused(fed: Federation, tmp_path: Path) -> None:
    zhejiang = fed.nodes["zhejiang"]
    async with grpc.aio.insecure_channel(zhejiang.grpc_address) as plain:
        assert await reach(plain) == grpc.StatusCode.UNAVAILABLE
    # A client pinning another certificate for Zhejiang refuses the real server.
    _, wrong_pem, _ = impostor(tmp_path, "zhejiang")
    creds = grpc.ssl_channel_credentials(root_certificates=wrong_pem)
    options = [("grpc.ssl_target_name_override", "zhejiang")]
    async with grpc.aio.secure_channel(zhejiang.grpc_address, creds, options=options) as pinned_wrong:
        assert await reach(pinned_wrong) == grpc.StatusCode.UNAVAILABLE
    async with node_channel(zhejiang) as right:  # the pinned certificate: the node answers
        assert await reach(right) == grpc.StatusCode.UNAUTHENTICATED


def _pin(anchor: Path, root: Path, node_id: str, *ders: bytes) -> None:
    """Rewrite ``anchor`` pinning ``ders`` for ``node_id``, signed again by every member."""
    signed = load_signed_manifest(anchor)
    manifest = manifest_pb2.Manifest.FromString(signed.manifest)
    member = next(m for m in manifest.members if m.node_id == node_id)
    del member.tls_certificates[:]
    member.tls_certificates.extend(ders)
    out = manifest_pb2.SignedManifest(manifest=manifest.SerializeToString())
    for m in manifest.members:
        out = sign_manifest(out, m.node_id, load_key(root / m.node_id / "node.key"))
    save_signed_manifest(anchor, out)


async def pending_attempts(fed: Federation, node_id: str) -> list[OutboxEntry]:
    """Wait until the node has tried (and failed) to send its pending work at least once."""
    for _ in range(400):
        rows = await fed.nodes[node_id].db.run(
            lambda s: list(s.exec(select(OutboxEntry).where(OutboxEntry.state == "pending")))
        )
        if rows and all(r.attempts >= 1 and r.last_error for r in rows):
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError("the outbox never recorded a failed attempt")


async def test_a_wrong_pin_fails_the_link_backs_off_and_loses_nothing(fed: Federation) -> None:
    anchor = fed.configs["jiangsu"].anchor_manifest
    good = anchor.read_bytes()
    wrong_der, _, _ = impostor(fed.root, "zhejiang")
    await fed.stop_node("jiangsu")
    _pin(anchor, fed.root, "zhejiang", wrong_der)  # Jiangsu now pins a certificate Zhejiang lacks
    await fed.start_node("jiangsu")

    status, created = await fed.submit("jiangsu", body(fed), "tls-wrong-pin")
    assert status == 201, created  # stored at once, whatever the link does
    rows = await pending_attempts(fed, "jiangsu")
    assert all("CERTIFICATE_VERIFY_FAILED" in r.last_error for r in rows), [r.last_error for r in rows]
    assert all(r.next_attempt_ms > r.created_at_ms for r in rows)  # backing off, not spinning
    _, view = await fed.call("jiangsu", "GET", f"/api/v1/applications/{created['id']}")
    assert view["status"] == "submitted"

    await fed.stop_node("jiangsu")  # the operator fixes the pin (here: the right anchor again)
    anchor.write_bytes(good)
    await fed.start_node("jiangsu")
    await fed.wait_status("jiangsu", created["id"], {"completed"})


async def test_mutual_tls_routes_and_refuses_clients_without_a_member_certificate(tmp_path: Path) -> None:
    fed = await started(tmp_path, extra={"transport": {"mutual_tls": True}})
    try:
        status, created = await fed.submit("jiangsu", body(fed), "mtls-1")
        assert status == 201, created
        await fed.wait_status("jiangsu", created["id"], {"completed"})

        zhejiang = fed.nodes["zhejiang"]
        server_pem = zhejiang.config.transport.tls_cert.read_bytes()
        options = [("grpc.ssl_target_name_override", "zhejiang")]
        _, other_pem, other_key = impostor(tmp_path, "jiangsu")  # names a member, not pinned
        for client in (
            grpc.ssl_channel_credentials(root_certificates=server_pem),  # no client certificate
            grpc.ssl_channel_credentials(server_pem, other_key, other_pem),
        ):
            async with grpc.aio.secure_channel(zhejiang.grpc_address, client, options=options) as ch:
                assert await reach(ch) == grpc.StatusCode.UNAVAILABLE
        async with node_channel(zhejiang) as member:  # a member's pinned certificate
            assert await reach(member) == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await fed.close()


async def test_a_certificate_rotates_with_both_pinned_and_nothing_stops(fed: Federation) -> None:
    from node.cli.main import main

    zj = fed.configs["zhejiang"]
    assert main(["node", "tls-new", "--config", str(zj.data_dir / "node.toml")]) == 0
    old = load_tls_identity(zj.transport.tls_cert, zj.transport.tls_key).cert_der
    new = load_tls_identity(zj.data_dir / "tls.next.crt", zj.data_dir / "tls.next.key").cert_der
    for node_id in list(fed.nodes):  # every member adopts the manifest pinning both
        await fed.stop_node(node_id)
        _pin(fed.configs[node_id].anchor_manifest, fed.root, "zhejiang", old, new)
    for node_id in fed.configs:
        await fed.start_node(node_id)
    status, first = await fed.submit("jiangsu", body(fed), "rotate-1")
    assert status == 201, first
    await fed.wait_status("jiangsu", first["id"], {"completed"})
    await fed.stop_node("zhejiang")  # the switch: the new pair replaces the old
    (zj.data_dir / "tls.next.crt").replace(zj.transport.tls_cert)
    (zj.data_dir / "tls.next.key").replace(zj.transport.tls_key)
    await fed.start_node("zhejiang")
    status, second = await fed.submit("jiangsu", body(fed), "rotate-2")
    assert status == 201, second
    await fed.wait_status("jiangsu", second["id"], {"completed"})
