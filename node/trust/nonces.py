"""Seen-nonce stores: the replay defence of the envelope layer.

An envelope is accepted only within the clock skew of its ``created_at``, so a nonce
need only be remembered for that long; ``window_ms`` (by convention twice the skew,
covering clock differences between replicas) bounds the store. The SQL store keeps the
nonces in the node's database so a restart inside the window does not reopen it to
replays, and replicas sharing PostgreSQL see each other's nonces.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol

from sqlalchemy import BigInteger, delete
from sqlmodel import Field, Session, SQLModel

from core.db import Database
from core.errors import ConfigError
from core.statements import driver, insert_into


class NonceStore(Protocol):
    @property
    def window_ms(self) -> int:
        """How long a nonce is remembered; the verifier refuses a window shorter than its skew."""
        ...

    async def remember(self, sender: str, nonce: bytes, created_at_ms: int, now_ms: int) -> bool:
        """Record the nonce; False when ``sender`` already used it within the window."""
        ...

    def remember_in(
        self, session: Session, sender: str, nonce: bytes, created_at_ms: int, now_ms: int
    ) -> bool:
        """:meth:`remember` inside the caller's transaction, so the nonce is used up only if
        what the envelope asked for commits with it (a batch whose transaction fails leaves
        its nonces free for the sender's resend)."""
        ...

    def remember_all_in(self, session: Session, seen: Sequence[Sighting], now_ms: int) -> list[bool]:
        """:meth:`remember_in` for a whole batch at once, one flag per sighting in order; a
        nonce that occurs twice in ``seen`` is fresh the first time only."""
        ...


# One nonce as an envelope carries it: (sender, nonce, created_at_ms).
Sighting = tuple[str, bytes, int]


def _check_window(window_ms: int) -> int:
    if window_ms <= 0:
        raise ConfigError("the nonce window must be positive", field="nonce_window_ms")
    return window_ms


class MemoryNonceStore:
    """For tests and single-shot tools; forgets everything on restart."""

    def __init__(self, window_ms: int = 60_000) -> None:
        self._window_ms = _check_window(window_ms)
        self._seen: dict[tuple[str, bytes], int] = {}
        self._next_prune_ms = 0

    @property
    def window_ms(self) -> int:
        return self._window_ms

    async def remember(self, sender: str, nonce: bytes, created_at_ms: int, now_ms: int) -> bool:
        return self._remember(sender, nonce, created_at_ms, now_ms)

    def remember_in(
        self, session: Session, sender: str, nonce: bytes, created_at_ms: int, now_ms: int
    ) -> bool:
        """No transaction to join: a memory store records at once (tests and tools only)."""
        return self._remember(sender, nonce, created_at_ms, now_ms)

    def remember_all_in(self, session: Session, seen: Sequence[Sighting], now_ms: int) -> list[bool]:
        return [self._remember(sender, nonce, at, now_ms) for sender, nonce, at in seen]

    def _remember(self, sender: str, nonce: bytes, created_at_ms: int, now_ms: int) -> bool:
        if now_ms >= self._next_prune_ms:
            horizon = now_ms - self._window_ms
            self._seen = {k: t for k, t in self._seen.items() if t >= horizon}
            self._next_prune_ms = now_ms + self._window_ms // 2
        key = (sender, nonce)
        if key in self._seen:
            return False
        self._seen[key] = created_at_ms
        return True

    def __len__(self) -> int:
        return len(self._seen)


class SeenNonce(SQLModel, table=True):
    __tablename__: ClassVar[str] = "seen_nonce"

    sender: str = Field(primary_key=True)
    nonce: bytes = Field(primary_key=True)
    created_at_ms: int = Field(sa_type=BigInteger, index=True)


class SqlNonceStore:
    """Duplicate detection by the primary key, so two replicas racing on one nonce cannot
    both win: ``INSERT ... ON CONFLICT DO NOTHING`` inserts for exactly one of them."""

    def __init__(self, db: Database, window_ms: int) -> None:
        self._db = db
        self._window_ms = _check_window(window_ms)
        self._next_prune_ms = 0

    @property
    def window_ms(self) -> int:
        return self._window_ms

    async def remember(self, sender: str, nonce: bytes, created_at_ms: int, now_ms: int) -> bool:
        return await self._db.run(lambda s: self.remember_in(s, sender, nonce, created_at_ms, now_ms))

    def remember_in(
        self, session: Session, sender: str, nonce: bytes, created_at_ms: int, now_ms: int
    ) -> bool:
        return self.remember_all_in(session, [(sender, nonce, created_at_ms)], now_ms)[0]

    def remember_all_in(self, session: Session, seen: Sequence[Sighting], now_ms: int) -> list[bool]:
        """One multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` for the batch: the
        rows it returns are the nonces this call recorded, every other sighting is a replay
        (of an earlier call, of a racing replica's, or of an earlier envelope of this batch)."""
        if not seen:
            return []
        if now_ms >= self._next_prune_ms:
            # Pruning every call would double the writes; every half window keeps the table
            # at most 1.5 windows of traffic.
            session.execute(delete(SeenNonce).where(SeenNonce.created_at_ms < now_ms - self._window_ms))  # type: ignore[arg-type]
            self._next_prune_ms = now_ms + self._window_ms // 2
        first: dict[tuple[str, bytes], int] = {}
        for i, (sender, nonce, _at) in enumerate(seen):
            first.setdefault((sender, nonce), i)
        rows = [{"sender": s, "nonce": n, "created_at_ms": seen[i][2]} for (s, n), i in first.items()]
        # RETURNING, not rowcount: drivers disagree on rowcount for INSERT (psycopg gives -1).
        # ON CONFLICT DO NOTHING waits for a racing replica's transaction, so of two replicas
        # recording one nonce exactly one wins, whichever commits first. One INSERT per nonce
        # on the driver (core/statements.py): SQLAlchemy's multi-row "insertmanyvalues" path
        # cost more per batch than the rows it wrote.
        stored = {(r[0], bytes(r[1])) for r in driver(session).returning_each(_INSERT, rows)}
        return [first[(s, n)] == i and (s, n) in stored for i, (s, n, _at) in enumerate(seen)]


_TABLE = SeenNonce.__table__  # type: ignore[attr-defined]
_INSERT = insert_into(_TABLE, on_conflict_do_nothing=True, returning=(_TABLE.c.sender, _TABLE.c.nonce))
