"""SQLite's units run on the event loop, and those asked for in one loop iteration commit as one
group: each unit still commits or rolls back whole, and its caller hears only after the group's
commit."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, String, Table, event, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session

from core.db import Database
from core.errors import Conflict, Unavailable
from core.statements import driver, insert_into
from node.counter.users import UserAccount


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'g.sqlite'}")
    with database.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (k TEXT PRIMARY KEY)")
    return database


def _keys(db: Database) -> list[str]:
    with db.engine.connect() as conn:
        return sorted(r[0] for r in conn.exec_driver_sql("SELECT k FROM t"))


def _insert(k: str) -> Callable[[Session], str]:
    def unit(s: Session) -> str:
        s.execute(text("INSERT INTO t (k) VALUES (:k)"), {"k": k})
        return k

    return unit


async def test_a_failing_unit_rolls_back_alone_and_the_group_commits_once(db: Database) -> None:
    commits: list[int] = []
    event.listen(db.engine, "commit", lambda _conn: commits.append(1))
    threads: set[int] = set()

    def failing(s: Session) -> None:
        threads.add(threading.get_ident())
        s.execute(text("INSERT INTO t (k) VALUES ('b')"))
        raise Conflict("no", code="test")

    units = [
        asyncio.ensure_future(db.run(_insert("a"))),
        asyncio.ensure_future(db.run(failing)),
        asyncio.ensure_future(db.run(_insert("c"))),
        asyncio.ensure_future(db.run(_insert("a"))),  # a duplicate key
    ]
    results = await asyncio.gather(*units, return_exceptions=True)
    assert results[0] == "a" and results[2] == "c"
    assert isinstance(results[1], Conflict)
    assert "IntegrityError" in type(results[3]).__name__
    assert _keys(db) == ["a", "c"]
    assert len(commits) == 1  # the four units, asked for in one loop iteration, together
    assert threads == {threading.get_ident()}  # on the loop: no hand-off to a worker thread
    db.close()


async def test_a_closed_database_refuses_new_work_after_finishing_what_was_asked_for(db: Database) -> None:
    asked = asyncio.ensure_future(db.run(_insert("x")))
    await asyncio.sleep(0)  # the unit is asked for; its group would commit in the next iteration
    db.close()
    assert _keys(db) == ["x"]  # committed by close itself, before the loop ran anything else
    assert await asked == "x"
    with pytest.raises(Unavailable):
        await db.run(_insert("y"))


async def test_a_unit_whose_orm_flush_fails_at_its_end_gets_the_error(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'orm.sqlite'}")
    database.create_all()

    def add(s: Session) -> None:  # pending objects are flushed after the unit returns
        s.add(UserAccount(username="li", role="clerk", password_hash="x", created_at_ms=1))

    await database.run(add)
    with pytest.raises(IntegrityError):
        await database.run(add)
    database.close()


async def test_a_lone_unit_is_its_own_transaction_without_a_savepoint(db: Database) -> None:
    statements: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    savepoints: list[str] = []
    event.listen(db.engine, "savepoint", lambda _conn, name: savepoints.append(name))

    def failing(s: Session) -> None:
        s.execute(text("INSERT INTO t (k) VALUES ('b')"))
        raise Conflict("no", code="test")

    assert await db.run(_insert("a")) == "a"
    with pytest.raises(Conflict):  # the caller gets its unit's own error, and nothing it wrote holds
        await db.run(failing)
    with pytest.raises(IntegrityError):
        await db.run(_insert("a"))
    assert await db.run(_insert("c")) == "c"
    assert _keys(db) == ["a", "c"]
    assert savepoints == [] and not any("SAVEPOINT" in sql for sql in statements)
    db.close()


async def test_sqlite_keeps_one_connection_and_starts_afresh_after_a_failed_commit(
    tmp_path: Path,
) -> None:
    database = Database(f"sqlite:///{tmp_path / 'fk.sqlite'}")
    with database.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE p (id INTEGER PRIMARY KEY)")
        conn.exec_driver_sql(
            "CREATE TABLE c (id INTEGER PRIMARY KEY,"
            " p INTEGER REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED)"
        )
    checkouts: list[int] = []
    event.listen(database.engine, "checkout", lambda *_a: checkouts.append(1))

    def orphan(s: Session) -> None:  # accepted by the statement, refused by the COMMIT
        s.execute(text("INSERT INTO c (id, p) VALUES (1, 99)"))

    def parent(s: Session) -> int:
        s.execute(text("INSERT INTO p (id) VALUES (1)"))
        return 1

    for _ in range(3):
        await database.run(lambda s: s.execute(text("SELECT 1")))
    assert len(checkouts) == 1  # one connection, not one per transaction
    with pytest.raises(IntegrityError):
        await database.run(orphan)
    assert await database.run(parent) == 1  # a clean transaction on a fresh connection
    with database.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM c").scalar() == 0
        assert conn.exec_driver_sql("SELECT count(*) FROM p").scalar() == 1
    assert len(checkouts) == 3  # the second after the failure, then this check's own
    database.close()


async def test_a_unit_holds_the_write_lock_from_its_start_and_statements_dispatch_no_events(
    db: Database,
) -> None:
    """BEGIN IMMEDIATE comes from the dialect, not from an engine event: another writer is kept
    out before the unit writes, and the engine has no listener to dispatch per statement."""
    path = db.sqlite_path
    assert path is not None
    assert not db.engine._has_events  # the cost the dialect hook avoids

    def read_then_try_another_writer(s: Session) -> str:
        s.execute(text("SELECT count(*) FROM t"))  # a read only: a deferred BEGIN takes no lock
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            return str(e)
        finally:
            other.close()
        return "another writer got in"

    assert await db.run(read_then_try_another_writer) == "database is locked"
    db.close()


async def test_a_groups_savepoints_run_on_the_driver_and_fail_as_sqlalchemy_errors(db: Database) -> None:
    """SAVEPOINT and RELEASE come from the dialect's hooks on the driver's connection (not
    SQLAlchemy's statement path: no statement event sees them), still announced as savepoint
    events, and a failing one reaches its unit as SQLAlchemy's error, not the driver's."""
    statements: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    released: list[str] = []
    event.listen(db.engine, "release_savepoint", lambda _conn, name, _ctx: released.append(name))

    def releases_its_own_savepoint(s: Session) -> None:  # the second of the connection's group
        s.connection().exec_driver_sql("RELEASE SAVEPOINT sa_savepoint_2")

    results = await asyncio.gather(
        db.run(_insert("a")), db.run(releases_its_own_savepoint), db.run(_insert("c")), return_exceptions=True
    )
    assert results[0] == "a" and results[2] == "c"
    assert isinstance(results[1], OperationalError) and "no such savepoint" in str(results[1])
    assert released == ["sa_savepoint_1", "sa_savepoint_2", "sa_savepoint_3"]
    assert [sql for sql in statements if "SAVEPOINT" in sql] == ["RELEASE SAVEPOINT sa_savepoint_2"]
    assert _keys(db) == ["a", "c"]
    db.close()


_T = Table("t", MetaData(), Column("k", String, primary_key=True))
_INSERT_T = insert_into(_T)


def _insert_on_driver(k: str) -> Callable[[Session], str]:
    def unit(s: Session) -> str:
        driver(s).execute(_INSERT_T, {"k": k})
        return k

    return unit


async def test_a_unit_of_statements_alone_begins_no_sqlalchemy_savepoint_and_still_rolls_back_alone(
    db: Database,
) -> None:
    """A unit that runs only statements on the driver is held by the group's own SAVEPOINT on
    the driver, without the session's transaction objects; one that uses the session begins
    its savepoint inside it as before. Either rolls back alone, whatever it wrote by either way."""
    savepoints: list[str] = []
    event.listen(db.engine, "savepoint", lambda _conn, name: savepoints.append(name))

    def statements_then_fail(s: Session) -> None:
        driver(s).execute(_INSERT_T, {"k": "b"})
        raise Conflict("no", code="test")

    def statements_then_orm_then_fail(s: Session) -> None:
        driver(s).execute(_INSERT_T, {"k": "d"})
        s.execute(text("INSERT INTO t (k) VALUES ('e')"))
        driver(s).execute(_INSERT_T, {"k": "f"})
        raise Conflict("no", code="test")

    def statements_then_a_failing_flush(s: Session) -> None:
        driver(s).execute(_INSERT_T, {"k": "g"})
        s.add(UserAccount(username="li", role="clerk", password_hash="x", created_at_ms=1))

    UserAccount.__table__.create(db.engine)  # type: ignore[attr-defined]
    await db.run(
        lambda s: s.add(UserAccount(username="li", role="clerk", password_hash="x", created_at_ms=1))
    )
    savepoints.clear()
    results = await asyncio.gather(
        db.run(_insert_on_driver("a")),
        db.run(statements_then_fail),
        db.run(_insert("c")),
        db.run(statements_then_orm_then_fail),
        db.run(statements_then_a_failing_flush),
        db.run(_insert_on_driver("h")),
        return_exceptions=True,
    )
    assert results[0] == "a" and results[2] == "c" and results[5] == "h"
    assert isinstance(results[1], Conflict) and isinstance(results[3], Conflict)
    assert isinstance(results[4], IntegrityError)
    assert _keys(db) == ["a", "c", "h"]
    assert len(savepoints) == 3  # the three units that used the session, and only those
    db.close()


async def test_a_unit_that_breaks_the_groups_savepoint_fails_the_whole_group(db: Database) -> None:
    """Should the group's ROLLBACK TO fail, committing would keep what the failing unit wrote:
    the group fails whole instead, and nothing of it holds."""

    def breaks_it(s: Session) -> None:
        driver(s).execute(_INSERT_T, {"k": "b"})
        s.connection().exec_driver_sql("RELEASE SAVEPOINT yrd_unit")  # its savepoint is gone
        raise Conflict("no", code="test")

    results = await asyncio.gather(
        db.run(_insert_on_driver("a")),
        db.run(breaks_it),
        db.run(_insert_on_driver("c")),
        return_exceptions=True,
    )
    assert all(isinstance(r, Exception) for r in results)
    assert _keys(db) == []
    assert await db.run(_insert_on_driver("d")) == "d"  # a new group starts afresh
    db.close()
