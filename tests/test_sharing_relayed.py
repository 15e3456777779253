"""A data holder behind a relay (docs/protocol.md 14.1): the asker's signed query goes to the
relay unchanged, the relay checks it as a forwarded envelope and passes it on, and the holder's
signed answer comes back unchanged. Here Zhejiang is reached only through Jiangsu."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from sqlmodel import col, select
from yrd.envelope.v1.envelope_pb2 import Envelope
from yrd.peer.v1 import peer_pb2, peer_pb2_grpc

from core.keys import NodeKey
from node.app import Node
from node.delivery.channels import Channels
from node.models import AuditRecord, DataDisclosure
from node.trust.envelope import seal_envelope
from simulations.local_federation import PROVINCES
from tests.support.federation import Federation, grpc_reason, node_channel
from tests.test_sharing_federation import HEALTH_SCREEN, ask, consent, query

QUERY_DATA = "/yrd.peer.v1.PeerService/QueryData"


def relayed_federation(root: Path) -> Federation:
    specs = [dataclasses.replace(s, relay="jiangsu") if s.node_id == "zhejiang" else s for s in PROVINCES]
    return Federation(root, specs)


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    f = await relayed_federation(tmp_path).start()
    try:
        yield f
    finally:
        await f.close()


async def relay_records(node: Node) -> list[tuple[str, str, str]]:
    stmt = (
        select(AuditRecord)
        .where(AuditRecord.method == QUERY_DATA, col(AuditRecord.detail).startswith("relayed"))
        .order_by(col(AuditRecord.seq))
    )
    return await node.db.run(lambda s: [(r.direction, r.peer, r.detail) for r in s.exec(stmt).all()])


def query_envelope(
    fed: Federation, destination: str, *, key: NodeKey | None = None, now_ms: int | None = None
) -> Envelope:
    """Shanghai's signed query for ``destination`` (an empty DataQuery: the holder refuses it)."""
    shanghai = fed.nodes["shanghai"]
    return seal_envelope(
        key or shanghai.trust.key,
        sender="shanghai",
        destination=destination,
        method=QUERY_DATA,
        body=peer_pb2.DataQuery().SerializeToString(),
        now_ms=shanghai.clock.now_ms() if now_ms is None else now_ms,
    )


async def relay_call(fed: Federation, env: Envelope) -> grpc.aio.AioRpcError:
    async with node_channel(fed.nodes["jiangsu"]) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await peer_pb2_grpc.PeerServiceStub(ch).QueryData(peer_pb2.QueryDataRequest(envelope=env))
    return err.value


async def test_a_holder_behind_a_relay_answers_through_it(fed: Federation) -> None:
    assert fed.nodes["shanghai"].trust.next_hop("zhejiang") == "jiangsu"
    items = await ask(fed, query(HEALTH_SCREEN, consent=consent(HEALTH_SCREEN)))
    assert all(i["outcome"] == "answered" for i in items.values()), items
    assert items["zj.vaccination"]["holder_node"] == "zhejiang"
    assert items["zj.vaccination"]["fields"]["doses"] == 3
    # The holder saw the asker, not the relay: its disclosure log names Shanghai.
    zj = fed.nodes["zhejiang"]
    stmt = select(DataDisclosure).where(DataDisclosure.side == "holder")
    held = await zj.db.run(lambda s: [(d.asker_node, d.resource_id, d.outcome) for d in s.exec(stmt).all()])
    assert held == [("shanghai", "zj.vaccination", "answered")]
    # The relay kept a record of what it passed on, and of nothing it answered itself.
    assert await relay_records(fed.nodes["jiangsu"]) == [
        ("in", "shanghai", "relayed to zhejiang"),
        ("out", "zhejiang", "relayed from shanghai: OK"),
    ]

    # Without consent the holder refuses for itself, through the relay as directly.
    refused = await ask(fed, query(HEALTH_SCREEN))
    assert refused["zj.vaccination"]["reason_code"] == "consent_missing"


async def test_calls_to_holders_behind_one_relay_share_the_slots_of_that_relay(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jiangsu's resource and Zhejiang's (behind Jiangsu) are both asked of Jiangsu: the asker's
    slots for it bound them together, as Jiangsu's per-peer cap counts them together."""
    asker = fed.nodes["shanghai"].backend.data_asker
    asker.calls_per_holder = 1
    in_flight: dict[str, int] = {}
    most: dict[str, int] = {}

    async def slow_call(holder: str, *_args: object) -> None:
        hop = fed.nodes["shanghai"].trust.next_hop(holder)
        in_flight[hop] = in_flight.get(hop, 0) + 1
        most[hop] = max(most.get(hop, 0), in_flight[hop])
        await asyncio.sleep(0.05)
        in_flight[hop] -= 1
        raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())

    monkeypatch.setattr(asker, "_call", slow_call)
    both = ["js.nucleic-acid", "zj.vaccination"]
    items = await ask(fed, query(both, consent=consent(both), deadline_ms=3000))
    assert {i["outcome"] for i in items.values()} == {"missing"}
    assert most == {"jiangsu": 1}


async def test_a_stuck_holder_behind_a_relay_leaves_the_others_behind_it_half_the_slots(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Zhejiang (behind Jiangsu) hangs: the screens asking it hold at most half of the asker's
    slots for Jiangsu, so a screen asking Jiangsu's own resource is still called, not left
    waiting for Zhejiang's calls to time out."""
    asker = fed.nodes["shanghai"].backend.data_asker
    asker.calls_per_holder = 2
    entered, release = asyncio.Event(), asyncio.Event()
    in_flight, most, called = [0], [0], []

    async def call(holder: str, *_args: object) -> None:
        called.append(holder)
        if holder == "zhejiang":
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
            entered.set()
            await release.wait()
            in_flight[0] -= 1
        raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())

    monkeypatch.setattr(asker, "_call", call)
    zj = ["zj.vaccination"]
    stuck = [
        asyncio.create_task(ask(fed, query(zj, consent=consent(zj), deadline_ms=20_000))) for _ in range(3)
    ]
    await entered.wait()
    js = ["js.nucleic-acid"]
    items = await ask(fed, query(js, consent=consent(js), deadline_ms=3000))
    release.set()
    await asyncio.gather(*stuck)
    assert "jiangsu" in called  # called while Zhejiang's calls hung, not skipped at its deadline
    assert items["js.nucleic-acid"]["reason_code"] == "unreachable"
    assert most == [1]


async def test_a_relayed_holder_that_is_down_is_missing(fed: Federation) -> None:
    await fed.stop_node("zhejiang")
    items = await ask(fed, query(HEALTH_SCREEN, consent=consent(HEALTH_SCREEN), deadline_ms=2000))
    assert items["zj.vaccination"]["outcome"] == "missing"
    assert items["js.nucleic-acid"]["outcome"] == "answered"


async def test_the_relay_passes_on_only_signed_queries_for_members_it_relays_for(fed: Federation) -> None:
    # Anhui is not behind Jiangsu: Jiangsu is neither its addressee nor its relay.
    err = await relay_call(fed, query_envelope(fed, "anhui"))
    assert (err.code(), grpc_reason(err)) == (grpc.StatusCode.UNAUTHENTICATED, "wrong_destination")
    # A query not signed by the member it names goes no further than the relay.
    forged = query_envelope(fed, "zhejiang", key=NodeKey.generate())
    err = await relay_call(fed, forged)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert grpc_reason(err) in {"unknown_key", "bad_signature"}
    assert await relay_records(fed.nodes["jiangsu"]) == []


async def test_the_holders_own_refusal_comes_back_through_the_relay(fed: Federation) -> None:
    """The relay checks no time window (the holder does): a query signed an hour ago reaches
    Zhejiang, whose refusal, status and reason alike, is what the asker gets."""
    stale = query_envelope(fed, "zhejiang", now_ms=fed.nodes["shanghai"].clock.now_ms() - 3_600_000)
    err = await relay_call(fed, stale)
    assert (err.code(), grpc_reason(err)) == (grpc.StatusCode.UNAUTHENTICATED, "clock_skew")
    # The relay's record says it passed the query on, and what came back.
    assert await relay_records(fed.nodes["jiangsu"]) == [
        ("in", "shanghai", "relayed to zhejiang"),
        ("out", "zhejiang", "relayed from shanghai: UNAUTHENTICATED"),
    ]


async def test_a_relay_passes_on_at_most_half_a_members_call_cap_so_its_deliveries_keep_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Zhejiang counts every query Jiangsu relays to it as Jiangsu's call, from whichever asker:
    a stuck holder must not fill Jiangsu's whole budget there and starve its deliveries. Past
    half the cap (8 // 2) the relay refuses at once, too_many_calls, passing nothing on."""
    held, release = [0, 0], asyncio.Event()  # in flight now, most at once

    async def stuck(self: Channels, destination: str, request: object, within_s: float) -> object:
        held[0] += 1
        held[1] = max(held)
        try:
            await release.wait()
        finally:
            held[0] -= 1
        raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())

    monkeypatch.setattr(Channels, "relay_query", stuck)  # before the nodes bind it
    fed = await relayed_federation(tmp_path).start()
    try:
        async with node_channel(fed.nodes["jiangsu"]) as ch:
            stub = peer_pb2_grpc.PeerServiceStub(ch)

            async def one() -> str:
                request = peer_pb2.QueryDataRequest(envelope=query_envelope(fed, "zhejiang"))
                try:
                    await stub.QueryData(request, timeout=10)
                except grpc.aio.AioRpcError as e:
                    return grpc_reason(e) or e.code().name
                return "answered"

            calls = [asyncio.create_task(one()) for _ in range(6)]
            # The holder stays stuck until every call has either been passed on or refused.
            for _ in range(200):
                if held[0] + sum(t.done() for t in calls) == len(calls):
                    break
                await asyncio.sleep(0.05)
            release.set()
            outcomes = [await t for t in calls]
        assert held[1] == 4
        assert sorted(outcomes) == ["UNAVAILABLE"] * 4 + ["too_many_calls"] * 2
        # Only what was passed on is on the relay's record.
        records = await relay_records(fed.nodes["jiangsu"])
        assert [r[2] for r in records if r[0] == "out"] == ["relayed from shanghai: UNAVAILABLE"] * 4
    finally:
        await fed.close()
