"""Token buckets for the bundle's quotas, per peer node or per service id.

The book is kept apart from the engine so a hot reload does not hand every peer a fresh
burst: the holder passes the same book to each new engine, and buckets are keyed by quota
id, so a quota that survives the reload keeps its level. Time comes from the injected
clock's monotonic reading, so tests move it and a wall-clock jump cannot refill a bucket.
"""

from __future__ import annotations

import threading

from core.clock import Clock
from policies.model import PolicyInput
from policies.spec import Quota


class QuotaBook:
    """Safe to share between threads: the owner may decide inside a database worker while
    the origin decides on the event loop, and a check-then-take must not interleave."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # (quota id, peer node or service id) -> [tokens, monotonic seconds of last update]
        self._buckets: dict[tuple[str, str], list[float]] = {}

    def admit(self, quotas: tuple[Quota, ...], inp: PolicyInput, consume: bool) -> Quota | None:
        """The first quota with less than one token left, or None after taking one from each.

        Nothing is taken unless every quota admits, so a refusal by one quota does not
        drain the others.
        """
        if not quotas:
            return None
        with self._lock:
            return self._admit(quotas, inp, consume)

    def _admit(self, quotas: tuple[Quota, ...], inp: PolicyInput, consume: bool) -> Quota | None:
        now = self._clock.monotonic()
        levels: list[tuple[tuple[str, str], float]] = []
        for q in quotas:
            key = (q.id, self.key_for(q, inp))
            bucket = self._buckets.get(key)
            if bucket is None:
                tokens = float(q.burst)
            else:
                tokens = min(float(q.burst), bucket[0] + (now - bucket[1]) * q.per_minute / 60.0)
            if tokens < 1.0:
                return q
            levels.append((key, tokens))
        if consume:
            for key, tokens in levels:
                self._buckets[key] = [tokens - 1.0, now]
        return None

    @staticmethod
    def key_for(q: Quota, inp: PolicyInput) -> str:
        return inp.peer_node if q.scope == "peer" else inp.service_id
