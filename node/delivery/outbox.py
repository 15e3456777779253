"""The outbox: everything a node owes another node, persisted before anyone is told
it was accepted. Senders claim due rows with a lease, send, and settle each row from
the signed receipt; a crash between claim and settle only delays the row until the
lease runs out, and the receiver's idempotency absorbs the resend.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from node.models import OutboxEntry

CLAIM_LEASE_MS = 30_000


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter, capped (the AWS "full jitter" scheme):
    spreading retries avoids a thundering herd when a peer comes back."""

    initial_s: float = 0.5
    max_s: float = 60.0

    def delay_s(self, failures: int, rng: random.Random) -> float:
        ceiling = min(self.max_s, self.initial_s * (2 ** max(failures - 1, 0)))
        return float(ceiling / 2 + rng.uniform(0, ceiling / 2))


def enqueue(
    session: Session,
    *,
    next_hop: str,
    destination: str,
    method: str,
    item_id: str,
    body: bytes,
    now_ms: int,
    held: bool = False,
) -> None:
    """Add an entry; a ``held`` one waits (state "held") until :func:`release` makes it due."""
    session.add(
        OutboxEntry(
            next_hop=next_hop,
            destination=destination,
            method=method,
            item_id=item_id,
            body=body,
            created_at_ms=now_ms,
            next_attempt_ms=now_ms,
            state="held" if held else "pending",
        )
    )


def release(session: Session, item_id: str, now_ms: int) -> None:
    """Make the held entries of one item due now."""
    session.execute(
        update(OutboxEntry)
        .where(col(OutboxEntry.item_id) == item_id, col(OutboxEntry.state) == "held")
        .values(state="pending", next_attempt_ms=now_ms)
    )


def claim(session: Session, next_hop: str, limit: int, now_ms: int) -> list[OutboxEntry]:
    """Claim up to ``limit`` due rows for one peer, oldest first.

    ``FOR UPDATE SKIP LOCKED`` lets replicas on PostgreSQL claim disjoint rows at once
    (SQLite ignores it and has a single writer); the lease keeps the rows claimed
    after this transaction ends, while the network call is under way.
    """
    stmt = (
        select(OutboxEntry)
        .where(
            OutboxEntry.next_hop == next_hop,
            OutboxEntry.state == "pending",
            col(OutboxEntry.next_attempt_ms) <= now_ms,
            col(OutboxEntry.claimed_until_ms) <= now_ms,
        )
        .order_by(col(OutboxEntry.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = list(session.exec(stmt).all())
    for row in rows:
        row.claimed_until_ms = now_ms + CLAIM_LEASE_MS
        row.attempts += 1
        session.add(row)
    return rows


def settle(session: Session, entry_id: int) -> None:
    session.execute(
        update(OutboxEntry).where(col(OutboxEntry.id) == entry_id).values(state="done", claimed_until_ms=0)
    )


def reschedule(session: Session, entry_ids: list[int], next_attempt_ms: int, error: str) -> None:
    if entry_ids:
        session.execute(
            update(OutboxEntry)
            .where(col(OutboxEntry.id).in_(entry_ids))
            .values(next_attempt_ms=next_attempt_ms, claimed_until_ms=0, last_error=error[:500])
        )


def release_all_claims(session: Session) -> None:
    """Forget every lease. Only for a database with a single node process (SQLite): a
    restart after a crash then resends at once what the dead process had claimed,
    instead of waiting out its leases."""
    session.execute(
        update(OutboxEntry).where(col(OutboxEntry.claimed_until_ms) > 0).values(claimed_until_ms=0)
    )


def hops_with_work(session: Session, now_ms: int) -> list[str]:
    """Peers with pending entries; local queues (``~``-prefixed, e.g. webhooks) excluded."""
    stmt = (
        select(OutboxEntry.next_hop)
        .where(
            OutboxEntry.state == "pending",
            col(OutboxEntry.claimed_until_ms) <= now_ms,
            ~col(OutboxEntry.next_hop).startswith("~"),
        )
        .distinct()
    )
    return list(session.exec(stmt).all())


def pending_count(session: Session) -> int:
    return int(session.exec(select(func.count()).where(OutboxEntry.state == "pending")).one())
