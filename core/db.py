"""The node's database: SQLite by default, PostgreSQL for replicas sharing one database.

SQLModel is synchronous, so every unit of work runs in a worker thread via
:meth:`Database.run`, one transaction per call. SQLite gets exactly one worker (it
allows one writer; a single thread also removes "database is locked" retries), and
PostgreSQL a small pool. A unit of work either commits whole or not at all, which is
what makes "application + outbox entry in one transaction" hold.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, create_engine

from core.errors import ConfigError, Unavailable

T = TypeVar("T")


def normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and pick the psycopg 3 driver for them."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith(("sqlite://", "postgresql+psycopg://")):
        return url
    raise ConfigError(f"unsupported database URL scheme in {url.split('://', 1)[0]!r}", field="database_url")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class Database:
    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False}
        else:
            kwargs.update(pool_size=4, max_overflow=4, pool_pre_ping=True)
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1 if self.is_sqlite else 4, thread_name_prefix="yrd-db"
        )

    def create_all(self) -> None:
        """Create missing tables of every imported SQLModel table class."""
        SQLModel.metadata.create_all(self.engine)

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def transact(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` in one transaction on the calling thread; commit or roll back whole."""
        with self.session() as s, s.begin():
            return fn(s)

    async def run(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` in one transaction on a database worker thread."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, self.transact, fn)
        except RuntimeError as e:
            if "shutdown" in str(e):
                raise Unavailable("database is closed", code="db_closed") from e
            raise

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except Exception:
            return False

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.engine.dispose()
