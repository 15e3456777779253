"""Login throttling and the password-hashing pool.

Argon2 is slow on purpose, which makes a login the cheapest way to tie up a node: today's
worker threads are shared, so a flood of bad logins queues a real clerk behind it. Two
things stop that, both checked before any hashing:

- :class:`LoginThrottle` counts failures per account and per client address; past a few
  free failures the key is locked for an interval that doubles with each further failure
  (capped), and a key may have one attempt in flight at a time, so one address cannot
  fill the pool with parallel guesses.
- :class:`HashPool` runs argon2 on its own few threads with a bounded queue; when it is
  full a login is refused at once with 429 rather than waiting behind everyone else.

Both answer with :class:`RateLimited` carrying ``retry_after_s`` (the HTTP front turns it
into ``Retry-After``). The failure counts live in the node's database (``login_failure``),
so the replicas of a node share them: a guesser spreading attempts over N replicas gets no
more tries than at one, and a restart forgets nothing. Each process also keeps the locks it
has seen in memory, so a flood against a locked key is refused without a database round trip.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import BigInteger, case, delete
from sqlmodel import Field, Session, SQLModel, col, select

from core.clock import Clock
from core.db import conflict_insert
from core.errors import RateLimited
from node import metrics

T = TypeVar("T")


@dataclass(frozen=True)
class ThrottleConfig:
    free_failures: int = 5  # failures before the first lockout
    base_lock_s: float = 2.0  # the first lockout; each further failure doubles it
    max_lock_s: float = 900.0
    forget_after_s: float = 3600.0  # a key with no failure for this long starts afresh
    # Concurrent attempts per account and per address. Below the pool's thread count, so one
    # client, however many connections it opens, never holds every hashing thread.
    max_in_flight: int = 1
    max_keys: int = 100_000  # memory bound; the stalest keys are forgotten first

    def lock_ms(self, failures: int) -> int:
        """How long ``failures`` failures in a row lock a key: nothing within the free ones."""
        over = failures - self.free_failures
        return 0 if over < 0 else round(min(self.base_lock_s * 2 ** min(over, 32), self.max_lock_s) * 1000)


class LoginFailure(SQLModel, table=True):
    """A key's failures in a row, shared by the node's replicas."""

    __tablename__ = "login_failure"

    key: str = Field(primary_key=True)
    failures: int
    last_failure_ms: int = Field(index=True, sa_type=BigInteger)
    locked_until_ms: int = Field(sa_type=BigInteger)


# key -> (failures in a row, locked until, epoch ms): what the database says of each key.
Shared = Mapping[str, tuple[int, int]]
_FAILURES = LoginFailure.__table__  # type: ignore[attr-defined]


def read_failures(s: Session, keys: list[str], now_ms: int, config: ThrottleConfig) -> Shared:
    """The keys' counts, leaving out those with no failure for ``forget_after_s``."""
    since = now_ms - round(config.forget_after_s * 1000)
    rows = s.exec(select(LoginFailure).where(col(LoginFailure.key).in_(keys))).all()
    return {r.key: (r.failures, r.locked_until_ms) for r in rows if r.last_failure_ms > since}


def record_failure(s: Session, keys: list[str], now_ms: int, config: ThrottleConfig) -> Shared:
    """One more failure for each key, counted in one statement per key so two replicas
    failing at once both count; a stale count starts afresh. Forgets stale keys."""
    since = now_ms - round(config.forget_after_s * 1000)
    table = _FAILURES
    out: dict[str, tuple[int, int]] = {}
    for key in keys:
        insert = conflict_insert(s, table).values(
            key=key, failures=1, last_failure_ms=now_ms, locked_until_ms=0
        )
        failures = s.execute(
            insert.on_conflict_do_update(
                index_elements=["key"],
                set_={
                    "failures": case((table.c.last_failure_ms > since, table.c.failures), else_=0) + 1,
                    "last_failure_ms": now_ms,
                },
            ).returning(table.c.failures)
        ).scalar_one()
        lock = config.lock_ms(failures)
        locked_until = now_ms + lock if lock else 0
        s.execute(table.update().where(table.c.key == key).values(locked_until_ms=locked_until))
        out[key] = (failures, locked_until)
    s.execute(delete(LoginFailure).where(col(LoginFailure.last_failure_ms) <= since))
    return out


def clear_failures(s: Session, key: str) -> None:
    s.execute(delete(LoginFailure).where(col(LoginFailure.key) == key))


@dataclass
class _Entry:
    locked_until_ms: int = 0
    in_flight: int = 0


class LoginThrottle:
    """Attempts in flight per key (``account:<name>``, ``address:<ip>``) and the locks seen."""

    def __init__(self, clock: Clock, config: ThrottleConfig | None = None) -> None:
        self._clock = clock
        self.config = config or ThrottleConfig()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    @staticmethod
    def keys(username: str | None, address: str) -> list[str]:
        """``username`` is None for a name no account can have: only the address counts."""
        keys = [f"account:{username}"] if username else []
        return [*keys, f"address:{address or 'unknown'}"]

    @contextmanager
    def attempt(self, keys: list[str]) -> Iterator[None]:
        """Admit one login attempt for ``keys`` or raise RateLimited; held while it runs."""
        entries = [self._entry(k) for k in keys]
        self._refuse_locked(keys, entries)
        for key, entry in zip(keys, entries, strict=True):
            if entry.in_flight >= self.config.max_in_flight:
                metrics.LOGIN_THROTTLED.labels(scope=key.split(":", 1)[0]).inc()
                raise RateLimited(
                    "too many logins at once; try again shortly", code="login_busy", retry_after_s=1
                )
        for entry in entries:
            entry.in_flight += 1
        try:
            yield
        finally:
            for entry in entries:
                entry.in_flight -= 1

    def shared(self, keys: list[str], counts: Shared, *, refuse: bool = True) -> None:
        """Take what the database says of ``keys`` (absent: no recent failure); with
        ``refuse``, raise RateLimited when one is locked now, as another replica may have
        locked it."""
        entries = [self._entry(k) for k in keys]
        for key, entry in zip(keys, entries, strict=True):
            entry.locked_until_ms = counts.get(key, (0, 0))[1]
        if refuse:
            self._refuse_locked(keys, entries)

    def _refuse_locked(self, keys: list[str], entries: list[_Entry]) -> None:
        now = self._clock.now_ms()
        for key, entry in zip(keys, entries, strict=True):
            if entry.locked_until_ms > now:
                scope = key.split(":", 1)[0]
                metrics.LOGIN_THROTTLED.labels(scope=scope).inc()
                raise RateLimited(
                    f"too many failed logins for this {scope}; try again later",
                    code="login_locked",
                    retry_after_s=max(1, math.ceil((entry.locked_until_ms - now) / 1000)),
                )

    def _entry(self, key: str) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
            self._evict()
        self._entries.move_to_end(key)
        return entry

    def _evict(self) -> None:
        while len(self._entries) > self.config.max_keys:
            key, oldest = next(iter(self._entries.items()))
            if oldest.in_flight:  # never forget a key mid-attempt; it is recent anyway
                self._entries.move_to_end(key)
                return
            del self._entries[key]


class HashPool:
    """Argon2 work on its own threads, with at most ``workers + max_waiting`` jobs admitted."""

    def __init__(self, workers: int = 2, max_waiting: int = 8) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="yrd-argon2")
        self._capacity = workers + max_waiting
        self._admitted = 0
        self._lock = threading.Lock()

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        with self._lock:
            full = self._admitted >= self._capacity
            if not full:
                self._admitted += 1
        if full:
            metrics.LOGIN_THROTTLED.labels(scope="busy").inc()
            raise RateLimited(
                "the node is busy checking passwords; try again shortly", code="login_busy", retry_after_s=1
            )
        job = self._executor.submit(fn, *args)
        # Released when the job is really done (or cancelled before it ran), not when the
        # caller stops waiting: a login whose client went away still holds its thread.
        job.add_done_callback(self._release)
        return await asyncio.wrap_future(job)

    def _release(self, _job: concurrent.futures.Future[T]) -> None:
        with self._lock:
            self._admitted -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
