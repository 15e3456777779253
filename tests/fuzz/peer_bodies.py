"""The bodies peers send inside verified envelopes: any bytes parse into the message or give
InvalidInput ``malformed_body`` (a Deliver/NotifyStatus item: None, answered by a rejecting
receipt), never another exception.

Run long: ``python -m tests.fuzz.peer_bodies -atheris_runs=100000``.
"""

from __future__ import annotations

from google.protobuf.message import Message
from yrd.catalogue.v1 import catalogue_pb2
from yrd.peer.v1 import peer_pb2

from core.errors import InvalidInput
from node.delivery.peer_client import parse_body
from node.delivery.peer_server import _parse_item
from node.delivery.relaying import DELIVER, NOTIFY_STATUS
from tests.fuzz import MODES, mutate, run

# Every message a node parses out of a peer's envelope body (peer_server, sender,
# catalogue_sync, gossip), with a filled-in seed so mutations start from something real.
BODIES: list[tuple[type[Message], Message]] = [
    (peer_pb2.CatalogueQuery, peer_pb2.CatalogueQuery(known_digest=b"\x01" * 32)),
    (peer_pb2.ManifestQuery, peer_pb2.ManifestQuery(known_version=7)),
    (peer_pb2.CatalogueAnswer, peer_pb2.CatalogueAnswer(digest=b"\x02" * 32, catalogue=b"\x0a\x01x")),
    (peer_pb2.ManifestAnswer, peer_pb2.ManifestAnswer()),
    (peer_pb2.Receipt, peer_pb2.Receipt(item_id="app-1", reason_code="accepted", received_at_ms=5)),
    (catalogue_pb2.Catalogue, catalogue_pb2.Catalogue(node_id="shanghai")),
    # Data sharing (node/sharing/): the query a holder opens, its sealed subject, the answer and
    # the sealed record an asker opens.
    (peer_pb2.DataQuery, peer_pb2.DataQuery(query_id="q-1", asks=[peer_pb2.DataAsk(resource_id="a.b")])),
    (peer_pb2.DataSubject, peer_pb2.DataSubject(subject_id="x", consent=peer_pb2.DataConsent(purpose="p"))),
    (peer_pb2.DataAnswer, peer_pb2.DataAnswer(items=[peer_pb2.DataItem(resource_id="a.b", fields=["f"])])),
    (peer_pb2.DataRecord, peer_pb2.DataRecord(fields_json=b"{}", updated_at_ms=1)),
]
ITEMS = [DELIVER, NOTIFY_STATUS]


def check_body(message_type: type[Message], data: bytes) -> None:
    try:
        parse_body(message_type, data)
    except InvalidInput as e:
        assert e.code == "malformed_body", e


def check_item(method: str, data: bytes) -> None:
    item = _parse_item(method, data)
    assert item is None or isinstance(item, (peer_pb2.DeliverItem, peer_pb2.StatusItem))


def fuzz_one(data: bytes) -> None:
    if not data:
        return
    mode, which = data[0] % MODES, (data[0] // MODES) % (len(BODIES) + len(ITEMS))
    if which < len(BODIES):
        message_type, seed = BODIES[which]
        check_body(message_type, mutate(seed.SerializeToString(), mode, data[1:]))
    else:
        check_item(ITEMS[which - len(BODIES)], mutate(b"\x0a\x00", mode, data[1:]))


if __name__ == "__main__":
    run(fuzz_one)
