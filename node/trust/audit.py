"""The hash-chained audit log of every envelope sent or received.

Each record's hash is SHA-256 over the previous record's hash and a length-prefixed
encoding of the record's fields, so altering, removing or reordering any record breaks
every hash after it. The chain is appended inside the caller's transaction: the record
of an envelope commits or rolls back with the effect of that envelope. On PostgreSQL a
transaction-scoped advisory lock serialises appenders across replicas; SQLite has one
writer anyway.

Checkpoints anchor the head outside the node. The chain alone catches altered, reordered or
removed records in the middle, but not records removed from the end: a chain cut after any
record is still a valid chain. So the node signs a checkpoint (its node id, a sequence
number, the hash of that record, the time) from time to time and its peers fetch and keep
it (node/delivery/checkpoints.py, docs/protocol.md section 12). :func:`check_against` then
finds a cut: the chain must still hold the checkpointed record with the checkpointed hash.

Threat model, honestly: this catches an operator (or intruder with the database) who removes
or rewrites records up to the newest checkpoint a peer holds. It does not catch removal of
records appended after that checkpoint (the window is the checkpoint interval), and it does
not stop a node with its own key from signing a checkpoint of a rewritten chain before any
peer fetched the old one; once a peer holds a checkpoint, a rewrite below it shows as a
different hash at that sequence. The node's own stored checkpoints prove nothing against
its own operator (they can be deleted with the records); the peers' copies are the anchor.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import select as sa_select
from sqlalchemy import text
from sqlmodel import Session, col, select

from core.statements import Statement, driver, insert_into
from core.wire import i64, lp
from node.models import AuditRecord

GENESIS = "0" * 64
_ADVISORY_KEY = 0x59524441  # "YRDA"


@dataclass(frozen=True)
class AuditEntry:
    direction: str  # "in" | "out"
    peer: str
    method: str
    envelope_digest: bytes
    detail: str = ""


def _lp(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">I", len(raw)) + raw


def record_hash(prev_hash: str, seq: int, at_ms: int, e: AuditRecord | AuditEntry, digest_hex: str) -> str:
    payload = b"".join(
        [
            b"yrd-audit-v1\x00",
            struct.pack(">QQ", seq, at_ms),
            _lp(e.direction),
            _lp(e.peer),
            _lp(e.method),
            _lp(digest_hex),
            _lp(e.detail),
        ]
    )
    return hashlib.sha256(bytes.fromhex(prev_hash) + payload).hexdigest()


def append(session: Session, entries: Iterable[AuditEntry], at_ms: int) -> None:
    """Append entries to the chain within the caller's transaction.

    Records are written with one executemany on the driver (core/statements.py), not as
    ORM objects: a batch's records cost one statement rather than an object and a flush step
    each. Only this function writes records, so none waits unflushed in the session and the
    head read here is the chain's."""
    entries = list(entries)
    if not entries:
        return
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_KEY})
    sql = driver(session)
    last = sql.first(_HEAD, {})
    seq, prev = (last[0], last[1]) if last else (0, GENESIS)
    rows = []
    for e in entries:
        seq += 1
        digest_hex = e.envelope_digest.hex()
        h = record_hash(prev, seq, at_ms, e, digest_hex)
        rows.append(
            {
                "seq": seq,
                "at_ms": at_ms,
                "direction": e.direction,
                "peer": e.peer,
                "method": e.method,
                "envelope_digest": digest_hex,
                "detail": e.detail,
                "prev_hash": prev,
                "hash": h,
            }
        )
        prev = h
    sql.executemany(_INSERT, rows)


_TABLE = AuditRecord.__table__  # type: ignore[attr-defined]
_HEAD = Statement(sa_select(_TABLE.c.seq, _TABLE.c.hash).order_by(_TABLE.c.seq.desc()).limit(1))
_INSERT = insert_into(_TABLE, numbered=True)  # the chain numbers its records


@dataclass(frozen=True)
class AuditProblem:
    seq: int
    problem: str


def verify_chain(records: Iterable[AuditRecord]) -> Iterator[AuditProblem]:
    """Yield every break in the chain; an intact log yields nothing.

    Records must come in ``seq`` order. A gap in ``seq`` is a removal, a ``prev_hash``
    that is not the previous record's hash is a removal or reordering, and a hash that
    does not match the record's own fields is an alteration.
    """
    expected_seq, prev = 1, GENESIS
    for r in records:
        if r.seq != expected_seq:
            yield AuditProblem(r.seq, f"expected record {expected_seq}: records removed or reordered")
        if r.prev_hash != prev:
            yield AuditProblem(r.seq, "prev_hash does not match the previous record")
        if record_hash(r.prev_hash, r.seq, r.at_ms, r, r.envelope_digest) != r.hash:
            yield AuditProblem(r.seq, "hash does not match the record: altered")
        expected_seq, prev = r.seq + 1, r.hash


def load_chain(session: Session) -> list[AuditRecord]:
    return list(session.exec(select(AuditRecord).order_by(col(AuditRecord.seq))).all())


def checkpoint_signing_input(node_id: str, seq: int, head_hash: str, at_ms: int) -> bytes:
    """The bytes a checkpoint's signature covers (docs/protocol.md section 12)."""
    return b"".join(
        [
            b"yrd-audit-checkpoint-v1\x00",
            lp(node_id.encode()),
            i64(seq),
            lp(head_hash.encode()),
            i64(at_ms),
        ]
    )


def head(session: Session) -> tuple[int, str]:
    """(sequence, hash) of the newest record; (0, GENESIS) for an empty chain."""
    last = session.exec(select(AuditRecord).order_by(col(AuditRecord.seq).desc()).limit(1)).first()
    return (last.seq, last.hash) if last else (0, GENESIS)


def check_against(records: list[AuditRecord], seq: int, head_hash: str) -> AuditProblem | None:
    """A problem when the chain (in ``seq`` order, from 1) does not hold record ``seq`` with
    hash ``head_hash``: records were removed from the tail, or the chain was rewritten."""
    if seq == 0:
        return None
    record = next((r for r in reversed(records) if r.seq == seq), None) if records else None
    if record is None:
        last = records[-1].seq if records else 0
        return AuditProblem(
            seq,
            f"the chain has no record {seq} (it ends at {last}), but a checkpoint holds it: records removed",
        )
    if record.hash != head_hash:
        return AuditProblem(seq, "the record's hash differs from the checkpoint's: the chain was rewritten")
    return None
