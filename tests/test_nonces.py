"""Seen-nonce stores: duplicates, pruning, restarts, and racing replicas on PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlmodel import Session, func, select

from core.db import Database
from core.errors import ConfigError
from node.trust.nonces import MemoryNonceStore, NonceStore, SeenNonce, SqlNonceStore

NOW = 1_767_225_600_000
WINDOW = 60_000


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def make_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[], NonceStore]]:
    url = f"sqlite:///{tmp_path / 'n.db'}"
    if request.param == "memory":
        store = MemoryNonceStore(WINDOW)
        yield lambda: store
        return
    if request.param == "postgresql":
        url = request.getfixturevalue("new_pg_schema")()
    db = Database(url)
    db.create_all()
    yield lambda: SqlNonceStore(db, WINDOW)
    db.close()


@pytest.fixture
def sender() -> str:
    """Unique per test, so runs sharing one PostgreSQL database cannot collide."""
    return f"node-{uuid.uuid4().hex[:12]}"


async def test_second_sighting_is_refused(make_store: Callable[[], NonceStore], sender: str) -> None:
    store = make_store()
    assert await store.remember(sender, b"n" * 16, NOW, NOW)
    assert not await store.remember(sender, b"n" * 16, NOW, NOW + 1)
    assert await store.remember(sender, b"m" * 16, NOW, NOW + 2)
    assert await store.remember(sender + "-other", b"n" * 16, NOW, NOW + 3)


async def test_nonces_are_forgotten_only_after_the_window(
    make_store: Callable[[], NonceStore], sender: str
) -> None:
    store = make_store()
    assert await store.remember(sender, b"old", NOW, NOW)
    assert not await store.remember(sender, b"old", NOW, NOW + WINDOW)
    # Past the window the skew check refuses the envelope anyway, so forgetting is safe.
    await store.remember(sender, b"tick", NOW + 2 * WINDOW, NOW + 2 * WINDOW)
    assert await store.remember(sender, b"old", NOW, NOW + 2 * WINDOW + 1)


async def test_memory_store_prunes() -> None:
    store = MemoryNonceStore(WINDOW)
    for i in range(10):
        await store.remember("a", bytes([i]), NOW, NOW)
    await store.remember("a", b"late", NOW + 2 * WINDOW, NOW + 2 * WINDOW)
    assert len(store) == 1


def count_rows(db: Database, sender: str) -> int:
    def work(s: Session) -> int:
        return s.exec(select(func.count()).select_from(SeenNonce).where(SeenNonce.sender == sender)).one()

    return db.transact(work)


async def test_sql_store_survives_a_restart_and_prunes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    db = Database(url)
    db.create_all()
    assert await SqlNonceStore(db, WINDOW).remember("a", b"n" * 16, NOW, NOW)
    db.close()

    db = Database(url)
    store = SqlNonceStore(db, WINDOW)
    assert not await store.remember("a", b"n" * 16, NOW, NOW + 1)
    for i in range(5):
        assert await store.remember("a", bytes([i]) * 16, NOW, NOW + 2)
    assert count_rows(db, "a") == 6
    # The first call after a restart pruned; the next prune waits half a window.
    assert await store.remember("a", b"x" * 16, NOW + WINDOW // 3, NOW + WINDOW // 3)
    assert count_rows(db, "a") == 7
    assert await store.remember("a", b"y" * 16, NOW + WINDOW + 1, NOW + WINDOW + 1)
    assert count_rows(db, "a") == 2
    db.close()


async def test_racing_replicas_let_exactly_one_win(sender: str, new_pg_schema: Callable[[], str]) -> None:
    url = new_pg_schema()
    a, b = Database(url), Database(url)
    a.create_all()
    try:
        stores = [SqlNonceStore(a, WINDOW), SqlNonceStore(b, WINDOW)]
        for i in range(20):
            nonce = i.to_bytes(16, "big")
            wins = await asyncio.gather(
                *(s.remember(sender, nonce, NOW, NOW) for s in stores for _ in range(2))
            )
            assert sorted(wins) == [False, False, False, True]
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("window", [0, -1])
def test_window_must_be_positive(window: int) -> None:
    with pytest.raises(ConfigError):
        MemoryNonceStore(window)


async def test_a_batch_records_its_nonces_at_once(make_store: Callable[[], NonceStore], sender: str) -> None:
    """One statement for a batch: a nonce seen before, or earlier in the same batch, is a replay."""
    store = make_store()
    assert await store.remember(sender, b"old", NOW, NOW)
    seen = [(sender, b"a", NOW), (sender, b"old", NOW), (sender, b"b", NOW), (sender, b"a", NOW)]
    db = store._db if isinstance(store, SqlNonceStore) else None

    def work(s: Session | None) -> list[bool]:
        return store.remember_all_in(s, seen, NOW + 1)  # type: ignore[arg-type]

    fresh = db.transact(work) if db is not None else work(None)
    assert fresh == [True, False, True, False]
    assert not await store.remember(sender, b"b", NOW, NOW + 2)
