"""Statements of the per-application path, compiled once and run on the driver's own cursor.

SQLAlchemy's Core path costs, per statement, far more than SQLite takes to run it: a cache key
built from the statement, a look-up in the compiled cache, an execution context, the
parameters processed and a result object around the cursor. Under load that was 35 % of a
node's CPU against 10 % in the driver itself (docs/performance.md, "Seventh round"). The
statements an application passes through many times are therefore declared as
:class:`Statement`: still built with SQLAlchemy Core from the models' tables (one declaration
of each table, SQL that follows the dialect), but compiled once per dialect and executed on
the DB-API cursor of the unit's connection, inside the unit's transaction or savepoint.

What that path does not do, callers do: every parameter the statement holds no value for is
given (a server default is never left to fill one; :func:`insert_into` carries the columns'
scalar defaults), values are what the driver takes (the tables on this path hold text,
integers and bytes only), and rows come back as plain tuples. Driver errors are raised as SQLAlchemy's
(``IntegrityError`` and the rest), as the Core path raises them, and a listener for
``before_cursor_execute`` still sees each statement (tests count statements that way).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Table, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import SessionTransaction
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter, ClauseElement
from sqlalchemy.sql.schema import ScalarElementColumnDefault
from sqlmodel import Session

Params = Mapping[str, Any]
Row = tuple[Any, ...]


@dataclass(frozen=True)
class _Compiled:
    sql: str
    # qmark drivers (sqlite3) take a sequence, which this takes out of the parameters in the
    # SQL's order (an itemgetter: a generator per statement cost more than the driver's
    # execute); named ones (psycopg) take the mapping itself.
    positional: Callable[[Params], Any] | None
    # Values the statement itself holds (a literal in a WHERE), under their bind names.
    constants: Mapping[str, Any]


def _in_order(names: Sequence[str]) -> Callable[[Params], Any]:
    if len(names) == 1:  # itemgetter of one name gives the value, not a 1-tuple
        return lambda params: (params[names[0]],)
    return operator.itemgetter(*names) if names else lambda _params: ()


class Statement:
    """A Core statement compiled on first use per dialect, then run by :class:`Driver`; given as
    one construct, or one per dialect name where they spell it apart (``ON CONFLICT``)."""

    __slots__ = ("_by_dialect", "statement")

    def __init__(self, statement: ClauseElement | Mapping[str, ClauseElement]) -> None:
        self.statement = statement
        self._by_dialect: dict[str, _Compiled] = {}

    def compiled(self, dialect: Dialect) -> _Compiled:
        found = self._by_dialect.get(dialect.name)
        if found is None:
            found = self._by_dialect[dialect.name] = self._compile(dialect)
        return found

    def _compile(self, dialect: Dialect) -> _Compiled:
        construct = (
            self.statement if isinstance(self.statement, ClauseElement) else self.statement[dialect.name]
        )
        compiled = construct.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        binds = compiled.binds  # by the names the SQL uses (an anonymous literal's is made up)
        if any(b.expanding for b in binds.values()):
            raise TypeError("an expanding IN parameter cannot be compiled once; use the Core path")
        constants = {name: b.effective_value for name, b in binds.items() if not b.required}
        positional = _in_order(compiled.positiontup or ()) if compiled.positional else None
        return _Compiled(compiled.string, positional, constants)


def insert_into(
    table: Table,
    *,
    numbered: bool = False,
    on_conflict_do_nothing: bool = False,
    on_conflict_update: Sequence[str] = (),
    conflict_on: Sequence[Column[Any]] = (),
    returning: Sequence[Column[Any]] = (),
) -> Statement:
    """An INSERT of one row of ``table``, every column a parameter named as the column except
    an integer key the database numbers (unless the caller numbers rows itself: ``numbered``);
    a column with a scalar default takes it when not given, as on the Core path.
    ``on_conflict_do_nothing`` makes it insert only a row whose keys are new (with
    ``returning``, the rows returned are the ones inserted); ``on_conflict_update`` names the
    columns that a row whose primary key exists takes from this one (an upsert).
    ``conflict_on`` names the unique key whose conflict is meant (by default any key's for
    doing nothing, the primary key's for an upsert); a conflict on another still raises."""
    auto = None if numbered else table.autoincrement_column
    values: dict[str, BindParameter[Any]] = {
        c.name: bindparam(c.name, c.default.arg, type_=c.type)
        if isinstance(c.default, ScalarElementColumnDefault)
        else bindparam(c.name, type_=c.type)
        for c in table.columns
        if c is not auto
    }
    if not (on_conflict_do_nothing or on_conflict_update):
        plain = table.insert().values(values)
        return Statement(plain.returning(*returning) if returning else plain)
    per_dialect: dict[str, ClauseElement] = {}
    for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql)):
        insert = dialect.insert(table).values(values)
        stmt = (
            insert.on_conflict_do_update(
                index_elements=list(conflict_on or table.primary_key.columns),
                set_={c: insert.excluded[c] for c in on_conflict_update},
            )
            if on_conflict_update
            else insert.on_conflict_do_nothing(index_elements=list(conflict_on) or None)
        )
        per_dialect[name] = stmt.returning(*returning) if returning else stmt
    return Statement(per_dialect)


class Driver:
    """The DB-API cursor of one session's connection, for :class:`Statement`s."""

    __slots__ = ("_conn", "_cursor", "_dialect", "_error", "transaction")

    def __init__(self, conn: Connection, transaction: SessionTransaction | None) -> None:
        self.transaction = transaction
        self._conn = conn
        self._dialect = conn.dialect
        self._cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        self._error: type[Exception] = conn.dialect.loaded_dbapi.Error

    def _args(self, c: _Compiled, params: Params) -> Any:
        if c.constants:
            params = {**c.constants, **params}
        return params if c.positional is None else c.positional(params)

    def _execute(self, stmt: Statement, params: Params) -> Any:
        c = stmt.compiled(self._dialect)
        args = self._args(c, params)
        if self._conn._has_events or self._conn.engine._has_events:  # only where someone listens
            self._conn.dispatch.before_cursor_execute(self._conn, self._cursor, c.sql, args, None, False)
        try:
            self._cursor.execute(c.sql, args)
        except self._error as e:
            raise DBAPIError.instance(c.sql, args, e, self._error, dialect=self._dialect) from e
        return self._cursor

    def execute(self, stmt: Statement, params: Params) -> None:
        """Run a statement that returns no rows."""
        self._execute(stmt, params)

    def executemany(self, stmt: Statement, rows: Sequence[Params]) -> None:
        """Run a statement that returns no rows once per parameter set, in one driver call."""
        if not rows:
            return
        c = stmt.compiled(self._dialect)
        args = [self._args(c, params) for params in rows]
        if self._conn._has_events or self._conn.engine._has_events:
            self._conn.dispatch.before_cursor_execute(self._conn, self._cursor, c.sql, args, None, True)
        try:
            self._cursor.executemany(c.sql, args)
        except self._error as e:
            raise DBAPIError.instance(c.sql, args, e, self._error, dialect=self._dialect) from e

    def first(self, stmt: Statement, params: Params) -> Row | None:
        row: Row | None = self._execute(stmt, params).fetchone()
        return row

    def scalar(self, stmt: Statement, params: Params) -> Any:
        """The first column of the one row the statement returns."""
        row = self._execute(stmt, params).fetchone()
        if row is None:
            raise LookupError("the statement returned no row")
        return row[0]

    def all(self, stmt: Statement, params: Params) -> list[Row]:
        rows: list[Row] = self._execute(stmt, params).fetchall()
        return rows

    def returning_each(self, stmt: Statement, rows: Sequence[Params]) -> list[Row]:
        """Run an ``INSERT ... RETURNING`` once per parameter set; the rows it returned."""
        found: list[Row] = []
        for params in rows:
            found.extend(self._execute(stmt, params).fetchall())
        return found


_DRIVER = "yrd.driver"


def driver(session: Session) -> Driver:
    """The driver of ``session``'s connection, in its transaction (begun now if not yet), or
    the one :func:`bind_driver` gave a session whose transaction has not begun."""
    found: Driver | None = session.info.get(_DRIVER)
    if found is not None and found.transaction is session.get_transaction():
        return found
    conn = session.connection()
    made = Driver(conn, session.get_transaction())
    session.info[_DRIVER] = made
    return made


def bind_driver(session: Session, conn: Connection) -> None:
    """Give a unit's session, before its transaction begins, the driver of ``conn``, on which
    the caller has already opened the unit's transaction or SAVEPOINT (core/db.py). A unit
    that runs only statements (:class:`Statement`) then never begins the session's own transaction: its
    SessionTransaction and, in a group, a nested transaction and its savepoint cost 35-50 µs
    a unit, where the statements themselves cost a few (docs/performance.md, "Twelfth
    round"). A unit that does use the ORM begins it as before, inside the caller's."""
    session.info[_DRIVER] = Driver(conn, None)
