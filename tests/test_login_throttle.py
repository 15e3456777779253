"""Login throttling and the bounded hashing pool: lockouts with backoff per account and per
address (FakeClock), 429 with Retry-After at the HTTP door, and a flood of parallel bad
logins that cannot queue a real clerk behind it (counted and ordered, never timed)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher
from prometheus_client import REGISTRY

from core.clock import FakeClock
from core.db import Database
from core.errors import RateLimited, Unauthenticated
from node.counter.contract import CounterLimits
from node.counter.throttle import HashPool, LoginThrottle, ThrottleConfig
from node.counter.users import UserStore
from node.http.app import build_http_app
from tests.test_http_api import FakeBackend

PASSWORD = "correct horse battery"
WRONG = "wrong horse battery"
# Bounded waits so a regression fails instead of hanging; nothing asserts on durations.
SAFETY_S = 30.0


class GatedHasher(PasswordHasher):
    """Cheap argon2 whose checks of a wrong password wait for the gate, counted."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.gate = threading.Event()
        self.lock = threading.Lock()
        self.waiting = 0
        self.most_waiting = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        if password == WRONG:
            with self.lock:
                self.waiting += 1
                self.most_waiting = max(self.most_waiting, self.waiting)
            try:
                self.gate.wait(SAFETY_S)
            finally:
                with self.lock:
                    self.waiting -= 1
        return super().verify(hash, password)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'users.db'}")
    database.create_all()
    yield database
    database.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_store(
    db: Database, clock: FakeClock, hasher: PasswordHasher | None = None, **pool: int
) -> UserStore:
    return UserStore(
        db,
        clock,
        hasher or PasswordHasher(time_cost=1, memory_cost=8, parallelism=1),
        throttle=LoginThrottle(clock, ThrottleConfig(free_failures=3, base_lock_s=2.0, max_lock_s=60.0)),
        pool=HashPool(**pool),
    )


async def refused(store: UserStore, username: str, password: str, address: str) -> str:
    """The code of the refusal (and Retry-After seconds for a 429)."""
    try:
        await store.login(username, password, address)
    except RateLimited as e:
        return f"{e.code}:{e.extra['retry_after_s']}"
    except Unauthenticated as e:
        return e.code
    return "ok"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_an_account_is_locked_with_doubling_backoff_and_freed_by_a_right_password(
    db: Database, clock: FakeClock
) -> None:
    store = make_store(db, clock)
    await store.add_user("li.clerk", PASSWORD, "clerk")
    throttled = metric("yrd_login_throttled_total", scope="account")
    # Each guess from a new address: this is the account's count, not an address's.
    answers = [await refused(store, "li.clerk", WRONG, f"10.0.0.{i}") for i in range(3)]
    assert answers == ["bad_credentials"] * 3
    # Locked now: even the right password waits (that is what a lockout is).
    assert await refused(store, "li.clerk", PASSWORD, "10.0.1.1") == "login_locked:2"
    assert metric("yrd_login_throttled_total", scope="account") == throttled + 1
    clock.advance(2)
    assert await refused(store, "li.clerk", WRONG, "10.0.1.2") == "bad_credentials"
    assert await refused(store, "li.clerk", PASSWORD, "10.0.1.3") == "login_locked:4"
    clock.advance(4)
    assert await refused(store, "li.clerk", PASSWORD, "10.0.1.4") == "ok"
    # A right password starts the account afresh.
    assert [await refused(store, "li.clerk", WRONG, "10.0.2.1") for _ in range(2)] == ["bad_credentials"] * 2
    assert await refused(store, "li.clerk", PASSWORD, "10.0.2.2") == "ok"


async def test_an_address_guessing_at_many_accounts_is_locked_and_others_are_not(
    db: Database, clock: FakeClock
) -> None:
    store = make_store(db, clock)
    await store.add_user("li.clerk", PASSWORD, "clerk")
    guesses = [await refused(store, f"user{i}", WRONG, "203.0.113.9") for i in range(3)]
    assert guesses == ["bad_credentials"] * 3
    assert await refused(store, "someone", WRONG, "203.0.113.9") == "login_locked:2"
    # A real clerk elsewhere is not affected; a valid login does not clear the guessing address.
    assert await refused(store, "li.clerk", PASSWORD, "198.51.100.1") == "ok"
    assert await refused(store, "li.clerk", PASSWORD, "203.0.113.9") == "login_locked:2"
    clock.advance(3600)  # an hour without failures: forgotten
    assert await refused(store, "li.clerk", PASSWORD, "203.0.113.9") == "ok"


def test_the_throttle_forgets_the_stalest_keys_past_its_bound(clock: FakeClock) -> None:
    throttle = LoginThrottle(clock, ThrottleConfig(max_keys=10, free_failures=1))
    for i in range(100):
        key = f"address:{i}"
        throttle.shared([key], {key: (2, clock.now_ms() + 2000)}, refuse=False)
    assert len(throttle._entries) == 10
    with pytest.raises(RateLimited), throttle.attempt(["address:99"]):  # the newest are kept
        pass


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_replicas_share_one_count_and_a_restart_forgets_no_lock(
    backend: str, tmp_path: Path, clock: FakeClock, request: pytest.FixtureRequest
) -> None:
    """Two replicas of a node on one database: guesses spread over both count once, a lock
    made at one is honoured at the other, and a process started afresh still sees it."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
    else:  # skipped without YRD_TEST_PG_URL
        new_pg_schema: Callable[[], str] = request.getfixturevalue("new_pg_schema")
        url = new_pg_schema()
    databases = [Database(url) for _ in range(3)]
    databases[0].create_all()
    try:
        one, two, fresh = (make_store(d, clock) for d in databases)
        await one.add_user("li.clerk", PASSWORD, "clerk")
        answers = [await refused((one, two)[i % 2], "li.clerk", WRONG, f"10.0.0.{i}") for i in range(3)]
        assert answers == ["bad_credentials"] * 3
        assert await refused(one, "li.clerk", PASSWORD, "10.0.1.1") == "login_locked:2"
        assert await refused(two, "li.clerk", PASSWORD, "10.0.1.2") == "login_locked:2"
        assert await refused(fresh, "li.clerk", PASSWORD, "10.0.1.3") == "login_locked:2"
        clock.advance(2)
        assert await refused(two, "li.clerk", PASSWORD, "10.0.1.4") == "ok"
        # The right password at one replica cleared the account for all of them.
        assert await refused(one, "li.clerk", WRONG, "10.0.2.1") == "bad_credentials"
        assert await refused(fresh, "li.clerk", PASSWORD, "10.0.2.2") == "ok"
    finally:
        for d in databases:
            d.close()


async def test_parallel_bad_logins_from_one_address_do_not_queue_a_real_clerk(
    db: Database, clock: FakeClock
) -> None:
    hasher = GatedHasher()
    store = make_store(db, clock, hasher, workers=2, max_waiting=8)
    await store.add_user("li.clerk", PASSWORD, "clerk")
    await refused(store, "warm-up", PASSWORD, "192.0.2.1")  # makes the dummy hash once
    flood = [asyncio.create_task(refused(store, f"user{i}", WRONG, "203.0.113.9")) for i in range(96)]
    await asyncio.sleep(0)
    for _ in range(int(SAFETY_S / 0.01)):  # until the admitted guess is parked on the gate
        if hasher.waiting == 1:
            break
        await asyncio.sleep(0.01)
    refused_fast = [t for t in flood if t.done()]
    assert len(refused_fast) == 95 and {t.result() for t in refused_fast} == {"login_busy:1"}

    # The flood holds one hashing thread behind the gate; the clerk uses the other. (Before
    # the throttle, this login queued behind all 96 guesses.)
    token, _ = await asyncio.wait_for(store.login("li.clerk", PASSWORD, "198.51.100.7"), SAFETY_S)
    assert token and hasher.waiting == 1 and not hasher.gate.is_set()

    hasher.gate.set()
    results = await asyncio.gather(*flood)
    assert results.count("bad_credentials") == 1 and hasher.most_waiting == 1
    store.close()


async def test_the_hashing_pool_admits_a_bounded_number_and_refuses_the_rest_at_once(
    db: Database, clock: FakeClock
) -> None:
    """96 guesses from 96 addresses: at most workers + queue reach argon2; the rest get 429."""
    hasher = GatedHasher()
    store = make_store(db, clock, hasher, workers=2, max_waiting=3)
    await store.add_user("li.clerk", PASSWORD, "clerk")
    await refused(store, "warm-up", PASSWORD, "192.0.2.1")
    busy = metric("yrd_login_throttled_total", scope="busy")
    flood = [asyncio.create_task(refused(store, f"user{i}", WRONG, f"10.1.0.{i}")) for i in range(96)]
    for _ in range(int(SAFETY_S / 0.01)):
        if hasher.waiting == 2 and sum(t.done() for t in flood) == 91:
            break
        await asyncio.sleep(0.01)
    assert sum(t.done() for t in flood) == 91
    assert {t.result() for t in flood if t.done()} == {"login_busy:1"}
    assert metric("yrd_login_throttled_total", scope="busy") == busy + 91
    hasher.gate.set()
    assert (await asyncio.gather(*flood)).count("bad_credentials") == 5
    assert hasher.most_waiting == 2  # never more argon2 at once than the pool's threads
    store.close()


@pytest.fixture
async def client(db: Database, clock: FakeClock) -> AsyncIterator[TestClient[Any, Any]]:
    store = make_store(db, clock)
    await store.add_user("li.clerk", PASSWORD, "clerk")
    app = build_http_app(FakeBackend(), store, clock, CounterLimits())
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c
    store.close()


async def test_http_login_answers_429_with_retry_after(
    client: TestClient[Any, Any], clock: FakeClock
) -> None:
    for _ in range(3):
        resp = await client.post("/api/v1/session", json={"username": "li.clerk", "password": WRONG})
        assert resp.status == 401
    resp = await client.post("/api/v1/session", json={"username": "li.clerk", "password": PASSWORD})
    assert resp.status == 429 and resp.headers["Retry-After"] == "2"
    body = await resp.json()
    assert (body["code"], body["retry_after_s"]) == ("login_locked", 2)
    clock.advance(2)
    resp = await client.post("/api/v1/session", json={"username": "li.clerk", "password": PASSWORD})
    assert resp.status == 200


async def test_a_login_whose_caller_went_away_holds_its_hashing_slot_until_done(
    db: Database, clock: FakeClock
) -> None:
    hasher = GatedHasher()
    store = make_store(db, clock, hasher, workers=1, max_waiting=0)
    await store.add_user("li.clerk", PASSWORD, "clerk")
    await refused(store, "warm-up", PASSWORD, "192.0.2.1")
    gone = asyncio.create_task(store.login("user1", WRONG, "10.2.0.1"))
    for _ in range(int(SAFETY_S / 0.01)):
        if hasher.waiting == 1:
            break
        await asyncio.sleep(0.01)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    # The thread is still busy with the abandoned check, so the pool is still full.
    assert await refused(store, "li.clerk", PASSWORD, "10.2.0.2") == "login_busy:1"
    hasher.gate.set()
    for _ in range(int(SAFETY_S / 0.01)):
        if hasher.waiting == 0 and store._pool._admitted == 0:
            break
        await asyncio.sleep(0.01)
    assert await refused(store, "li.clerk", PASSWORD, "10.2.0.2") == "ok"
    store.close()
