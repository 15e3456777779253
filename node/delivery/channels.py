"""One gRPC channel per peer, from the endpoint the manifest lists for it.

A channel is rebuilt when the manifest moves a peer to a new endpoint; grpc.aio
channels reconnect by themselves otherwise.
"""

from __future__ import annotations

import grpc
from yrd.peer.v1 import peer_pb2_grpc

from node.trust.keyring import Trust


class Channels:
    def __init__(self, trust: Trust, max_message_bytes: int) -> None:
        self.trust = trust
        self.options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 5_000),
        ]
        self._open: dict[str, tuple[str, grpc.aio.Channel, peer_pb2_grpc.PeerServiceAsyncStub]] = {}
        self._stale: list[grpc.aio.Channel] = []

    def peer(self, node_id: str) -> peer_pb2_grpc.PeerServiceAsyncStub:
        endpoint = self.trust.member(node_id).grpc_endpoint
        known = self._open.get(node_id)
        if known is not None and known[0] == endpoint:
            return known[2]
        if known is not None:
            self._stale.append(known[1])
        channel = grpc.aio.insecure_channel(endpoint, options=self.options)
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        self._open[node_id] = (endpoint, channel, stub)
        return stub

    async def close(self) -> None:
        for channel in [c for _, c, _ in self._open.values()] + self._stale:
            await channel.close()
        self._open.clear()
        self._stale.clear()
