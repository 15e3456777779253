"""One gRPC channel per peer, from the endpoint the manifest lists for it.

A channel is rebuilt when the manifest moves a peer to a new endpoint or pins new TLS
certificates for it; grpc.aio channels reconnect by themselves otherwise. With a TLS
identity (the default; plaintext only when node.toml says so) a channel trusts exactly the
peer's pinned certificates and checks that they name the peer (node/trust/tls.py).
"""

from __future__ import annotations

import grpc
from yrd.peer.v1 import peer_pb2, peer_pb2_grpc

from node.trust.keyring import Trust
from node.trust.tls import TlsIdentity, channel_credentials

# What decides a channel: the endpoint and the certificates pinned for it.
_Target = tuple[str, tuple[bytes, ...]]


class Channels:
    def __init__(self, trust: Trust, max_message_bytes: int, tls: TlsIdentity | None = None) -> None:
        self.trust = trust
        self.tls = tls
        self.options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 5_000),
        ]
        self._open: dict[str, tuple[_Target, grpc.aio.Channel, peer_pb2_grpc.PeerServiceAsyncStub]] = {}
        self._stale: list[grpc.aio.Channel] = []

    def peer(self, node_id: str) -> peer_pb2_grpc.PeerServiceAsyncStub:
        member = self.trust.member(node_id)
        target = (member.grpc_endpoint, tuple(member.tls_certificates))
        known = self._open.get(node_id)
        if known is not None and known[0] == target:
            return known[2]
        if known is not None:
            self._stale.append(known[1])
        if self.tls is None:
            channel = grpc.aio.insecure_channel(member.grpc_endpoint, options=self.options)
        else:
            # The certificates name the node id, not the host, so the check is by node id.
            options = [*self.options, ("grpc.ssl_target_name_override", node_id)]
            credentials = channel_credentials(member, self.tls)
            channel = grpc.aio.secure_channel(member.grpc_endpoint, credentials, options=options)
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        self._open[node_id] = (target, channel, stub)
        return stub

    async def relay_query(
        self, destination: str, request: peer_pb2.QueryDataRequest, within_s: float
    ) -> peer_pb2.QueryDataResponse:
        """A data query passed on, unchanged, to a member this node relays for (docs/protocol.md
        14.1)."""
        response: peer_pb2.QueryDataResponse = await self.peer(destination).QueryData(
            request, timeout=within_s
        )
        return response

    async def close(self) -> None:
        for channel in [c for _, c, _ in self._open.values()] + self._stale:
            await channel.close()
        self._open.clear()
        self._stale.clear()
