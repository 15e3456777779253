"""Quotas shared by replicas: two processes of one node on one PostgreSQL database spend one
quota together (a quota of N admits N in total, not N per replica), under contention too."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from core.clock import FakeClock
from core.db import Database
from node import migrations
from policies.model import PolicyInput
from policies.quotas import SqlQuotaBook
from policies.spec import Quota

PER_PEER = Quota(
    id="per-peer",
    scope="peer",
    directions=frozenset({"inbound"}),
    peer_nodes=None,
    services=None,
    per_minute=60.0,
    burst=5,
    line=1,
)
PER_SERVICE = Quota(
    id="per-service",
    scope="service",
    directions=frozenset({"inbound"}),
    peer_nodes=None,
    services=None,
    per_minute=60.0,
    burst=100,
    line=2,
)


def inp(peer: str = "jiangsu") -> PolicyInput:
    return PolicyInput(
        direction="inbound",
        peer_node=peer,
        peer_jurisdiction="32",
        service_id="zj.filing",
        service_owner="330000",
        service_department="d",
        purpose="p",
        role="node",
        fields=frozenset(),
        consent=False,
        at_ms=0,
    )


@pytest.fixture
def replicas(new_pg_schema: Callable[[], str]) -> Iterator[tuple[Database, Database]]:
    url = new_pg_schema()
    a, b = Database(url), Database(url)
    migrations.upgrade(a.engine)
    yield a, b
    a.close()
    b.close()


def test_a_quota_of_n_admits_n_across_two_replicas(replicas: tuple[Database, Database]) -> None:
    clock = FakeClock()
    books = [SqlQuotaBook(db, clock) for db in replicas]
    quotas = (PER_PEER, PER_SERVICE)
    admitted = [books[i % 2].admit(quotas, inp(), consume=True) is None for i in range(8)]
    assert admitted == [True] * 5 + [False] * 3
    assert books[0].admit(quotas, inp("anhui"), consume=True) is None  # another peer, its own bucket
    assert books[1].admit(quotas, inp(), consume=False) is PER_PEER  # a dry run sees the level, takes nothing
    clock.advance(2.0)  # 60/min: two tokens back, counted from the shared row
    assert [books[i % 2].admit(quotas, inp(), consume=True) is None for i in range(3)] == [True, True, False]


def test_a_refusal_by_one_quota_takes_nothing_from_the_others(replicas: tuple[Database, Database]) -> None:
    clock = FakeClock()
    book = SqlQuotaBook(replicas[0], clock)
    tight = Quota("tight", "service", frozenset({"inbound"}), None, None, 1.0, 1, 3)
    assert book.admit((PER_PEER, tight), inp(), consume=True) is None
    assert book.admit((PER_PEER, tight), inp(), consume=True) is tight
    # PER_PEER lost only the one token of the admitted call: four left.
    assert [book.admit((PER_PEER,), inp(), consume=True) is None for _ in range(5)] == [True] * 4 + [False]


def test_concurrent_replicas_never_admit_more_than_the_quota(replicas: tuple[Database, Database]) -> None:
    clock = FakeClock()  # time stands still: no refill, so exactly the burst may pass
    books = [SqlQuotaBook(db, clock) for db in replicas]
    results: list[bool] = []
    lock = threading.Lock()

    def hammer(book: SqlQuotaBook) -> None:
        for _ in range(10):
            ok = book.admit((PER_SERVICE, PER_PEER), inp(), consume=True) is None
            with lock:
                results.append(ok)

    threads = [threading.Thread(target=hammer, args=(books[i % 2],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 60 and results.count(True) == PER_PEER.burst


def test_sqlite_nodes_keep_the_in_memory_book() -> None:
    db = Database("sqlite://")
    try:
        with pytest.raises(ValueError):
            SqlQuotaBook(db, FakeClock())
    finally:
        db.close()
