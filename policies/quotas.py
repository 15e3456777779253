"""Token buckets for the bundle's quotas, per peer node or per service id.

The book is kept apart from the engine so a hot reload does not hand every peer a fresh
burst: the holder passes the same book to each new engine, and buckets are keyed by quota
id, so a quota that survives the reload keeps its level.

Two books behind one interface (:class:`QuotaCounter`, what the engine calls):

- :class:`QuotaBook` keeps the buckets in memory, for a node with one process (SQLite).
  Time is the injected clock's monotonic reading, so a wall-clock jump cannot refill a bucket.
- :class:`SqlQuotaBook` keeps them in the node's database (``quota_usage``), for replicas of
  one node on PostgreSQL: counted per process, N replicas would each allow the whole quota
  and a peer would get N times its share. Each admission locks the buckets' rows
  (``SELECT ... FOR UPDATE``, in key order so two replicas cannot deadlock), refills them
  from the wall clock (the only time the replicas share; a replica whose clock lags another's
  refills nothing until it catches up, it never over-refills) and takes a token from each,
  in one transaction.
"""

from __future__ import annotations

import threading
from typing import Protocol

from sqlalchemy import text
from sqlmodel import Session

from core.clock import Clock
from core.db import Database
from policies.model import PolicyInput
from policies.spec import Quota


def key_for(q: Quota, inp: PolicyInput) -> str:
    return inp.peer_node if q.scope == "peer" else inp.service_id


class QuotaCounter(Protocol):
    def admit(self, quotas: tuple[Quota, ...], inp: PolicyInput, consume: bool) -> Quota | None:
        """The first quota with less than one token left, or None after taking one from each
        (only when ``consume``). Nothing is taken unless every quota admits, so a refusal by
        one quota does not drain the others."""
        ...

    def key_for(self, q: Quota, inp: PolicyInput) -> str:
        """The bucket a quota counts ``inp`` in: the peer node or the service id."""
        ...


def _refilled(q: Quota, tokens: float, elapsed_s: float) -> float:
    return min(float(q.burst), tokens + max(0.0, elapsed_s) * q.per_minute / 60.0)


class QuotaBook:
    """Safe to share between threads: the owner may decide inside a database worker while
    the origin decides on the event loop, and a check-then-take must not interleave."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # (quota id, peer node or service id) -> [tokens, monotonic seconds of last update]
        self._buckets: dict[tuple[str, str], list[float]] = {}

    def admit(self, quotas: tuple[Quota, ...], inp: PolicyInput, consume: bool) -> Quota | None:
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
            tokens = float(q.burst) if bucket is None else _refilled(q, bucket[0], now - bucket[1])
            if tokens < 1.0:
                return q
            levels.append((key, tokens))
        if consume:
            for key, tokens in levels:
                self._buckets[key] = [tokens - 1.0, now]
        return None

    def key_for(self, q: Quota, inp: PolicyInput) -> str:
        return key_for(q, inp)


_LOCK_ROW = text(
    "SELECT tokens, updated_ms FROM quota_usage WHERE quota_id = :q AND scope_key = :k FOR UPDATE"
)
_READ_ROW = text("SELECT tokens, updated_ms FROM quota_usage WHERE quota_id = :q AND scope_key = :k")
_NEW_ROW = text(
    "INSERT INTO quota_usage (quota_id, scope_key, tokens, updated_ms) VALUES (:q, :k, :t, :now) "
    "ON CONFLICT (quota_id, scope_key) DO NOTHING"
)
_SET_ROW = text(
    "UPDATE quota_usage SET tokens = :t, updated_ms = GREATEST(updated_ms, :now) "
    "WHERE quota_id = :q AND scope_key = :k"
)


class SqlQuotaBook:
    """Buckets in PostgreSQL, shared by every replica of the node (see the module docstring).

    :meth:`admit` runs its own short transaction on the calling thread, apart from the
    caller's: a quota token is spent by the decision, as in memory, whether or not what was
    decided commits later.
    """

    def __init__(self, db: Database, clock: Clock) -> None:
        if db.is_sqlite:
            raise ValueError("SqlQuotaBook needs PostgreSQL (row locks); SQLite nodes use QuotaBook")
        self._db = db
        self._clock = clock

    def admit(self, quotas: tuple[Quota, ...], inp: PolicyInput, consume: bool) -> Quota | None:
        if not quotas:
            return None
        return self._db.transact(lambda s: self._admit(s, quotas, inp, consume))

    def _admit(self, s: Session, quotas: tuple[Quota, ...], inp: PolicyInput, consume: bool) -> Quota | None:
        now = self._clock.now_ms()
        keyed = sorted(((q.id, self.key_for(q, inp)), q) for q in quotas)  # one lock order for all
        levels: list[tuple[tuple[str, str], float]] = []
        for (qid, key), q in keyed:
            params = {"q": qid, "k": key}
            if consume:
                s.execute(_NEW_ROW, {**params, "t": float(q.burst), "now": now})
            row = s.execute(_LOCK_ROW if consume else _READ_ROW, params).first()
            tokens = (
                float(q.burst) if row is None else _refilled(q, float(row[0]), (now - int(row[1])) / 1000.0)
            )
            if tokens < 1.0:
                return q  # the transaction ends without writing: nothing taken
            levels.append(((qid, key), tokens))
        if consume:
            for (qid, key), tokens in levels:
                s.execute(_SET_ROW, {"q": qid, "k": key, "t": tokens - 1.0, "now": now})
        return None

    def key_for(self, q: Quota, inp: PolicyInput) -> str:
        return key_for(q, inp)
