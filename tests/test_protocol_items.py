"""docs/protocol.md §3.3, §3.4, §8 and §10.4 against a running node: what a receipt's
item_id names, where nested_forward sits, and a request the gRPC layer cannot parse."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from yrd.envelope.v1 import envelope_pb2
from yrd.peer.v1 import peer_pb2, peer_pb2_grpc

from node.trust.envelope import request_digest, seal_envelope
from simulations.local_federation import PROVINCES
from tests.support.federation import Federation, allow_all_specs, node_channel

DELIVER = "/yrd.peer.v1.PeerService/Deliver"
Outcome = peer_pb2.ReceiptOutcome


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    specs = [s for s in allow_all_specs(tmp_path, PROVINCES) if s.node_id in ("jiangsu", "zhejiang")]
    f = await Federation(tmp_path, specs).start()
    try:
        yield f
    finally:
        await f.close()


def signed(fed: Federation, body: bytes) -> envelope_pb2.Envelope:
    js = fed.nodes["jiangsu"]
    return seal_envelope(
        js.trust.key,
        sender="jiangsu",
        destination="zhejiang",
        method=DELIVER,
        body=body,
        now_ms=js.clock.now_ms(),
    )


async def deliver(fed: Federation, *envelopes: envelope_pb2.Envelope) -> list[peer_pb2.Receipt]:
    async with node_channel(fed.nodes["zhejiang"]) as ch:
        answer = await peer_pb2_grpc.PeerServiceStub(ch).Deliver(peer_pb2.DeliverRequest(envelopes=envelopes))
    return [peer_pb2.Receipt.FromString(r.body) for r in answer.receipts]


async def test_nested_forward_is_refused_after_the_inner_envelope_verifies(fed: Federation) -> None:
    """§3.3: the destination parses I.body only once I passed every step, then refuses a forward."""
    innermost = signed(fed, peer_pb2.DeliverItem().SerializeToString())
    inner = signed(fed, peer_pb2.DeliverItem(forward=innermost).SerializeToString())
    (receipt,) = await deliver(fed, signed(fed, peer_pb2.DeliverItem(forward=inner).SerializeToString()))
    assert (receipt.outcome, receipt.reason_code) == (Outcome.RECEIPT_OUTCOME_REJECTED, "nested_forward")
    assert receipt.item_id == "fwd:" + request_digest(inner).hex()
    # A nested forward whose inner envelope fails a step gets that step's code instead.
    inner.body = inner.body + b"\x00"
    (receipt,) = await deliver(fed, signed(fed, peer_pb2.DeliverItem(forward=inner).SerializeToString()))
    assert receipt.reason_code == "bad_signature"


async def test_an_unparsable_body_is_an_item_receipt_named_by_its_envelope(fed: Federation) -> None:
    """§3.4: malformed_body refuses the item, named by its envelope's digest; other items stand."""
    bad, empty = signed(fed, b"\xff\xff\xff"), signed(fed, b"")
    first, second = await deliver(fed, bad, empty)
    assert (first.outcome, first.reason_code, first.item_id) == (
        Outcome.RECEIPT_OUTCOME_REJECTED,
        "malformed_body",
        "env:" + request_digest(bad).hex(),
    )
    assert second.reason_code == "malformed_body"  # a body with neither field of the oneof
    assert second.item_id == "env:" + request_digest(empty).hex()


async def test_invalid_utf8_in_an_envelope_refuses_the_whole_call(
    fed: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    """§8: proto3 strings are UTF-8, so the request does not deserialise; no envelope is read.
    The caller's bad bytes are its fault: INVALID_ARGUMENT, no traceback in our log."""
    good = signed(fed, b"").SerializeToString()
    broken = b"\x0a\x02\xff\xfe" + good[good.index(b"\x12") :]  # sender = 0xff 0xfe
    size = len(broken)
    assert 128 <= size < 16384
    raw = b"\x0a" + bytes([size & 0x7F | 0x80, size >> 7]) + broken  # DeliverRequest.envelopes[0]
    async with node_channel(fed.nodes["zhejiang"]) as ch:
        call = ch.unary_unary(DELIVER, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(raw)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(err.value.trailing_metadata() or ())["yrd-reason"] == "malformed_request"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
