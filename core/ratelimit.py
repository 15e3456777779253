"""Per-caller limits shared by both doors: a token bucket of requests per second and a cap on
calls in flight, each keyed by an authenticated caller (a peer's node id, a clerk's account).

One flooding caller spends its own budget and is refused with :class:`RateLimited` (gRPC
RESOURCE_EXHAUSTED, HTTP 429 with Retry-After); everyone else keeps theirs. Time comes from
the injected clock, so tests move it instead of sleeping. Memory is bounded: past
``max_keys`` the least recently seen caller is forgotten, which only ever hands it a full
bucket again (an attacker gains nothing it could not get by waiting).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from core.clock import Clock
from core.errors import RateLimited


@dataclass
class _Bucket:
    tokens: float
    at_s: float


class RateLimiter:
    """``rate`` requests per second per key, with bursts of up to ``burst``."""

    def __init__(self, clock: Clock, *, rate: float, burst: int, max_keys: int = 10_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._clock, self.rate, self.burst, self.max_keys = clock, rate, burst, max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def check(self, key: str, what: str) -> None:
        """Spend one token of ``key`` or raise RateLimited (code ``rate_limited``)."""
        now = self._clock.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at_s) * self.rate)
            bucket.at_s = now
            self._buckets.move_to_end(key)
        if bucket.tokens < 1.0:
            wait_s = (1.0 - bucket.tokens) / self.rate
            raise RateLimited(
                f"more than {self.rate:g} {what} per second; try again shortly",
                code="rate_limited",
                retry_after_s=max(1, math.ceil(wait_s)),
            )
        bucket.tokens -= 1.0


class ConcurrencyLimiter:
    """At most ``limit`` calls in flight per key; an excess call is refused at once rather
    than queued, so a caller that opens many calls cannot hold the node's workers."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._in_flight: dict[str, int] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        held = self._in_flight.get(key, 0)
        if held >= self.limit:
            raise RateLimited(
                f"more than {self.limit} calls at once from one caller",
                code="too_many_calls",
                retry_after_s=1,
            )
        self._in_flight[key] = held + 1
        try:
            yield
        finally:
            left = self._in_flight[key] - 1
            if left:
                self._in_flight[key] = left
            else:  # an idle caller costs no memory, so the key count stays bounded
                del self._in_flight[key]

    def in_flight(self, key: str) -> int:
        return self._in_flight.get(key, 0)
