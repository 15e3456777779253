"""Audit checkpoints: this node's audit head signed and handed to its peers, and theirs kept.

Every ``interval_s`` (or sooner, once ``every_records`` records were appended since the last
one) the node signs a checkpoint of its chain's head and stores it. On the same beat it asks
each peer it talks to directly for that peer's newest checkpoint (``GetAuditCheckpoint``,
docs/protocol.md section 12), checks the signature against the peer's key in the manifest
and keeps it; and it asks each peer for the newest checkpoint the peer holds of *this* node
and checks its own chain against it, so a cut made behind the node's back is reported
(``yrd_audit_checkpoint_conflicts_total``, an error in the log) while it runs.

What a peer holds is the anchor: ``yrd audit checkpoints --peer X`` on the peer exports it,
and ``yrd audit verify --checkpoint FILE`` checks X's chain against it. The threat model
is in node/trust/audit.py.

Replicas of one node share the table: two signing the same head at once insert the same
(node, seq) once; the other's insert is dropped by the primary key.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from sqlmodel import Session, col, select
from yrd.peer.v1 import peer_pb2

from core.clock import Clock
from core.db import Database, conflict_insert
from core.errors import EnvelopeRejected, InvalidInput, YrdError, clip
from node import metrics
from node.delivery.channels import Channels
from node.delivery.peer_client import parse_body, signed_call
from node.models import AuditCheckpoint, AuditRecord
from node.trust import audit
from node.trust.envelope import EnvelopeVerifier
from node.trust.keyring import Trust
from registry.manifest import TrustedManifest

log = logging.getLogger(__name__)
GET_AUDIT_CHECKPOINT = "/yrd.peer.v1.PeerService/GetAuditCheckpoint"
HASH_HEX_LEN = 64


def latest(s: Session, node_id: str) -> AuditCheckpoint | None:
    """The newest checkpoint held of ``node_id``'s chain (its own, for this node)."""
    stmt = select(AuditCheckpoint).where(col(AuditCheckpoint.node_id) == node_id)
    return s.exec(stmt.order_by(col(AuditCheckpoint.seq).desc()).limit(1)).first()


def to_message(row: AuditCheckpoint) -> peer_pb2.AuditCheckpoint:
    return peer_pb2.AuditCheckpoint(
        node_id=row.node_id,
        seq=row.seq,
        head_hash=row.head_hash,
        at_ms=row.at_ms,
        key_id=row.key_id,
        signature=row.signature,
    )


def answer(s: Session, own_id: str, query: peer_pb2.AuditCheckpointQuery) -> peer_pb2.AuditCheckpointAnswer:
    """What ``GetAuditCheckpoint`` answers: our own newest, or the newest we hold of another."""
    row = latest(s, query.node_id or own_id)
    return (
        peer_pb2.AuditCheckpointAnswer(checkpoint=to_message(row))
        if row
        else peer_pb2.AuditCheckpointAnswer()
    )


def check_signature(manifest: TrustedManifest, cp: peer_pb2.AuditCheckpoint) -> None:
    """Refuse a checkpoint not signed by a key the manifest lists for its node at its time."""
    if cp.seq >= 2**63:  # signed as i64 (docs/protocol.md 12); a peer may send any uint64
        raise InvalidInput("seq is out of range", code="malformed_body", field="seq")
    if len(cp.head_hash) != HASH_HEX_LEN or cp.head_hash.strip("0123456789abcdef"):
        raise InvalidInput(
            "head_hash must be 64 lowercase hex digits", code="malformed_body", field="head_hash"
        )
    public_key = manifest.verify_key(cp.node_id, cp.key_id, cp.at_ms)
    message = audit.checkpoint_signing_input(cp.node_id, cp.seq, cp.head_hash, cp.at_ms)
    try:
        VerifyKey(public_key).verify(message, cp.signature)
    except (BadSignatureError, ValueError) as e:
        raise EnvelopeRejected(
            f"the audit checkpoint of {clip(cp.node_id)} is not signed by its key", code="bad_signature"
        ) from e


def keep(s: Session, cp: peer_pb2.AuditCheckpoint, now_ms: int) -> bool:
    """Store a verified checkpoint; True when it is new. A checkpoint that contradicts one
    held before (the same sequence with another hash, or a head behind the newest held) is
    counted and logged as a conflict and still kept: both signed statements are evidence."""
    held = latest(s, cp.node_id)
    same = s.get(AuditCheckpoint, (cp.node_id, cp.seq))
    if same is not None:
        if same.head_hash != cp.head_hash:
            _conflict(cp.node_id, f"record {cp.seq} was checkpointed with another hash before")
        return False
    if held is not None and cp.seq < held.seq:
        _conflict(cp.node_id, f"its head went back from record {held.seq} to {cp.seq}")
    s.add(
        AuditCheckpoint(
            node_id=cp.node_id,
            seq=cp.seq,
            head_hash=cp.head_hash,
            at_ms=cp.at_ms,
            key_id=cp.key_id,
            signature=cp.signature,
            received_at_ms=now_ms,
        )
    )
    return True


def _conflict(node_id: str, what: str) -> None:
    metrics.AUDIT_CHECKPOINT_CONFLICTS.labels(node=node_id).inc()
    log.error("audit chain of %s: %s (records removed or rewritten)", node_id, what)


def check_own_chain(s: Session, cp: peer_pb2.AuditCheckpoint) -> str | None:
    """What is wrong with this node's chain against a checkpoint of it a peer holds, or None."""
    if cp.seq == 0:
        return None
    record = s.get(AuditRecord, cp.seq)
    if record is None:
        return f"a peer holds a checkpoint of record {cp.seq}, which the chain no longer has"
    if record.hash != cp.head_hash:
        return f"a peer holds record {cp.seq} with another hash"
    return None


class Checkpoints:
    def __init__(
        self,
        *,
        db: Database,
        trust: Trust,
        channels: Channels,
        verifier: EnvelopeVerifier,
        clock: Clock,
        interval_s: float,
        every_records: int,
    ) -> None:
        self.db, self.trust, self.channels, self.verifier, self.clock = db, trust, channels, verifier, clock
        self.interval_s, self.every_records = interval_s, every_records
        self._task: asyncio.Task[None] | None = None

    def sign(self, s: Session, now_ms: int, *, force: bool = False) -> AuditCheckpoint | None:
        """Sign the head when due (``interval_s`` since the last, or ``every_records`` new
        records, or ``force``); None when nothing new is there to sign."""
        seq, head_hash = audit.head(s)
        last = latest(s, self.trust.node_id)
        if seq == 0 or (last is not None and last.seq >= seq):
            return None
        if not (
            force
            or last is None
            or seq - last.seq >= self.every_records
            or now_ms - last.at_ms >= self.interval_s * 1000
        ):
            return None
        key = self.trust.key
        row = AuditCheckpoint(
            node_id=self.trust.node_id,
            seq=seq,
            head_hash=head_hash,
            at_ms=now_ms,
            key_id=key.key_id,
            signature=key.sign(audit.checkpoint_signing_input(self.trust.node_id, seq, head_hash, now_ms)),
            received_at_ms=now_ms,
        )
        values: dict[str, Any] = row.model_dump()
        s.execute(conflict_insert(s, AuditCheckpoint).values(**values).on_conflict_do_nothing())
        metrics.AUDIT_CHECKPOINTS.labels(source="own").inc()
        return row

    async def ask(self, peer: str, node_id: str) -> peer_pb2.AuditCheckpoint | None:
        """The newest checkpoint ``peer`` holds of ``node_id``, signature checked."""
        query = peer_pb2.AuditCheckpointQuery(node_id=node_id)
        body = await signed_call(
            self.channels.peer(peer).GetAuditCheckpoint,
            peer_pb2.GetAuditCheckpointRequest,
            trust=self.trust,
            verifier=self.verifier,
            clock=self.clock,
            peer=peer,
            method=GET_AUDIT_CHECKPOINT,
            body=query.SerializeToString(),
        )
        answer = parse_body(peer_pb2.AuditCheckpointAnswer, body)
        if not answer.HasField("checkpoint"):
            return None
        cp = answer.checkpoint
        if cp.node_id != node_id:
            raise InvalidInput(
                f"asked for {clip(node_id)}, answered for {clip(cp.node_id)}", code="wrong_node"
            )
        check_signature(self.trust.manifest, cp)
        return cp

    async def exchange(self, peer: str) -> None:
        """Fetch and keep ``peer``'s own checkpoint; check our chain against what it holds of us."""
        theirs = await self.ask(peer, peer)
        now = self.clock.now_ms()
        if theirs is not None and await self.db.run(lambda s: keep(s, theirs, now)):
            metrics.AUDIT_CHECKPOINTS.labels(source="peer").inc()
        ours = await self.ask(peer, self.trust.node_id)
        if ours is not None:
            problem = await self.db.run(lambda s: check_own_chain(s, ours))
            if problem is not None:
                _conflict(self.trust.node_id, f"{problem} (held by {peer})")

    async def tick(self) -> AuditCheckpoint | None:
        """Sign the head if a checkpoint is due."""
        now = self.clock.now_ms()
        return await self.db.run(lambda s: self.sign(s, now))

    async def run(self) -> None:
        """Check every few seconds whether a checkpoint is due (the record count may make it
        due early); exchange with the peers once per interval, since every exchange adds
        records to both chains."""
        last_exchange = self.clock.monotonic()
        while True:
            await self.clock.sleep(min(self.interval_s, 10.0))
            await self.tick()
            if self.clock.monotonic() - last_exchange < self.interval_s:
                continue
            last_exchange = self.clock.monotonic()
            for member in list(self.trust.manifest.members):
                peer = member.node_id
                if peer == self.trust.node_id or self.trust.next_hop(peer) != peer:
                    continue
                try:
                    await self.exchange(peer)
                except (grpc.aio.AioRpcError, YrdError) as e:
                    log.debug("audit checkpoint exchange with %s failed: %r", peer, str(e))

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="audit-checkpoints")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
