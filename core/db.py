"""The node's database: SQLite by default, PostgreSQL for replicas sharing one database.

SQLModel is synchronous; :meth:`Database.run` is how async code runs a unit of work. A unit
either commits whole or not at all, which is what makes "application + outbox entry in one
transaction" hold.

PostgreSQL gets a small pool of threads, one transaction per unit: its statements wait on the
network, and the event loop must not wait with them.

SQLite runs its units on the event loop itself, in the loop iteration after they were asked
for. Its statements wait on nothing (WAL with ``synchronous=NORMAL``: a commit appends to the
log without an fsync), so a worker thread bought no parallelism, only costs: a queue and a
self-pipe write per hand-off, and the interpreter lock passed between the loop and the worker
at every statement (docs/performance.md, "Sixth round"). One iteration's units are committed
together, each in its own SAVEPOINT of one transaction (a unit that raises is rolled back alone),
and their callers hear after that commit; a unit asked for alone is the whole transaction,
without the savepoint a group needs. Units are short by design: the loop waits for each.

A node's SQLite file is created once, on purpose (:meth:`Database.create`, by ``yrd node
init``), 0600 in a 0700 folder since it holds password hashes, sessions and decisions.
Opening an existing node (:meth:`Database.open_existing`) refuses a file that is missing,
empty or fails ``PRAGMA quick_check``: SQLite would otherwise make a fresh empty file and
the node would start with its applications, accounts and audit chain silently gone.

The schema is versioned by the node's migrations (node/migrations, alembic), which this kernel
does not import: :meth:`Database.create` and :meth:`Database.open_existing` take the step that
creates the schema at its head or checks that it is there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm.session import JoinTransactionMode
from sqlalchemy.pool import PoolProxiedConnection
from sqlmodel import Session, SQLModel, create_engine

from core.errors import ConfigError, Unavailable
from core.statements import bind_driver

T = TypeVar("T")
SchemaStep = Callable[[Engine], object]

log = logging.getLogger(__name__)


def normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and pick the psycopg 3 driver for them."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith(("sqlite://", "postgresql+psycopg://")):
        return url
    raise ConfigError(f"unsupported database URL scheme in {url.split('://', 1)[0]!r}", field="database_url")


# Units of work committed together at most; bounds how long one group holds the write lock
# (and the event loop) and how much one failed commit takes down with it.
MAX_GROUP = 64


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # The driver's own transaction handling (an implicit BEGIN before the first write only)
    # cannot do SAVEPOINTs; SQLAlchemy's documented fix is to turn it off and BEGIN ourselves
    # (_sqlite_begin), which also makes a transaction's reads part of it.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA cache_size=-16000")  # 16 MB of page cache instead of 2 MB
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.close()


def _sqlite_begin(dbapi_connection: PoolProxiedConnection) -> None:
    # IMMEDIATE takes the write lock at BEGIN, waiting under busy_timeout for another process
    # (a CLI command) to finish; a deferred transaction that read first could instead fail at
    # its first write when another writer committed in between. Installed as the dialect's
    # do_begin, not as a "begin" engine event: any engine event makes SQLAlchemy dispatch
    # events around every statement, 5-15 us each and about 35 statements per routed
    # application (docs/performance.md, "Seventh round"). SQLAlchemy wraps do_begin, so a
    # failure (the lock still held after busy_timeout) is raised as its own DBAPIError.
    dbapi_connection.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]


def _on_driver(connection: Connection, sql: str) -> None:
    """A savepoint statement (SAVEPOINT, RELEASE, ROLLBACK TO) on the driver's connection, its
    error raised as SQLAlchemy's DBAPIError: the group's own and the session's (the dialect
    hooks of :func:`_sqlite_verb`) alike."""
    try:
        connection.connection.driver_connection.execute(sql)  # type: ignore[union-attr]
    except sqlite3.Error as e:
        raise DBAPIError.instance(sql, (), e, sqlite3.Error, dialect=connection.dialect) from e


def _sqlite_verb(verb: str) -> Callable[[Connection, str], None]:
    """A dialect hook that runs ``<verb> <savepoint>`` on the driver's connection.

    Each unit of a group opens and releases a SAVEPOINT; through SQLAlchemy's execution path
    (a ``SavepointClause`` compiled from its cache, a cursor, a result) those two statements
    cost 27 us, against 1 us on the driver (timeit; docs/performance.md, "Eighth round"). The names
    are SQLAlchemy's own (``sa_savepoint_N``); errors are raised as its DBAPIError, as they
    were."""

    def run(connection: Connection, name: str) -> None:
        _on_driver(connection, f"{verb} {name}")

    return run


@dataclass(frozen=True)
class _Unit:
    fn: Callable[[Session], Any]
    future: asyncio.Future[Any]


Callback = Callable[[], None]
# Where a unit's session keeps what is to run once its transaction has committed (after_commit).
_AFTER_COMMIT = "yrd.after_commit"


def after_commit(session: Session, callback: Callback) -> None:
    """Run ``callback`` once the transaction of ``session``'s unit has committed, on the event
    loop of the unit's caller and before the caller hears back; never when it rolled back
    (the unit, its savepoint or the group's commit failed). Only for units run by
    :meth:`Database.run`: what happens after the commit is the caller's, and in memory
    (e.g. handing a new outbox entry to its sender), so it is lost with the process, and
    whatever it stands for must be recoverable from the database."""
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


def _committed(session: Session) -> list[Callback]:
    callbacks: list[Callback] = session.info.get(_AFTER_COMMIT, [])
    return callbacks


def _run_callbacks(callbacks: list[Callback]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:  # the transaction holds; only what was to follow it in memory is lost
            log.exception("a callback after a commit failed")


@dataclass(frozen=True)
class _Done:
    """A unit's outcome: its value or error, and what is to run after its commit."""

    unit: _Unit
    error: BaseException | None
    value: Any = None
    callbacks: tuple[Callback, ...] = ()


def _answer(results: list[_Done]) -> None:
    """On the event loop: run what follows each commit, then hand each caller its unit's value
    or error."""
    for done in results:
        _run_callbacks(list(done.callbacks))
        if done.unit.future.done():  # the caller was cancelled; the unit ran (or failed) all the same
            continue
        if done.error is not None:
            done.unit.future.set_exception(done.error)
        else:
            done.unit.future.set_result(done.value)


@contextlib.contextmanager
def private_files() -> Iterator[None]:
    """Files created inside are 0600 (SQLite's -wal and -shm too, on first open).

    The umask is process-wide; this is used only while a node is being set up, before
    any other thread creates files.
    """
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def check_sqlite_file(path: Path) -> None:
    """Refuse a node database that is missing, empty or damaged, naming what to do."""
    if not path.exists():
        raise ConfigError(
            f"the database {path} is missing. This node has other state (its key and config), so "
            "starting on a new empty database would silently lose its applications, accounts and "
            "audit chain; restore the file from a backup (a new node is created by 'yrd node init')",
            code="database_missing",
            field="database_url",
        )
    if path.stat().st_size == 0:
        raise ConfigError(
            f"the database {path} is empty (0 bytes); restore it from a backup "
            "(a new node is created by 'yrd node init')",
            code="database_empty",
            field="database_url",
        )
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)
        try:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
            tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise ConfigError(
            f"the database {path} cannot be read ({e}); restore it from a backup",
            code="database_corrupt",
            field="database_url",
        ) from e
    if problems != ["ok"]:
        raise ConfigError(
            f"the database {path} fails PRAGMA quick_check ({'; '.join(problems[:3])}); "
            "restore it from a backup",
            code="database_corrupt",
            field="database_url",
        )
    if tables == 0:
        raise ConfigError(
            f"the database {path} has no tables; restore it from a backup "
            "(a new node is created by 'yrd node init')",
            code="database_empty",
            field="database_url",
        )


def conflict_insert(s: Session, table: Any) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that takes ``on_conflict_do_nothing`` / ``on_conflict_do_update`` on the
    session's database: the two dialects this code runs on spell it alike but build it apart."""
    if s.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


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
            dialect = self.engine.dialect
            dialect.do_begin = _sqlite_begin  # type: ignore[method-assign]
            dialect.do_savepoint = _sqlite_verb("SAVEPOINT")  # type: ignore[method-assign,assignment]
            dialect.do_release_savepoint = _sqlite_verb("RELEASE SAVEPOINT")  # type: ignore[method-assign,assignment]
            dialect.do_rollback_to_savepoint = _sqlite_verb("ROLLBACK TO SAVEPOINT")  # type: ignore[method-assign,assignment]
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="yrd-db")
        # SQLite: the units asked for on each event loop since its last group, and the one
        # connection every group uses, kept open between groups.
        self._pending: dict[asyncio.AbstractEventLoop, list[_Unit]] = {}
        self._conn: Connection | None = None
        # What every session of a unit run by run() carries in its info, for the helpers that
        # units call (e.g. the outbox's hand-off to the sender, node/delivery/outbox.py).
        self.session_info: dict[str, Any] = {}
        self._closed = False
        self._lock = threading.Lock()

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file, or None (PostgreSQL, or an in-memory database)."""
        if not self.is_sqlite:
            return None
        name = self.engine.url.database
        return Path(name) if name and name != ":memory:" else None

    def create(self, init_schema: SchemaStep) -> None:
        """Create a new node's database (0600, in a 0700 folder) with ``init_schema``, refusing
        to touch one that holds anything: a new node starts empty, an old one is never re-created."""
        path = self.sqlite_path
        if path is not None:
            if path.exists() and path.stat().st_size > 0:
                raise ConfigError(
                    f"{path} already exists; refusing to create a database over it",
                    code="database_exists",
                    field="database_url",
                )
            # A folder that exists is the operator's to set (it may be shared); a new one is private.
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with private_files():
            init_schema(self.engine)
        self.secure_files()

    def open_existing(self, check_schema: SchemaStep) -> None:
        """Check an existing node's database, its file and then (``check_schema``) its schema."""
        path = self.sqlite_path
        if path is not None:
            check_sqlite_file(path)
            if path.parent.stat().st_mode & 0o077:
                log.warning("the database folder %s is open to other local users; chmod 700 it", path.parent)
        with private_files():
            check_schema(self.engine)
        self.secure_files()

    def secure_files(self) -> None:
        """SQLite makes -wal and -shm beside the file with the process umask; tighten all three."""
        path = self.sqlite_path
        if path is None:
            return
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(p, 0o600)

    def create_all(self) -> None:
        """Create the tables of every imported SQLModel table class, unversioned: for tests and
        throwaway tools. A node's database is made and upgraded by its migrations instead."""
        SQLModel.metadata.create_all(self.engine)

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def transact(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` in one transaction on the calling thread; commit or roll back whole."""
        with self.session() as s, s.begin():
            return fn(s)

    async def run(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` in one transaction: on SQLite on this event loop, in the next iteration
        (with the other units asked for in this one, each in its own savepoint), on PostgreSQL on
        a worker thread. Its effects are committed when this returns."""
        loop = asyncio.get_running_loop()
        if self.is_sqlite:
            if self._closed:
                raise Unavailable("database is closed", code="db_closed")
            future: asyncio.Future[T] = loop.create_future()
            pending = self._pending.setdefault(loop, [])
            if not pending:
                loop.call_soon(self._commit_pending, loop)
            pending.append(_Unit(fn, future))
            return await future
        try:
            value, callbacks = await loop.run_in_executor(self._pool, self._transact_pooled, fn)
        except RuntimeError as e:
            if "shutdown" in str(e):
                raise Unavailable("database is closed", code="db_closed") from e
            raise
        _run_callbacks(callbacks)
        return value

    def _transact_pooled(self, fn: Callable[[Session], T]) -> tuple[T, list[Callback]]:
        """PostgreSQL's unit on a pool thread; what follows its commit runs back on the loop."""
        with Session(self.engine, expire_on_commit=False, info=dict(self.session_info)) as s:
            with s.begin():
                value = fn(s)
            return value, _committed(s)

    def _commit_pending(self, loop: asyncio.AbstractEventLoop) -> None:
        """On ``loop``: commit the units asked for there since the last group, and answer them."""
        units = self._pending.pop(loop, [])
        for start in range(0, len(units), MAX_GROUP):
            group = units[start : start + MAX_GROUP]
            with self._lock:  # one connection: a Database shared by two threads' loops takes turns
                results = self._commit_alone(group[0]) if len(group) == 1 else self._commit_together(group)
            _answer(results)

    def _connection(self) -> Connection:
        """SQLite's connection, opened once and kept: a checkout from the pool and its return
        (with the reset that rolls back) per transaction cost about as much CPU as an empty
        transaction itself, and a trickle of lone units pays it for every one."""
        if self._conn is None:
            self._conn = self.engine.connect()
        return self._conn

    def _drop_connection(self) -> None:
        """After a failure, or when the database closes: back to the pool, whose reset rolls back
        anything a failed COMMIT or ROLLBACK left open, so the next group starts clean."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _commit_alone(self, unit: _Unit) -> list[_Done]:
        """A unit that found nobody queued behind it (an idle node, a slow trickle) is the whole
        transaction: it commits or rolls back whole without a SAVEPOINT and its RELEASE, two
        statements that were all the isolation of a group of one bought."""
        try:
            conn = self._connection()
            with conn.begin():
                # The session joins the connection's transaction, which commits when the block
                # ends; its rollback (a unit or its flush raising) is the transaction's too.
                s = self._unit_session(conn, "rollback_only")
                bind_driver(s, conn)
                try:
                    value = unit.fn(s)
                    s.flush()
                    callbacks = _committed(s)
                finally:
                    s.close()
            return [_Done(unit, None, value, tuple(callbacks))]
        except Exception as e:  # rolled back (the unit, its flush or the commit failed)
            self._drop_connection()
            return [_Done(unit, e)]

    def _unit_session(self, conn: Connection, join: JoinTransactionMode) -> Session:
        return Session(
            bind=conn, expire_on_commit=False, join_transaction_mode=join, info=dict(self.session_info)
        )

    def _commit_together(self, group: list[_Unit]) -> list[_Done]:
        """Each unit in its own SAVEPOINT of one transaction, committed once.

        The unit's SAVEPOINT is the driver's own, and its session begins a transaction of its
        own (a nested one, its savepoint inside the unit's) only if the unit uses the ORM:
        most units run only statements on the driver (core/statements.py), and SQLAlchemy's
        transaction objects around a savepoint cost them 35-50 µs where SAVEPOINT and
        RELEASE cost 1 (docs/performance.md, "Twelfth round")."""
        results: list[_Done] = []
        try:
            conn = self._connection()
            with conn.begin():
                for unit in group:
                    s = self._unit_session(conn, "create_savepoint")
                    bind_driver(s, conn)
                    # The unit protocol's own statements are outside the unit's try: should one
                    # fail (a ROLLBACK TO above all), the group fails whole rather than commit
                    # what a unit left half done.
                    _on_driver(conn, "SAVEPOINT yrd_unit")
                    try:
                        value = unit.fn(s)
                        if s.new or s.dirty or s.deleted:
                            s.flush()  # begins the session's own savepoint if not yet
                        if s.in_transaction():
                            s.commit()  # releases the session's savepoint
                    except Exception as e:  # rolled back to its savepoint; the others go on
                        s.close()  # rolls back the session's savepoint, if it began one
                        _on_driver(conn, "ROLLBACK TO SAVEPOINT yrd_unit")
                        results.append(_Done(unit, e))
                    else:
                        results.append(_Done(unit, None, value, tuple(_committed(s))))
                    finally:
                        s.close()
                    _on_driver(conn, "RELEASE SAVEPOINT yrd_unit")
        except Exception as e:  # the commit (or BEGIN) failed: no unit of the group holds
            self._drop_connection()
            log.warning(
                "a group of %d database transactions failed to commit: %s", len(group), type(e).__name__
            )
            own = {id(r.unit): r.error for r in results if r.error is not None}
            results = [_Done(unit, own.get(id(unit), e)) for unit in group]
        return results

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except Exception:
            return False

    def close(self) -> None:
        """Refuse new units; what was asked for and not yet run still commits first (its callers
        hear unless their loop is gone)."""
        self._closed = True
        for loop in list(self._pending):
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting
                self._commit_pending(loop)
        with self._lock:
            self._drop_connection()
        self._pool.shutdown(wait=True)
        self.engine.dispose()
