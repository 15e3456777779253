"""Per-peer senders: drain the outbox to each next hop in signed batches.

One task per peer, woken when work is enqueued for it and otherwise polling the
database, so entries written by another replica or left by a crash are picked up too.
What this node enqueues is handed over in memory, already leased to it by the enqueuing
transaction (outbox.py, :class:`~node.delivery.outbox.Handoff`), so a new entry goes out
without a claim of its own; the unit of work that settles an answered batch also claims the
next one from the database (retries, other replicas' and older work). Each unit of work is
a wait for the database's next group (core/db.py), so the sender asks for as few as it can.
A failed call backs off with jitter; the backoff is persisted (PeerState) and every
entry's next attempt is in the database, so a restart resumes where it stopped. A
valid call from the peer resets its backoff: it is evidently up.

No entry can hold up the ones behind it: batches are bounded by bytes as well as count
(the peer's message limit), a batch refused for its size is sent in halves, and an entry
too large to send alone, or refused by the peer as a failure rather than a decision, is set
aside as a dead letter (dead_letters.py) for an operator to see and re-drive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from sqlalchemy import update
from sqlmodel import Session, col, select
from yrd.envelope.v1 import envelope_pb2
from yrd.peer.v1 import peer_pb2

from core.clock import Clock
from core.db import Database
from core.errors import YrdError
from core.statements import driver, insert_into
from node import metrics
from node.config import PEER_CALL_TIMEOUT_S
from node.delivery import dead_letters
from node.delivery.channels import Channels
from node.delivery.dead_letters import is_dead_letter
from node.delivery.outbox import (
    CLAIM_LEASE_MS,
    HANDOFF,
    TOO_LARGE,
    Backoff,
    Claim,
    Leased,
    bury,
    claim_batch,
    dead_counts,
    envelope_cost,
    hops_with_work,
    pending_count,
    release_all_claims,
    reschedule,
    settle_all,
    stalled_hops,
)
from node.delivery.peer_client import parse_body
from node.delivery.relaying import DELIVER
from node.grpc_errors import REASON_KEY
from node.models import OutboxEntry, PeerState
from node.trust import audit
from node.trust.audit import AuditEntry
from node.trust.envelope import EnvelopeVerifier, request_digest, seal_envelope
from node.trust.keyring import Trust

log = logging.getLogger(__name__)
Outcome = peer_pb2.ReceiptOutcome
FINAL_OUTCOMES = {
    Outcome.RECEIPT_OUTCOME_ACCEPTED,
    Outcome.RECEIPT_OUTCOME_DUPLICATE,
    Outcome.RECEIPT_OUTCOME_REJECTED,
}
# What the origin makes of an owner's receipt for a delivered application (kept, and turned
# into the first owner event; a status run it carries applied), run inside the transaction
# that settles the outbox entry. It returns None when it used the receipt, or why the receipt
# is not usable (a carried run that fails its checks, docs/protocol.md 10.6): the entry is then
# sent again, as one without a usable receipt, and the handler has written nothing.
# Injected so delivery does not depend on case handling, which sits above it.
ReceiptHandler = Callable[[Session, str, str, peer_pb2.Receipt, bytes, int], str | None]


class Delivery:
    def __init__(
        self,
        *,
        db: Database,
        trust: Trust,
        channels: Channels,
        verifier: EnvelopeVerifier,
        clock: Clock,
        backoff: Backoff,
        batch_size: int,
        max_batch_bytes: int,
        stall_after_s: float,
        poll_interval_s: float,
        on_receipt: ReceiptHandler,
        claim_lease_s: float = CLAIM_LEASE_MS / 1000,
        rng: random.Random | None = None,
    ) -> None:
        self.on_receipt = on_receipt
        self.claim_lease_ms = int(claim_lease_s * 1000)
        self.max_batch_bytes, self.stall_after_ms = max_batch_bytes, int(stall_after_s * 1000)
        self._dead_peers: set[str] = set()
        self.db, self.trust, self.channels, self.verifier = db, trust, channels, verifier
        self.clock, self.backoff, self.batch_size, self.poll_interval_s = (
            clock,
            backoff,
            batch_size,
            poll_interval_s,
        )
        self.rng = rng or random.Random()
        self._events: dict[str, asyncio.Event] = {}
        self._claimed: dict[str, Claim] = {}  # per peer: the next batch, claimed by the last settle
        self._handed: dict[str, list[Leased]] = {}  # per peer: new entries leased to us (take)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._backoff_until: dict[str, int] = {}
        self._failures: dict[str, int] = {}
        self._scanner: asyncio.Task[None] | None = None
        self._resets: set[asyncio.Task[None]] = set()
        self._stopping = False

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if self.db.is_sqlite:  # one process per SQLite database: no lease can be another's
            await self.db.run(release_all_claims)
        states = await self.db.run(lambda s: list(s.exec(select(PeerState)).all()))
        for st in states:
            self._backoff_until[st.node_id] = st.backoff_until_ms
            self._failures[st.node_id] = st.failures
        self._scanner = asyncio.create_task(self._scan(), name="outbox-scan")
        self.db.session_info[HANDOFF] = self

    async def stop(self) -> None:
        """Stop taking new batches; a call in flight finishes (its rows are settled or
        their lease lapses, so nothing is lost either way)."""
        self._stopping = True
        self.db.session_info.pop(HANDOFF, None)
        for ev in self._events.values():
            ev.set()
        if self._scanner is not None:  # reads and wakes only: nothing of it needs finishing
            self._scanner.cancel()
        tasks = [t for t in [self._scanner, *self._tasks.values()] if t is not None]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=PEER_CALL_TIMEOUT_S + 1)
            for t in pending:
                t.cancel()

    def wake(self, hop: str) -> None:
        if self._stopping:
            return
        self._events.setdefault(hop, asyncio.Event()).set()
        task = self._tasks.get(hop)
        if task is None or task.done():
            self._tasks[hop] = asyncio.create_task(self._run(hop), name=f"sender-{hop}")

    # -- the outbox's hand-off (outbox.Handoff) -------------------------------------------

    @property
    def lease_ms(self) -> int:
        return self.claim_lease_ms

    def takes(self, next_hop: str, body_bytes: int) -> bool:
        """Every peer's new entry that fits a batch (local ``~`` queues have their own
        workers; an entry too large is left to the claim, which makes it a dead letter)."""
        return (
            not self._stopping
            and not next_hop.startswith("~")
            and envelope_cost(body_bytes) <= self.max_batch_bytes
        )

    def take(self, entry: Leased) -> None:
        self._handed.setdefault(entry.next_hop, []).append(entry)
        self.wake(entry.next_hop)

    def _take_handed(self, hop: str) -> list[Leased]:
        """The entries handed over for ``hop`` that make one batch, oldest first. One whose lease
        would lapse before a call could end is left to a claim: it may be claimed again."""
        handed = self._handed.pop(hop, [])
        fresh_until = self.clock.now_ms() + int(PEER_CALL_TIMEOUT_S * 1000)
        batch: list[Leased] = []
        total = 0
        for i, entry in enumerate(handed):
            if entry.claimed_until_ms <= fresh_until:
                continue
            cost = envelope_cost(len(entry.body))
            if len(batch) == self.batch_size or total + cost > self.max_batch_bytes:
                self._handed[hop] = handed[i:]  # the next batch's, woken for at once
                break
            batch.append(entry)
            total += cost
        return batch

    def peer_seen(self, node_id: str) -> None:
        """A peer that just called us is up: forget its backoff and retry its work now."""
        if self._failures.get(node_id) or self._backoff_until.get(node_id):
            self._failures[node_id] = 0
            self._backoff_until[node_id] = 0
            metrics.PEER_BACKOFF.labels(peer=node_id).set(0)
            task = asyncio.create_task(self._reset_peer(node_id))
            self._resets.add(task)
            task.add_done_callback(self._resets.discard)

    async def _reset_peer(self, node_id: str) -> None:
        now = self.clock.now_ms()

        def reset(s: Session) -> None:
            _save_peer(s, node_id, 0, 0, "")
            s.execute(
                update(OutboxEntry)
                .where(col(OutboxEntry.next_hop) == node_id, col(OutboxEntry.state) == "pending")
                .where(col(OutboxEntry.next_attempt_ms) > now)
                .values(next_attempt_ms=now)
            )

        await self.db.run(reset)
        self.wake(node_id)

    async def stalled_peers(self) -> list[str]:
        """Peers whose link made no progress for ``stall_after_s`` while work waited for them
        (read by /healthz, which then reports ``degraded`` and names them)."""
        now = self.clock.now_ms()
        stalled = await self.db.run(lambda s: stalled_hops(s, now, self.stall_after_ms))
        metrics.DELIVERY_STALLED.set(len(stalled))
        return stalled

    async def _scan(self) -> None:
        while not self._stopping:
            try:
                hops, pending, dead, stalled = await self.db.run(self._outbox_summary)
                metrics.OUTBOX_PENDING.set(pending)
                metrics.DELIVERY_STALLED.set(len(stalled))
                for peer in self._dead_peers - dead.keys():
                    metrics.OUTBOX_DEAD_LETTERS.labels(peer=peer).set(0)
                for peer, count in dead.items():
                    metrics.OUTBOX_DEAD_LETTERS.labels(peer=peer).set(count)
                self._dead_peers = set(dead)
                for hop in hops:
                    task = self._tasks.get(hop)
                    if task is None or task.done():
                        self.wake(hop)
            except Exception:
                log.exception("outbox scan failed")
            await self.clock.sleep(max(self.poll_interval_s * 5, 1.0))

    def _outbox_summary(self, s: Session) -> tuple[list[str], int, dict[str, int], list[str]]:
        now = self.clock.now_ms()
        return (
            hops_with_work(s, now),
            pending_count(s),
            dead_counts(s),
            stalled_hops(s, now, self.stall_after_ms),
        )

    # -- one peer ------------------------------------------------------------------------

    async def _run(self, hop: str) -> None:
        event = self._events.setdefault(hop, asyncio.Event())
        try:
            while not self._stopping:
                wait_ms = self._backoff_until.get(hop, 0) - self.clock.now_ms()
                if wait_ms > 0:
                    event.clear()
                    await self._wait(event, wait_ms / 1000)
                    continue
                if hop not in self._claimed:
                    # Before the queue is read: a wake for work committed after the read stays
                    # set for the wait below. (A claim made by the last settle cleared it then.)
                    event.clear()
                try:
                    sent = await self._drain_once(hop)
                except Exception:
                    log.exception("sender for %s failed; will retry", hop)
                    sent = 0
                if sent == 0 and not await self._wait(event, self.poll_interval_s * 10):
                    return  # idle: the scanner restarts this task when work appears
        finally:
            await self._unclaim(hop)

    async def _unclaim(self, hop: str) -> None:
        """Give back a batch claimed or handed over for a send that will not happen (the node
        is stopping), so another replica need not wait out its lease."""
        claimed = self._claimed.pop(hop, None)
        rows: list[Leased] = [*(claimed.rows if claimed else []), *self._handed.pop(hop, [])]
        ids = [r.id for r in rows]
        if ids:
            now = self.clock.now_ms()
            await self.db.run(lambda s: reschedule(s, ids, now, "not sent: the node stopped"))

    async def _wait(self, event: asyncio.Event, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=seconds)
            return True
        return False

    async def _drain_once(self, hop: str) -> int:
        claimed = self._claimed.pop(hop, None)
        if claimed is None or not (claimed.rows or claimed.oversized):
            handed = self._take_handed(hop)
            if handed:
                claimed = Claim(handed, [])
        if claimed is None:
            claimed = await self.db.run(lambda s: self._claim(s, hop))
        for o in claimed.oversized:
            dead_letters.report(hop, o.id, o.item_id, TOO_LARGE)
        by_method: dict[str, list[Leased]] = defaultdict(list)
        for row in claimed.rows:
            by_method[row.method].append(row)
        groups = list(by_method.items())
        for i, (method, group) in enumerate(groups):
            if not await self._send(hop, method, group, claim_next=i == len(groups) - 1):
                # The link is backing off: the other groups wait with it, not for their lease.
                await self._defer(hop, [row for _, later in groups[i + 1 :] for row in later])
                break
        return len(claimed.rows) + len(claimed.oversized)

    def _claim(self, s: Session, hop: str) -> Claim:
        """The next batch for ``hop``, due as of now: the time is read in the unit, so work
        committed just before it is due too."""
        now = self.clock.now_ms()
        return claim_batch(s, hop, self.batch_size, now, self.max_batch_bytes, self.claim_lease_ms)

    async def _defer(self, hop: str, rows: list[Leased]) -> None:
        ids = [r.id for r in rows]
        if ids:
            until = self._backoff_until.get(hop, 0)
            await self.db.run(lambda s: reschedule(s, ids, until, "not sent: the link is backing off"))

    async def _send(self, hop: str, method: str, rows: list[Leased], claim_next: bool = False) -> bool:
        """Send one batch and settle what it answered; False when the link failed (backoff set).
        With ``claim_next`` (the last send of a drain) the settle also claims the next batch."""
        now = self.clock.now_ms()
        me = self.trust.node_id
        envs = [
            seal_envelope(self.trust.key, sender=me, destination=hop, method=method, body=r.body, now_ms=now)
            for r in rows
        ]
        metrics.DELIVERY_BATCH_SIZE.observe(len(envs))
        try:
            replies = await self._call(hop, method, envs)
        except grpc.aio.AioRpcError as e:
            if _refused_for_size(e):
                return await self._split(hop, method, rows, _describe(e), claim_next)
            await self._failed(hop, rows, _describe(e))
            return False
        if len(replies) != len(envs):
            await self._failed(hop, rows, f"{len(replies)} receipts for {len(envs)} envelopes")
            return False
        answered: list[Answered] = []
        unanswered: list[Leased] = []
        for row, req, rep in zip(rows, envs, replies, strict=True):
            try:
                self.verifier.verify_response(rep, req)
                answered.append(Answered(row, req, rep, parse_body(peer_pb2.Receipt, rep.body)))
            except YrdError as e:
                log.warning("%s answered outbox entry %d with an unusable receipt: %s", hop, row.id, e.code)
                unanswered.append(row)
        if not answered:
            await self._failed(hop, rows, "no receipt verified")
            return False
        metrics.DELIVERY_BATCHES.labels(hop, "ok").inc()
        await self._settle(hop, method, answered, unanswered, claim_next)
        return True

    async def _call(
        self, hop: str, method: str, envs: list[envelope_pb2.Envelope]
    ) -> list[envelope_pb2.Envelope]:
        stub = self.channels.peer(hop)
        with metrics.DELIVERY_SECONDS.labels(hop).time():
            if method == DELIVER:
                delivered = await stub.Deliver(
                    peer_pb2.DeliverRequest(envelopes=envs), timeout=PEER_CALL_TIMEOUT_S
                )
                return list(delivered.receipts)
            notified = await stub.NotifyStatus(
                peer_pb2.NotifyStatusRequest(envelopes=envs), timeout=PEER_CALL_TIMEOUT_S
            )
            return list(notified.receipts)

    async def _split(self, hop: str, method: str, rows: list[Leased], error: str, claim_next: bool) -> bool:
        """A batch the peer (or our own channel) refused for its size: send it in halves, so
        a peer with a smaller limit than ours still gets everything that fits it; a batch of
        one that is still too large becomes a dead letter instead of blocking the queue."""
        metrics.DELIVERY_BATCHES.labels(hop, "split").inc()
        if len(rows) == 1:
            row = rows[0]
            entry_id = row.id
            now = self.clock.now_ms()
            await self.db.run(lambda s: bury(s, [entry_id], TOO_LARGE, error, now))
            dead_letters.report(hop, entry_id, row.item_id, TOO_LARGE)
            return True
        log.warning("%s refused a batch of %d as too large (%s); sending it in halves", hop, len(rows), error)
        half = len(rows) // 2
        if not await self._send(hop, method, rows[:half]):
            await self._defer(hop, rows[half:])
            return False
        return await self._send(hop, method, rows[half:], claim_next)

    async def _failed(self, hop: str, rows: list[Leased], error: str) -> None:
        failures = self._failures.get(hop, 0) + 1
        delay_s = self.backoff.delay_s(failures, self.rng)
        until = self.clock.now_ms() + int(delay_s * 1000)
        self._failures[hop], self._backoff_until[hop] = failures, until
        metrics.DELIVERY_BATCHES.labels(hop, "error").inc()
        metrics.PEER_BACKOFF.labels(peer=hop).set(delay_s)
        log.warning("delivery to %s failed (%r); attempt %d, retry in %.1fs", hop, error, failures, delay_s)
        ids = [r.id for r in rows]

        def record(s: Session) -> None:
            reschedule(s, ids, until, error)
            _save_peer(s, hop, failures, until, error)

        await self.db.run(record)

    async def _settle(
        self,
        hop: str,
        method: str,
        answered: list[Answered],
        unanswered: list[Leased],
        claim_next: bool,
    ) -> None:
        """Apply the receipts of one answered call: final ones settle their entry (as done, or
        as a dead letter when it failed rather than was decided: see dead_letters.py), the
        others and the items without a usable receipt are tried again shortly. With
        ``claim_next`` the same unit claims the peer's next batch, for :meth:`_drain_once`."""
        now = self.clock.now_ms()
        retry_at = now + int(self.backoff.delay_s(1, self.rng) * 1000)
        self._failures[hop], self._backoff_until[hop] = 0, 0
        metrics.PEER_BACKOFF.labels(peer=hop).set(0)
        buried: list[tuple[int, str, str]] = []

        def apply(s: Session) -> Claim | None:
            retry: list[int] = []
            done: list[int] = []
            dead: dict[tuple[str, str], list[int]] = defaultdict(list)
            unusable: dict[str, list[int]] = defaultdict(list)
            records: list[AuditEntry] = []
            for a in answered:
                row, receipt = a.row, a.receipt
                # The verified reply's in_reply_to is the request's digest (verify_response).
                records.append(AuditEntry("out", hop, method, a.reply.in_reply_to, row.item_id))
                records.append(AuditEntry("in", hop, method, request_digest(a.reply), receipt.reason_code))
                if receipt.outcome not in FINAL_OUTCOMES:
                    retry.append(row.id)
                    continue
                if method == DELIVER:
                    problem = self.on_receipt(s, row.item_id, hop, receipt, a.reply.SerializeToString(), now)
                    if problem is not None:
                        log.warning(
                            "%s answered outbox entry %d with an unusable receipt: %s", hop, row.id, problem
                        )
                        unusable[problem].append(row.id)
                        continue
                if is_dead_letter(receipt):
                    reason = receipt.reason_code or "rejected"
                    dead[(reason, receipt.reason)].append(row.id)
                    buried.append((row.id, row.item_id, reason))
                else:
                    done.append(row.id)
            # Set-based: one UPDATE for the settled entries, one per distinct dead-letter reason.
            settle_all(s, done)
            for (reason, detail), ids in dead.items():
                bury(s, ids, reason, detail, now)
            reschedule(s, retry, retry_at, "peer asked to retry")
            reschedule(s, [r.id for r in unanswered], retry_at, "no usable receipt")
            for problem, ids in unusable.items():
                reschedule(s, ids, retry_at, f"no usable receipt: {problem}")
            audit.append(s, records, now)
            _save_peer(s, hop, 0, 0, "", success_ms=now)
            return self._claim(s, hop) if claim_next else None

        if claim_next:
            # Before the queue is read, as in _run: a wake for work committed after the read
            # stays set, so that work waits for no poll.
            self._events.setdefault(hop, asyncio.Event()).clear()
        claimed = await self.db.run(apply)
        if claimed is not None:
            self._claimed[hop] = claimed
        for entry_id, item_id, reason in buried:
            dead_letters.report(hop, entry_id, item_id, reason)


@dataclass(frozen=True)
class Answered:
    """One entry of a batch with its request and the peer's verified receipt."""

    row: Leased
    request: envelope_pb2.Envelope
    reply: envelope_pb2.Envelope
    receipt: peer_pb2.Receipt


def _refused_for_size(e: grpc.aio.AioRpcError) -> bool:
    """A refusal that a smaller batch avoids: gRPC's own message-size limit (RESOURCE_EXHAUSTED
    with no ``yrd-reason``, which a node's own refusals, rate limits included, always carry)
    or a peer whose ``max_batch`` is below our batch size."""
    reason = dict(e.trailing_metadata() or ()).get(REASON_KEY, "")
    if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return not reason
    return e.code() == grpc.StatusCode.INVALID_ARGUMENT and reason == "batch_too_large"


def _describe(e: Exception) -> str:
    if isinstance(e, grpc.aio.AioRpcError):
        return f"{e.code().name}: {e.details()}"
    return str(e)


def _save_peer(s: Session, node_id: str, failures: int, until: int, error: str, success_ms: int = 0) -> None:
    """One upsert on the driver (every settle writes one: an ORM load and flush were two
    statements, and SQLAlchemy's statement path cost more than running it). A time of success
    is written only when there is one."""
    params = {
        "node_id": node_id,
        "failures": failures,
        "backoff_until_ms": until,
        "last_error": error[:500],
        "last_success_ms": success_ms,
    }
    driver(s).execute(_SUCCEEDED if success_ms else _FAILED, params)


_KEPT = ("failures", "backoff_until_ms", "last_error")
_SUCCEEDED = insert_into(PeerState.__table__, on_conflict_update=(*_KEPT, "last_success_ms"))  # type: ignore[attr-defined]
_FAILED = insert_into(PeerState.__table__, on_conflict_update=_KEPT)  # type: ignore[attr-defined]
