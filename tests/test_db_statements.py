"""Statements run on the driver's cursor (core/statements.py) keep what the Core path gave: they
run inside the unit's transaction or savepoint, fill in column defaults, raise SQLAlchemy's
errors and are seen by statement listeners; on SQLite and, when YRD_TEST_PG_URL is set, on
PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    event,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from core.db import Database
from core.errors import Conflict
from core.statements import Statement, driver, insert_into

_META = MetaData()
_ITEMS = Table(
    "item",
    _META,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String, nullable=False, unique=True),
    Column("state", String, nullable=False, default="new"),
    Column("big", BigInteger, nullable=False, default=0),
    Column("data", LargeBinary, nullable=False),
)
_INSERT = insert_into(_ITEMS, returning=(_ITEMS.c.id,))
_INSERT_ONCE = insert_into(_ITEMS, on_conflict_do_nothing=True, returning=(_ITEMS.c.name,))
_BY_NAME = Statement(select(_ITEMS.c.state, _ITEMS.c.data).where(_ITEMS.c.name == bindparam("name")))
# A literal in the statement itself travels with it.
_COUNT_NEW = Statement(select(_ITEMS.c.id).where(_ITEMS.c.state == "new").order_by(_ITEMS.c.id))


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[Database]:
    if request.param == "postgresql":  # skipped unless YRD_TEST_PG_URL is set
        new_pg_schema: Callable[[], str] = request.getfixturevalue("new_pg_schema")
        url = new_pg_schema()
    else:
        url = f"sqlite:///{tmp_path}/s.sqlite"
    database = Database(url)
    _META.create_all(database.engine)
    yield database
    database.close()


def _add(name: str, **extra: object) -> Callable[[Session], int]:
    def unit(s: Session) -> int:
        key: int = driver(s).scalar(_INSERT, {"name": name, "data": b"\x00\xff", **extra})
        return key

    return unit


def _names(db: Database) -> list[str]:
    return db.transact(lambda s: [r[0] for r in s.execute(select(_ITEMS.c.name).order_by(_ITEMS.c.name))])


async def test_a_failing_unit_of_a_group_takes_its_driver_statements_back_with_it(db: Database) -> None:
    """The driver begins the unit's savepoint before its first statement: a unit that writes
    only on the driver and then fails leaves nothing, and the units beside it commit."""

    def failing(s: Session) -> None:
        driver(s).scalar(_INSERT, {"name": "b", "data": b""})
        raise Conflict("no", code="test")

    results = await asyncio.gather(
        db.run(_add("a")), db.run(failing), db.run(_add("c")), return_exceptions=True
    )
    assert isinstance(results[1], Conflict)
    assert _names(db) == ["a", "c"]


async def test_defaults_constants_and_driver_values_round_trip(db: Database) -> None:
    first = await db.run(_add("a"))
    second = await db.run(_add("b", state="old", big=2**40))  # binds as the column's type, not its default's
    assert second > first
    rows = await db.run(lambda s: driver(s).first(_BY_NAME, {"name": "a"}))
    assert rows is not None and rows[0] == "new" and bytes(rows[1]) == b"\x00\xff"
    assert await db.run(lambda s: driver(s).all(_COUNT_NEW, {})) == [(first,)]
    assert await db.run(lambda s: driver(s).first(_BY_NAME, {"name": "none"})) is None


async def test_driver_errors_are_sqlalchemys_and_insert_once_returns_only_new_rows(db: Database) -> None:
    await db.run(_add("a"))
    with pytest.raises(IntegrityError):  # as the Core path raises it, for the callers that catch it
        await db.run(_add("a"))
    fresh = await db.run(
        lambda s: driver(s).returning_each(_INSERT_ONCE, [{"name": n, "data": b""} for n in ("a", "b", "b")])
    )
    assert fresh == [("b",)]
    assert _names(db) == ["a", "b"]


async def test_statement_listeners_see_driver_statements(db: Database) -> None:
    seen: list[tuple[str, bool]] = []

    def listener(_c: object, _cur: object, sql: str, _p: object, _ctx: object, many: bool) -> None:
        seen.append((sql.split(maxsplit=1)[0], many))

    event.listen(db.engine, "before_cursor_execute", listener)
    await db.run(_add("a"))
    await db.run(lambda s: driver(s).executemany(_INSERT_ONCE, [{"name": "x", "data": b""}]))
    assert ("INSERT", False) in seen and ("INSERT", True) in seen
