"""Addressing an item to a member that may sit behind a relay.

The item is signed for its final destination by this node; when the manifest names a
relay for that destination, the signed envelope travels inside a ``forward`` item to
the relay, which passes it on intact (docs/protocol.md §3.3).
"""

from __future__ import annotations

from yrd.envelope.v1 import envelope_pb2
from yrd.peer.v1 import peer_pb2

from node.trust.envelope import seal_envelope
from node.trust.keyring import Trust

DELIVER = "/yrd.peer.v1.PeerService/Deliver"
NOTIFY_STATUS = "/yrd.peer.v1.PeerService/NotifyStatus"


def forward_item(method: str, inner: envelope_pb2.Envelope) -> bytes:
    """The body that carries ``inner`` on the given PeerService method."""
    item = peer_pb2.DeliverItem(forward=inner) if method == DELIVER else peer_pb2.StatusItem(forward=inner)
    return item.SerializeToString()


def address(trust: Trust, destination: str, method: str, body: bytes, now_ms: int) -> tuple[str, bytes]:
    """(next hop, outbox body) for an item bound for ``destination``."""
    hop = trust.next_hop(destination)
    if hop == destination:
        return hop, body
    inner = seal_envelope(
        trust.key, sender=trust.node_id, destination=destination, method=method, body=body, now_ms=now_ms
    )
    return hop, forward_item(method, inner)
