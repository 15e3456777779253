"""The outbox: everything a node owes another node, persisted before anyone is told
it was accepted. Senders claim due rows with a lease, send, and settle each row from
the signed receipt; a crash between claim and settle only delays the row until the
lease runs out, and the receiver's idempotency absorbs the resend.

A node's own sender also takes new entries without claiming them: when a unit run by
``Database.run`` enqueues, the entry is written already leased to this process and handed to
the sender in memory once the transaction commits (:class:`Handoff`). At low rates, where
every batch is one entry, that is one unit of work and three statements less
per send; the lease makes the hand-off as safe as a claim (lost with the process, the entry
is sent again once the lease runs out, or at once after a SQLite node's restart).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import partial
from typing import Protocol

from sqlalchemy import bindparam, func, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from core.db import after_commit
from core.statements import Statement, driver, insert_into
from node.models import OutboxEntry, PeerState

CLAIM_LEASE_MS = 30_000  # the default of [delivery] claim_lease_s
# The key under which a unit's session carries the sender's Handoff (Database.session_info).
HANDOFF = "yrd.outbox.handoff"
_UNHANDED = "yrd.outbox.unhanded"  # the peers a session queued due entries for, not handed over


@dataclass(frozen=True, slots=True)
class Leased:
    """An entry leased to a sender, by a claim or in the transaction that queued it: a plain
    value, since an ORM object (instrumented state, attribute events) cost more to build than
    the INSERT."""

    id: int
    next_hop: str
    method: str
    item_id: str
    body: bytes
    attempts: int
    claimed_until_ms: int


class Handoff(Protocol):
    """A sender that takes new entries in memory, leased to it in the enqueuing transaction."""

    @property
    def lease_ms(self) -> int: ...

    def takes(self, next_hop: str, body_bytes: int) -> bool:
        """Whether an entry for ``next_hop`` goes to this sender (asked inside the enqueuing unit)."""
        ...

    def take(self, entry: Leased) -> None:
        """The committed entry, on the event loop."""
        ...


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
    """Add an entry; a ``held`` one waits (state "held") until :func:`release` makes it due.

    Written at once on the session's connection (on the driver, core/statements.py): the
    entry is in the transaction when this returns, visible to the caller's next query, and
    costs no object and no flush step (an owner's accept queues four of them). When the
    session carries a sender's :class:`Handoff` that takes it, the entry is written as that
    sender's first claim (leased, one attempt) and handed to it after the commit."""
    handoff: Handoff | None = session.info.get(HANDOFF)
    leased_until = 0
    if handoff is not None and not held and handoff.takes(next_hop, len(body)):
        leased_until = now_ms + handoff.lease_ms
    entry_id = driver(session).scalar(
        _INSERT,
        {
            "next_hop": next_hop,
            "destination": destination,
            "method": method,
            "item_id": item_id,
            "body": body,
            "created_at_ms": now_ms,
            "next_attempt_ms": now_ms,
            "attempts": 1 if leased_until else 0,
            "state": "held" if held else "pending",
            "last_error": "",
            "claimed_until_ms": leased_until,
            "dead_reason": "",
            "dead_at_ms": 0,
        },
    )
    if handoff is not None and leased_until:
        entry = Leased(entry_id, next_hop, method, item_id, body, 1, leased_until)
        after_commit(session, partial(handoff.take, entry))
    elif not held and not next_hop.startswith("~"):
        session.info.setdefault(_UNHANDED, set()).add(next_hop)


def unhanded_hops(session: Session) -> set[str]:
    """The peers whose senders must be woken once this session's unit commits: those it queued
    due entries for that no sender took in memory (a handed-over entry wakes its sender
    itself; local ``~`` queues have their own workers)."""
    hops: set[str] = session.info.get(_UNHANDED, set())
    return hops


_TABLE = OutboxEntry.__table__  # type: ignore[attr-defined]
_INSERT = insert_into(_TABLE, returning=(_TABLE.c.id,))


def release(session: Session, item_id: str, now_ms: int) -> None:
    """Make the held entries of one item due now."""
    session.execute(
        update(OutboxEntry)
        .where(col(OutboxEntry.item_id) == item_id, col(OutboxEntry.state) == "held")
        .values(state="pending", next_attempt_ms=now_ms)
    )


# What an envelope adds to its body on the wire (sender, key id, destination, method, time,
# nonce, signature, field framing): a generous bound, so a batch budgeted with it stays
# under the limit that counts the real bytes.
ENVELOPE_OVERHEAD_BYTES = 512
TOO_LARGE = "too_large"


@dataclass(frozen=True)
class Oversized:
    """An entry set aside at claim time because its envelope alone exceeds the batch budget."""

    id: int
    item_id: str
    size_bytes: int


@dataclass(frozen=True)
class Claim:
    rows: Sequence[Leased]
    oversized: list[Oversized]


def envelope_cost(body_bytes: int) -> int:
    return body_bytes + ENVELOPE_OVERHEAD_BYTES


def claim(session: Session, next_hop: str, limit: int, now_ms: int) -> Sequence[Leased]:
    """:func:`claim_batch` without a byte budget, for local queues whose bodies are empty."""
    return claim_batch(session, next_hop, limit, now_ms, max_bytes=None).rows


def claim_batch(
    session: Session,
    next_hop: str,
    limit: int,
    now_ms: int,
    max_bytes: int | None,
    lease_ms: int = CLAIM_LEASE_MS,
) -> Claim:
    """Claim up to ``limit`` due entries for ``next_hop`` whose envelopes fit in ``max_bytes``
    together, oldest first, stopping at the first entry that would overflow the budget.

    An entry too large to send even alone is made a dead letter in this same transaction
    and reported in :attr:`Claim.oversized`; it never blocks the rows behind it.

    Sizes are read before bodies, so a claim loads only the bodies it will send.
    ``FOR UPDATE SKIP LOCKED`` lets replicas on PostgreSQL claim disjoint rows at once
    (SQLite ignores it and has a single writer); the lease keeps the rows claimed after
    this transaction ends, while the network call is under way. Every statement runs on the
    driver (core/statements.py): a sender claims after each batch it settles.
    """
    run = driver(session)
    chosen: list[int] = []
    oversized: list[Oversized] = []
    total = 0
    for entry_id, item_id, body_bytes in run.all(_DUE, {"hop": next_hop, "now": now_ms, "limit": limit}):
        cost = envelope_cost(int(body_bytes))
        if max_bytes is None:
            chosen.append(entry_id)
            continue
        if cost > max_bytes:
            oversized.append(Oversized(entry_id, item_id, cost))
            continue
        if total + cost > max_bytes:
            break
        chosen.append(entry_id)
        total += cost
    for o in oversized:
        bury(session, [o.id], TOO_LARGE, f"{o.size_bytes} bytes exceed the {max_bytes}-byte limit", now_ms)
    if not chosen:
        return Claim([], oversized)
    until = now_ms + lease_ms
    run.executemany(_LEASE, [{"id": i, "until": until} for i in chosen])
    # The chosen rows lie in one range of ids and now carry this lease; a row in that range
    # that was not chosen (set aside as too large, or held by another replica's claim) does
    # not, unless another replica leased it to the same millisecond, which the check by id
    # drops: what is sent is exactly what was chosen.
    wanted = set(chosen)
    rows = run.all(_BODIES, {"hop": next_hop, "first": chosen[0], "last": chosen[-1], "until": until})
    return Claim([Leased(*row) for row in rows if row[0] in wanted], oversized)


_DUE = Statement(
    sa_select(_TABLE.c.id, _TABLE.c.item_id, func.length(_TABLE.c.body))
    .where(
        _TABLE.c.next_hop == bindparam("hop"),
        _TABLE.c.state == "pending",
        _TABLE.c.next_attempt_ms <= bindparam("now"),
        _TABLE.c.claimed_until_ms <= bindparam("now"),
    )
    .order_by(_TABLE.c.id)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
_LEASE = Statement(
    _TABLE.update()
    .where(_TABLE.c.id == bindparam("id"))
    .values(claimed_until_ms=bindparam("until"), attempts=_TABLE.c.attempts + 1)
)
_BODIES = Statement(
    sa_select(*(_TABLE.c[f.name] for f in fields(Leased)))  # in Leased's order: rows become Leased
    .where(
        _TABLE.c.next_hop == bindparam("hop"),
        _TABLE.c.id.between(bindparam("first"), bindparam("last")),
        _TABLE.c.claimed_until_ms == bindparam("until"),
    )
    .order_by(_TABLE.c.id)
)


def bury(session: Session, entry_ids: list[int], reason: str, detail: str, now_ms: int) -> None:
    """Make entries dead letters: out of the queue, kept with their reason code for an
    operator to read and re-drive (:func:`redrive`)."""
    params = {"reason": reason, "at": now_ms, "error": detail[:500]}
    driver(session).executemany(_BURY, [{"id": i, **params} for i in entry_ids])


_BURY = Statement(
    _TABLE.update()
    .where(_TABLE.c.id == bindparam("id"))
    .values(
        state="dead",
        dead_reason=bindparam("reason"),
        dead_at_ms=bindparam("at"),
        claimed_until_ms=0,
        last_error=bindparam("error"),
    )
)


@dataclass(frozen=True)
class DeadLetter:
    id: int
    peer: str
    method: str
    item_id: str
    reason: str
    detail: str
    dead_at_ms: int
    attempts: int


def dead_letters(session: Session, limit: int) -> list[DeadLetter]:
    """The newest dead letters first, without their bodies (which may hold sealed personal data)."""
    stmt = (
        sa_select(
            *(
                col(c)
                for c in (
                    OutboxEntry.id,
                    OutboxEntry.next_hop,
                    OutboxEntry.method,
                    OutboxEntry.item_id,
                    OutboxEntry.dead_reason,
                    OutboxEntry.last_error,
                    OutboxEntry.dead_at_ms,
                    OutboxEntry.attempts,
                )
            )
        )
        .where(col(OutboxEntry.state) == "dead")
        .order_by(col(OutboxEntry.id).desc())
        .limit(limit)
    )
    return [DeadLetter(*row) for row in session.execute(stmt).all()]


def redrive(session: Session, entry_id: int, now_ms: int) -> bool:
    """Put one dead letter back in its queue, due now; False when ``entry_id`` is no dead letter."""
    result = session.execute(
        update(OutboxEntry)
        .where(col(OutboxEntry.id) == entry_id, col(OutboxEntry.state) == "dead")
        .values(state="pending", next_attempt_ms=now_ms, claimed_until_ms=0, dead_reason="", dead_at_ms=0)
        .returning(col(OutboxEntry.id))
    )
    return result.first() is not None


def dead_counts(session: Session) -> dict[str, int]:
    """Dead letters per peer, for the gauge."""
    stmt = (
        select(OutboxEntry.next_hop, func.count())
        .where(OutboxEntry.state == "dead")
        .group_by(col(OutboxEntry.next_hop))
    )
    return {hop: int(n) for hop, n in session.exec(stmt).all()}


def stalled_hops(session: Session, now_ms: int, stall_ms: int) -> list[str]:
    """Peers that have had work waiting for longer than ``stall_ms`` and no successful call
    in that time: a link making no progress (local ``~`` queues excluded). Read from the
    database, so it holds across restarts and for work claimed by another replica."""
    since = now_ms - stall_ms
    stmt = (
        select(OutboxEntry.next_hop)
        .where(
            OutboxEntry.state == "pending",
            col(OutboxEntry.created_at_ms) < since,
            ~col(OutboxEntry.next_hop).startswith("~"),
        )
        .distinct()
    )
    stalled = []
    for hop in sorted(session.exec(stmt).all()):
        state = session.get(PeerState, hop)
        if state is None or state.last_success_ms < since:
            stalled.append(hop)
    return stalled


def settle(session: Session, entry_id: int) -> None:
    settle_all(session, [entry_id])


def settle_all(session: Session, entry_ids: list[int]) -> None:
    """Mark entries done: one driver call for a whole answered batch (core/statements.py)."""
    driver(session).executemany(_SETTLE, [{"id": i} for i in entry_ids])


def reschedule(session: Session, entry_ids: list[int], next_attempt_ms: int, error: str) -> None:
    params = {"at": next_attempt_ms, "error": error[:500]}
    driver(session).executemany(_RESCHEDULE, [{"id": i, **params} for i in entry_ids])


_SETTLE = Statement(
    _TABLE.update().where(_TABLE.c.id == bindparam("id")).values(state="done", claimed_until_ms=0)
)
_RESCHEDULE = Statement(
    _TABLE.update()
    .where(_TABLE.c.id == bindparam("id"))
    .values(next_attempt_ms=bindparam("at"), claimed_until_ms=0, last_error=bindparam("error"))
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
