"""A peer's sender between two nodes built in this process (simulations/bench/inproc.py), its
batches handed to the other node's peer service directly: what it does while a batch is in
flight."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlmodel import Session, select
from yrd.envelope.v1 import envelope_pb2
from yrd.peer.v1 import peer_pb2

from node.app import Node
from node.cases.requests import Principal
from node.counter.contract import CounterLimits, parse_submit, request_digest
from node.delivery.outbox import Leased, enqueue
from node.delivery.peer_server import PeerServicer
from node.delivery.relaying import DELIVER
from node.models import OutboxEntry
from simulations.bench.inproc import origin_and_owner
from simulations.sample_applications import application_body


class _OwnerOnTheLine:
    """The owner's peer service as the origin's stub; ``during_call`` runs while a call is in
    flight, before the owner answers it."""

    def __init__(self, owner: Node, during_call: Callable[[int], Awaitable[None]], trace: list[str]):
        self.servicer = PeerServicer(
            db=owner.db,
            trust=owner.trust,
            verifier=owner.delivery.verifier,
            accept=owner.bundles.accept,
            apply_status=owner.bundles.apply_status,
            catalogue=owner.sync.served,
            clock=owner.clock,
            wake=lambda _hop: None,
            peer_seen=lambda _node: None,
            max_batch=owner.config.limits.max_batch,
        )
        self.during_call, self.trace, self.calls = during_call, trace, 0
        self.delivered: list[str] = []
        self.both_delivered, self.sent = asyncio.Event(), asyncio.Event()

    def peer(self, _hop: str) -> _OwnerOnTheLine:
        return self

    async def close(self) -> None:
        return None

    async def Deliver(self, request: peer_pb2.DeliverRequest, **_call: Any) -> peer_pb2.DeliverResponse:
        self.calls += 1
        self.trace.append("send")
        await self.during_call(self.calls)
        envelopes = [envelope_pb2.Envelope.FromString(e.SerializeToString()) for e in request.envelopes]
        replies = await self.servicer._batch(envelopes, DELIVER)
        self.delivered += [peer_pb2.Receipt.FromString(r.body).item_id for r in replies]
        self.sent.set()
        if len(self.delivered) == 2:
            self.both_delivered.set()
        return peer_pb2.DeliverResponse(receipts=replies)


async def test_work_queued_during_a_call_goes_next_with_no_claim_of_its_own_and_no_poll(
    tmp_path: Path,
) -> None:
    async with origin_and_owner(tmp_path) as (origin, owner):
        service = next(
            d for d in origin.index.all() if d.handler == "auto" and d.service_id.startswith("js.")
        )
        trace: list[str] = []
        ids: list[str] = []

        async def submit(n: int) -> None:
            body = application_body(service, random.Random(n))
            request = parse_submit(body, CounterLimits(), request_digest(body))
            ids.append(
                (await origin.backend.origin.submit(Principal("clerk", "clerk"), f"k{n}", request))["id"]
            )

        async def during_call(call: int) -> None:
            if call == 1:  # the second application is committed and its wake sent mid-call
                await submit(2)
                trace.append("queued")

        line = _OwnerOnTheLine(owner, during_call, trace)
        delivery = origin.delivery
        delivery.channels = line  # type: ignore[assignment]
        # A lost wake would leave the second application to the idle poll: an hour here.
        delivery.poll_interval_s = 3600
        origin.backend.origin.wake = delivery.wake
        run = delivery.db.run

        async def traced_run(fn: Callable[[Any], Any]) -> Any:
            trace.append("db")
            return await run(fn)

        delivery.db.run = traced_run  # type: ignore[method-assign]
        try:
            await submit(1)
            async with asyncio.timeout(30):  # a guard against hanging, not a measure of speed
                await line.both_delivered.wait()
        finally:
            await delivery.stop()
        assert line.delivered == ids
        # Between the second application's commit and its send, one trip to the database
        # thread: the first call's settle, which also claimed it.
        queued, second = trace.index("queued"), len(trace) - 1 - trace[::-1].index("send")
        assert trace[queued + 1 : second] == ["db"]


async def test_a_new_entry_is_handed_to_the_sender_and_goes_out_with_no_claim(tmp_path: Path) -> None:
    async with origin_and_owner(tmp_path) as (origin, owner):
        service = next(
            d for d in origin.index.all() if d.handler == "auto" and d.service_id.startswith("js.")
        )

        async def during_call(_call: int) -> None:
            return None

        line = _OwnerOnTheLine(owner, during_call, [])
        delivery = origin.delivery
        delivery.channels = line  # type: ignore[assignment]
        delivery.poll_interval_s = 3600  # nothing found by a poll or the scanner in time
        origin.backend.origin.wake = delivery.wake
        claims: list[str] = []
        claimed, loop = asyncio.Event(), asyncio.get_running_loop()
        claim = delivery._claim

        def counted_claim(s: Session, hop: str) -> Any:
            claims.append(hop)
            loop.call_soon_threadsafe(claimed.set)  # asked on the database thread
            return claim(s, hop)

        delivery._claim = counted_claim  # type: ignore[method-assign]
        await delivery.start()
        try:
            body = application_body(service, random.Random(1))
            request = parse_submit(body, CounterLimits(), request_digest(body))
            created = await origin.backend.origin.submit(Principal("clerk", "clerk"), "k1", request)
            async with asyncio.timeout(30):  # a guard against hanging, not a measure of speed
                await line.sent.wait()
                await claimed.wait()  # the settle's claim of the next batch
        finally:
            await delivery.stop()
        assert line.delivered == [created["id"]]
        # Leased in the submit's own transaction and handed over after its commit: the one
        # claim was the settle's, which found nothing more to send.
        assert claims == ["jiangsu"]
        entry = await origin.db.run(lambda s: s.exec(select(OutboxEntry)).one())
        assert (entry.state, entry.attempts, entry.claimed_until_ms) == ("done", 1, 0)


async def test_what_was_handed_over_and_not_sent_is_given_back_when_the_node_stops(tmp_path: Path) -> None:
    async with origin_and_owner(tmp_path) as (origin, _owner):
        delivery = origin.delivery
        await delivery.start()
        now = delivery.clock.now_ms()
        delivery._backoff_until["jiangsu"] = now + 3_600_000  # the link is down: nothing is sent

        def put(s: Session) -> None:
            enqueue(
                s,
                next_hop="jiangsu",
                destination="jiangsu",
                method=DELIVER,
                item_id="a",
                body=b"x",
                now_ms=now,
            )

        await origin.db.run(put)
        leased = await origin.db.run(lambda s: s.exec(select(OutboxEntry)).one())
        assert leased.claimed_until_ms > 0 and leased.attempts == 1  # the sender's first claim
        stale = Leased(99, "jiangsu", DELIVER, "b", b"x", attempts=1, claimed_until_ms=1)
        delivery._handed["jiangsu"].append(stale)
        # An entry whose lease lapsed (a long backoff) is left to a claim, which may take it again.
        assert [e.item_id for e in delivery._take_handed("jiangsu")] == ["a"]
        delivery._handed["jiangsu"] = [
            Leased(leased.id or 0, "jiangsu", DELIVER, "a", b"x", leased.attempts, leased.claimed_until_ms)
        ]
        await delivery.stop()
        given_back = await origin.db.run(lambda s: s.exec(select(OutboxEntry)).one())
        assert (given_back.state, given_back.claimed_until_ms) == ("pending", 0)
