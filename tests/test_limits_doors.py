"""Per-peer and per-clerk limits at the two doors of real nodes: the caller over its limit is
refused with a reason, everyone else is served. Buckets run on the FakeClock (only moved by
the test); the slow-client test waits for the node's own deadline, whatever the machine's speed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from yrd.counter.v1 import counter_pb2, counter_pb2_grpc
from yrd.envelope.v1.envelope_pb2 import Envelope
from yrd.peer.v1 import peer_pb2, peer_pb2_grpc

from core.clock import FakeClock
from core.errors import RateLimited
from core.keys import NodeKey
from node.app import Node, build_node
from node.delivery.peer_limits import UNAUTHENTICATED, PeerLimits
from node.delivery.relaying import DELIVER
from node.grpc_errors import REASON_KEY
from node.trust.envelope import seal_envelope
from simulations.local_federation import PROVINCES
from tests.support.federation import Federation, allow_all_specs, bearer, grpc_reason, node_channel

LIMITS = {"peer_burst": 3, "peer_calls_per_s": 1, "clerk_burst": 3, "clerk_requests_per_s": 1}


class LimitedFederation(Federation):
    """Real nodes on the real clock, their rate limiters on a FakeClock the test moves."""

    bucket_clock = FakeClock()

    async def start_node(self, node_id: str) -> Node:
        node = build_node(self.configs[node_id], self.clock, limits_clock=self.bucket_clock)
        await node.start()
        self.nodes[node_id] = node
        return node


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[LimitedFederation]:
    specs = allow_all_specs(tmp_path, [p for p in PROVINCES if p.node_id != "shanghai"])
    f = LimitedFederation(tmp_path, specs, extra={"limits": LIMITS})
    f.bucket_clock = FakeClock()
    await f.start()
    try:
        yield f
    finally:
        await f.close()


def sealed(node: Node, destination: str, key: NodeKey | None = None) -> Envelope:
    """An empty DeliverItem from ``node``: answered with a signed receipt, never acted on."""
    return seal_envelope(
        key or node.trust.key,
        sender=node.trust.node_id,
        destination=destination,
        method=DELIVER,
        body=peer_pb2.DeliverItem().SerializeToString(),
        now_ms=node.clock.now_ms(),
    )


async def deliver(to: Node, env: Envelope) -> tuple[grpc.StatusCode, str]:
    async with node_channel(to) as ch:
        try:
            await peer_pb2_grpc.PeerServiceStub(ch).Deliver(peer_pb2.DeliverRequest(envelopes=[env]))
        except grpc.aio.AioRpcError as e:
            trailers = dict(e.trailing_metadata() or ())
            return e.code(), str(trailers.get(REASON_KEY, ""))
    return grpc.StatusCode.OK, ""


async def test_a_peer_past_its_rate_is_refused_while_another_peer_is_served(fed: LimitedFederation) -> None:
    jiangsu, zhejiang, anhui = fed.nodes["jiangsu"], fed.nodes["zhejiang"], fed.nodes["anhui"]
    for _ in range(LIMITS["peer_burst"]):
        assert await deliver(zhejiang, sealed(jiangsu, "zhejiang")) == (grpc.StatusCode.OK, "")
    refused = await deliver(zhejiang, sealed(jiangsu, "zhejiang"))
    assert refused == (grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited")
    assert await deliver(zhejiang, sealed(anhui, "zhejiang")) == (grpc.StatusCode.OK, "")
    # A stranger claiming to be Jiangsu (wrong key) spends nothing of Anhui's or Jiangsu's.
    forged = sealed(jiangsu, "zhejiang", key=NodeKey.generate())
    assert (await deliver(zhejiang, forged))[0] == grpc.StatusCode.UNAUTHENTICATED
    fed.bucket_clock.advance(1.0)  # one token back for Jiangsu
    assert await deliver(zhejiang, sealed(jiangsu, "zhejiang")) == (grpc.StatusCode.OK, "")


async def test_a_clerk_past_the_limit_gets_429_while_another_is_served(
    fed: LimitedFederation,
) -> None:
    for _ in range(LIMITS["clerk_burst"]):
        status, _ = await fed.call("jiangsu", "GET", "/api/v1/services")
        assert status == 200
    status, problem = await fed.call("jiangsu", "GET", "/api/v1/services")
    assert (status, problem["code"]) == (429, "rate_limited")
    assert problem["retry_after_s"] == 1
    status, _ = await fed.call("jiangsu", "GET", "/api/v1/services", user="supervisor")
    assert status == 200
    assert fed.http is not None
    url = fed.url("jiangsu", "/api/v1/services")
    async with fed.http.get(url, headers={"Authorization": f"Bearer {fed.tokens['jiangsu']}"}) as r:
        assert r.status == 429 and r.headers["Retry-After"] == "1"
    fed.bucket_clock.advance(1.0)
    status, _ = await fed.call("jiangsu", "GET", "/api/v1/services")
    assert status == 200


async def test_a_clerk_has_one_budget_at_both_doors(fed: LimitedFederation) -> None:
    """The gRPC counter spends the same per-account tokens as HTTP: a clerk past the limit at
    one door is refused at the other too (RESOURCE_EXHAUSTED rate_limited), others are not."""
    for _ in range(LIMITS["clerk_burst"] - 1):
        status, _ = await fed.call("jiangsu", "GET", "/api/v1/services")
        assert status == 200
    async with node_channel(fed.nodes["jiangsu"]) as ch:
        stub = counter_pb2_grpc.CounterServiceStub(ch)
        clerk = bearer(fed.tokens["jiangsu"])
        await stub.ListServices(counter_pb2.ListServicesRequest(), metadata=clerk)  # the last token
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListServices(counter_pb2.ListServicesRequest(), metadata=clerk)
        assert (err.value.code(), grpc_reason(err.value)) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "rate_limited",
        )
        supervisor = bearer(await fed.login("jiangsu", "supervisor"))
        await stub.ListServices(counter_pb2.ListServicesRequest(), metadata=supervisor)
    status, problem = await fed.call("jiangsu", "GET", "/api/v1/services")
    assert (status, problem["code"]) == (429, "rate_limited")


class FakeContext:
    """What PeerLimits reads of a call: no client certificate (TLS without mutual auth)."""

    def auth_context(self) -> dict[str, Any]:
        return {}


async def test_calls_in_flight_are_capped_per_authenticated_peer(fed: LimitedFederation) -> None:
    jiangsu, anhui, zhejiang = fed.nodes["jiangsu"], fed.nodes["anhui"], fed.nodes["zhejiang"]
    limits = PeerLimits(zhejiang.trust, FakeClock(), rate=1000, burst=1000, max_concurrent=2)
    ctx: Any = FakeContext()
    with limits.admit(ctx, [sealed(jiangsu, "zhejiang")]), limits.admit(ctx, [sealed(jiangsu, "zhejiang")]):
        with pytest.raises(RateLimited) as err, limits.admit(ctx, [sealed(jiangsu, "zhejiang")]):
            pass
        assert err.value.code == "too_many_calls"
        with limits.admit(ctx, [sealed(anhui, "zhejiang")]):  # another peer is not held up
            pass
    with limits.admit(ctx, [sealed(jiangsu, "zhejiang")]):  # released when the calls ended
        pass
    forged = sealed(jiangsu, "zhejiang", key=NodeKey.generate())
    assert limits.caller(ctx, [forged]) == UNAUTHENTICATED
    assert limits.caller(ctx, []) == UNAUTHENTICATED


async def test_clients_trickling_headers_or_body_are_cut_off_and_others_are_served(tmp_path: Path) -> None:
    specs = allow_all_specs(tmp_path, [p for p in PROVINCES if p.node_id == "jiangsu"])
    deadlines = {"http_body_timeout_s": 0.2, "http_header_timeout_s": 0.2}
    fed = await Federation(tmp_path, specs, extra={"limits": deadlines}).start()
    try:
        host, port = fed.configs["jiangsu"].http_listen.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /api/v1/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"username": '
        )
        await writer.drain()  # and never the rest: the node must answer without it
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=60)
        writer.close()
        assert head.startswith(b"HTTP/1.1 408"), head
        # Headers that never end: the connection is closed without an answer.
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /api/v1/services HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), timeout=60) == b""  # closed by the node
        writer.close()
        status, _ = await fed.call("jiangsu", "GET", "/api/v1/services")
        assert status == 200
    finally:
        await fed.close()


class CertContext(FakeContext):
    def __init__(self, pem: bytes) -> None:
        self.pem = pem

    def auth_context(self) -> dict[str, Any]:
        return {"x509_pem_cert": [self.pem]}


async def test_under_mutual_tls_the_client_certificate_names_the_caller(fed: LimitedFederation) -> None:
    jiangsu, zhejiang = fed.nodes["jiangsu"], fed.nodes["zhejiang"]
    limits = PeerLimits(zhejiang.trust, FakeClock(), rate=1000, burst=1000, max_concurrent=1)
    jiangsu_cert: Any = CertContext(jiangsu.config.transport.tls_cert.read_bytes())
    # The handshake proved the certificate, so it names the caller whatever the envelope claims.
    assert limits.caller(jiangsu_cert, [sealed(fed.nodes["anhui"], "zhejiang")]) == "jiangsu"
    assert limits.caller(jiangsu_cert, []) == "jiangsu"
    unknown: Any = CertContext(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    assert limits.caller(unknown, []) == UNAUTHENTICATED
