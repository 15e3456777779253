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
  (an ``INSERT ... ON CONFLICT DO UPDATE``, in key order so two replicas cannot deadlock),
  refills them from the wall clock (the only time the replicas share; a replica whose clock
  lags another's refills nothing until it catches up, it never over-refills) and takes a
  token from each, in one transaction that rolls back whole when one quota refuses.
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


_READ_ROW = text("SELECT tokens, updated_ms FROM quota_usage WHERE quota_id = :q AND scope_key = :k")
# Refill and take one token in one statement: the row lock ON CONFLICT takes serialises the
# replicas, and a bucket with less than one token is left untouched and returns no row.
_TAKE = text(
    "INSERT INTO quota_usage AS u (quota_id, scope_key, tokens, updated_ms) "
    "VALUES (:q, :k, :burst - 1.0, :now) "
    "ON CONFLICT (quota_id, scope_key) DO UPDATE "
    "SET tokens = LEAST(:burst, u.tokens + GREATEST(0, :now - u.updated_ms) * :per_ms) - 1.0, "
    "updated_ms = GREATEST(u.updated_ms, :now) "
    "WHERE LEAST(:burst, u.tokens + GREATEST(0, :now - u.updated_ms) * :per_ms) >= 1.0 "
    "RETURNING u.tokens"
)


class _Refused(Exception):
    """Raised inside the transaction so the tokens already taken from other quotas go back."""

    def __init__(self, quota: Quota) -> None:
        self.quota = quota


class SqlQuotaBook:
    """Buckets in PostgreSQL, shared by every replica of the node (see the module docstring).

    :meth:`admit` runs its own short transaction on the calling thread, apart from the
    caller's: a quota token is spent by the decision, as in memory, whether or not what was
    decided commits later. That transaction commits without waiting for the disk
    (``synchronous_commit = off``): a crash may forget the last few tokens taken, which
    errs towards admitting, and saves a disk flush on every application.
    """

    def __init__(self, db: Database, clock: Clock) -> None:
        if db.is_sqlite:
            raise ValueError("SqlQuotaBook needs PostgreSQL (row locks); SQLite nodes use QuotaBook")
        self._db = db
        self._clock = clock

    def admit(self, quotas: tuple[Quota, ...], inp: PolicyInput, consume: bool) -> Quota | None:
        if not quotas:
            return None
        try:
            return self._db.transact(lambda s: self._admit(s, quotas, inp, consume))
        except _Refused as r:
            return r.quota

    def _admit(self, s: Session, quotas: tuple[Quota, ...], inp: PolicyInput, consume: bool) -> Quota | None:
        now = self._clock.now_ms()
        keyed = sorted(((q.id, self.key_for(q, inp)), q) for q in quotas)  # one lock order for all
        if not consume:
            for (qid, key), q in keyed:
                row = s.execute(_READ_ROW, {"q": qid, "k": key}).first()
                tokens = (
                    float(q.burst)
                    if row is None
                    else _refilled(q, float(row[0]), (now - int(row[1])) / 1000.0)
                )
                if tokens < 1.0:
                    return q
            return None
        s.execute(text("SET LOCAL synchronous_commit = off"))
        for (qid, key), q in keyed:
            params = {
                "q": qid,
                "k": key,
                "burst": float(q.burst),
                "now": now,
                "per_ms": q.per_minute / 60_000.0,
            }
            if s.execute(_TAKE, params).first() is None:
                raise _Refused(q)
        return None

    def key_for(self, q: Quota, inp: PolicyInput) -> str:
        return key_for(q, inp)
