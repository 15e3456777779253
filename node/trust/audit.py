"""The hash-chained audit log of every envelope sent or received.

Each record's hash is SHA-256 over the previous record's hash and a length-prefixed
encoding of the record's fields, so altering, removing or reordering any record breaks
every hash after it. The chain is appended inside the caller's transaction: the record
of an envelope commits or rolls back with the effect of that envelope. On PostgreSQL a
transaction-scoped advisory lock serialises appenders across replicas; SQLite has one
writer anyway.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import text
from sqlmodel import Session, col, select

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
    """Append entries to the chain within the caller's transaction."""
    entries = list(entries)
    if not entries:
        return
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_KEY})
    last = session.exec(select(AuditRecord).order_by(col(AuditRecord.seq).desc()).limit(1)).first()
    seq, prev = (last.seq, last.hash) if last else (0, GENESIS)
    for e in entries:
        seq += 1
        digest_hex = e.envelope_digest.hex()
        h = record_hash(prev, seq, at_ms, e, digest_hex)
        session.add(
            AuditRecord(
                seq=seq,
                at_ms=at_ms,
                direction=e.direction,
                peer=e.peer,
                method=e.method,
                envelope_digest=digest_hex,
                detail=e.detail,
                prev_hash=prev,
                hash=h,
            )
        )
        prev = h


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
