"""``yrd bench pipeline``: the CPU one routed application costs the node code, without the network.

Two nodes built in this process (simulations/bench/inproc.py) pass applications through the
real code on both sides: the origin's ``submit``, its sender's claim, signed batch and settle,
the owner's peer service taking the batch in (nonces, inbound policy, storage, automatic
decision, audit, signed receipts) and the origin's settle taking in the status run that rides
on each receipt (docs/protocol.md 10.6; the owner's sender still drains whatever it queued
for the origin by NotifyStatus). Only the transport differs: a batch goes from one
node's ``Delivery`` to the other's ``PeerServicer`` as a direct call instead of over gRPC,
and no HTTP is involved.

What it reports is CPU time (the process's user + system, every thread) per application, for
a fixed amount of work done in fixed rounds: unlike ``bench route`` the work does not depend
on the rate the neighbours leave the nodes, so two versions of the code can be compared by it
on a busy machine. Each repetition is reported; the lowest is the least disturbed.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import func
from sqlmodel import Session, select
from yrd.envelope.v1 import envelope_pb2
from yrd.peer.v1 import peer_pb2

from core.errors import Unavailable
from node.app import Node
from node.cases.requests import Principal
from node.counter.contract import CounterLimits, parse_submit, request_digest
from node.delivery.peer_server import PeerServicer
from node.delivery.relaying import DELIVER, NOTIFY_STATUS
from node.models import Application
from simulations.bench.inproc import ORIGIN, OWNER, origin_and_owner
from simulations.sample_applications import application_body

ROUND = 16  # applications submitted together, then carried through before the next round


@dataclass
class PipelineResult:
    applications: int
    round: int
    cpu_ms_per_app: list[float] = field(default_factory=list)
    wall_ms_per_app: list[float] = field(default_factory=list)
    best_cpu_ms_per_app: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class _Direct:
    """What ``Delivery`` calls for a peer's stub: the peer's servicer, in this process."""

    def __init__(self, servicer: PeerServicer) -> None:
        self.servicer = servicer

    async def Deliver(self, request: peer_pb2.DeliverRequest, **_call: object) -> peer_pb2.DeliverResponse:
        return peer_pb2.DeliverResponse(receipts=await self._batch(request.envelopes, DELIVER))

    async def NotifyStatus(
        self, request: peer_pb2.NotifyStatusRequest, **_call: object
    ) -> peer_pb2.NotifyStatusResponse:
        return peer_pb2.NotifyStatusResponse(receipts=await self._batch(request.envelopes, NOTIFY_STATUS))

    async def _batch(self, envelopes: object, method: str) -> list[envelope_pb2.Envelope]:
        # Through the wire format both ways, as gRPC would carry them.
        copies = [envelope_pb2.Envelope.FromString(e.SerializeToString()) for e in envelopes]  # type: ignore[attr-defined]
        replies = await self.servicer._batch(copies, method)
        return [envelope_pb2.Envelope.FromString(r.SerializeToString()) for r in replies]


class _Channels:
    def __init__(self, stub: _Direct) -> None:
        self.stub = stub

    def peer(self, _hop: str) -> _Direct:
        return self.stub

    async def close(self) -> None:
        return None


def _servicer(node: Node) -> PeerServicer:
    """The node's peer service as build_node wires it, without limits and without waking senders."""
    return PeerServicer(
        db=node.db,
        trust=node.trust,
        verifier=node.delivery.verifier,
        accept=node.bundles.accept,
        apply_status=node.bundles.apply_status,
        catalogue=node.sync.served,
        clock=node.clock,
        wake=lambda _hop: None,
        peer_seen=lambda _node: None,
        max_batch=node.config.limits.max_batch,
    )


async def _drain(node: Node, hop: str) -> int:
    sent = 0
    while n := await node.delivery._drain_once(hop):
        sent += n
    return sent


async def run(count: int = 400, repeats: int = 3, work_dir: Path | None = None) -> PipelineResult:
    result = PipelineResult(applications=count, round=ROUND)
    with tempfile.TemporaryDirectory(prefix="yrd-bench-pipeline-", dir=work_dir) as tmp:
        async with origin_and_owner(Path(tmp)) as (origin, owner):
            origin_channels, owner_channels = origin.delivery.channels, owner.delivery.channels
            origin.delivery.channels = _Channels(_Direct(_servicer(owner)))  # type: ignore[assignment]
            owner.delivery.channels = _Channels(_Direct(_servicer(origin)))  # type: ignore[assignment]
            try:
                rng = random.Random(5)
                services = [
                    d for d in origin.index.all() if d.handler == "auto" and d.service_id.startswith("js.")
                ]
                limits = CounterLimits()
                clerk = Principal("clerk", "clerk")
                submit = origin.backend.origin.submit
                keys = iter(range(10**9))
                for repeat in range(repeats + 1):  # the first is a warm-up
                    bodies = [application_body(rng.choice(services), rng) for _ in range(count)]
                    requests = [parse_submit(b, limits, request_digest(b)) for b in bodies]
                    cpu, wall = time.process_time(), time.perf_counter()
                    for i in range(0, count, ROUND):
                        await asyncio.gather(
                            *(submit(clerk, f"p{next(keys)}", r) for r in requests[i : i + ROUND])
                        )
                        await _drain(origin, OWNER)
                        await _drain(owner, ORIGIN)
                    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                    if repeat:
                        result.cpu_ms_per_app.append(round(cpu * 1000 / count, 3))
                        result.wall_ms_per_app.append(round(wall * 1000 / count, 3))
                    await _check_completed(origin, count * (repeat + 1))
            finally:
                origin.delivery.channels, owner.delivery.channels = origin_channels, owner_channels
    result.best_cpu_ms_per_app = min(result.cpu_ms_per_app)
    return result


async def _check_completed(origin: Node, expected: int) -> None:
    """Every application reached ``completed`` at the origin: the work measured was all done."""

    def count(s: Session) -> int:
        return int(s.exec(select(func.count()).where(Application.status == "completed")).one())

    done = await origin.db.run(count)
    if done != expected:
        raise Unavailable(f"{done} of {expected} applications completed", code="bench_incomplete")
