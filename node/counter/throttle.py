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
into ``Retry-After``). State is in memory: a restart forgets lockouts, which costs an
attacker a restart of the node they are attacking, not a bypass.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from core.clock import Clock
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


@dataclass
class _Entry:
    failures: int = 0
    last_failure_s: float = 0.0
    locked_until_s: float = 0.0
    in_flight: int = 0


class LoginThrottle:
    """Failures and attempts in flight per key (``account:<name>``, ``address:<ip>``)."""

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
        now = self._clock.monotonic()
        entries = [self._entry(k, now) for k in keys]
        for key, entry in zip(keys, entries, strict=True):
            if entry.locked_until_s > now:
                scope = key.split(":", 1)[0]
                metrics.LOGIN_THROTTLED.labels(scope=scope).inc()
                raise RateLimited(
                    f"too many failed logins for this {scope}; try again later",
                    code="login_locked",
                    retry_after_s=max(1, math.ceil(entry.locked_until_s - now)),
                )
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

    def failed(self, keys: list[str]) -> None:
        now = self._clock.monotonic()
        cfg = self.config
        for key in keys:
            entry = self._entry(key, now)
            entry.failures += 1
            entry.last_failure_s = now
            over = entry.failures - cfg.free_failures
            if over >= 0:
                entry.locked_until_s = now + min(cfg.base_lock_s * 2 ** min(over, 32), cfg.max_lock_s)

    def succeeded(self, account_key: str) -> None:
        """A right password clears its account, not its address: one valid login must not
        wipe the count of an address that is guessing at other accounts."""
        entry = self._entries.get(account_key)
        if entry is not None:
            entry.failures, entry.locked_until_s = 0, 0.0

    def _entry(self, key: str, now: float) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
            self._evict(now)
        elif entry.failures and now - entry.last_failure_s >= self.config.forget_after_s:
            entry.failures, entry.locked_until_s = 0, 0.0
        self._entries.move_to_end(key)
        return entry

    def _evict(self, now: float) -> None:
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
