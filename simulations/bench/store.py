"""``yrd bench store``: the origin's submit transaction and the owner's accept transaction.

Both run the real case code against a temp SQLite database in this process: the origin's
``submit`` (form checks, outbound policy, sealing, application + status event + outbox
row in one transaction) and the owner's ``accept`` (inbound policy, unseal, storage,
automatic decision and its status updates), once per transaction as a lone delivery
and then a batch of items per transaction as the peer service does for a full batch.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlmodel import Session, select
from yrd.peer.v1 import peer_pb2

from node.cases.requests import Principal
from node.counter.contract import CounterLimits, parse_submit, request_digest
from node.models import OutboxEntry
from simulations.bench.inproc import ORIGIN, OWNER, origin_and_owner
from simulations.sample_applications import application_body

BATCH = 32


@dataclass(frozen=True)
class StoreResult:
    submits: int
    origin_submit_per_s: float
    owner_accept_per_s: float
    owner_accept_batched_per_s: float
    batch: int
    concurrency: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


async def run(count: int = 1000, concurrency: int = 16, work_dir: Path | None = None) -> StoreResult:
    with tempfile.TemporaryDirectory(prefix="yrd-bench-store-", dir=work_dir) as tmp:
        async with origin_and_owner(Path(tmp)) as (origin, owner):
            rng = random.Random(3)
            services = [
                d for d in origin.index.all() if d.handler == "auto" and d.service_id.startswith("js.")
            ]
            limits = CounterLimits()
            bodies = [application_body(rng.choice(services), rng) for _ in range(count)]
            requests = [parse_submit(body, limits, request_digest(body)) for body in bodies]
            clerk = Principal("clerk", "clerk")
            pending = iter(enumerate(requests))

            async def client() -> None:
                for i, req in pending:
                    await origin.backend.origin.submit(clerk, f"s{i}", req)

            start = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(concurrency)))
            submit_rate = count / (time.perf_counter() - start)

            def transfers(s: Session) -> list[peer_pb2.ApplicationTransfer]:
                rows = s.exec(select(OutboxEntry).where(OutboxEntry.destination == OWNER)).all()
                return [peer_pb2.DeliverItem.FromString(r.body).application for r in rows]

            items = await origin.db.run(transfers)
            half = len(items) // 2
            accept = owner.backend.owner.accept

            def accept_all(chunk: list[peer_pb2.ApplicationTransfer]) -> Callable[[Session], None]:
                def work(s: Session) -> None:
                    for t in chunk:
                        accept(s, ORIGIN, t, owner.clock.now_ms())

                return work

            start = time.perf_counter()
            for t in items[:half]:
                await owner.db.run(accept_all([t]))
            single_rate = half / (time.perf_counter() - start)
            rest = items[half:]
            start = time.perf_counter()
            for i in range(0, len(rest), BATCH):
                await owner.db.run(accept_all(rest[i : i + BATCH]))
            batched_rate = len(rest) / (time.perf_counter() - start)
    return StoreResult(
        submits=count,
        origin_submit_per_s=round(submit_rate, 1),
        owner_accept_per_s=round(single_rate, 1),
        owner_accept_batched_per_s=round(batched_rate, 1),
        batch=BATCH,
        concurrency=concurrency,
    )
