"""Versioned schema migrations (alembic), shipped with the code.

The database records its revision in ``alembic_version``; the code knows its head (the last
script in ``versions/``). ``yrd db upgrade`` moves a database to the head, ``yrd node init``
creates one there, and a node starts only on a database exactly at the head: an older one
would miss columns the code writes, and a newer one was upgraded by newer code whose meaning
this code cannot know (refusing beats writing rows the newer code misreads).

A database made before migrations existed has tables and no revision; it is taken to be at
the baseline (0001) and upgraded from there, the later steps adding only what is missing.

On PostgreSQL the upgrade holds a transaction-scoped advisory lock, so two replicas started
with ``yrd db upgrade`` at once run it one after the other, the second finding nothing to do;
DDL there is transactional, so a failed upgrade leaves the old schema whole.

Alembic is imported by the functions that need it, not here: with mako and pygments, which it
brings, it is some 8 MB of a node's resident memory, and a node starting on a database at the
head needs none of it (:func:`check_at_head` reads the revision with one SELECT and the head
from the script names).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from core.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)
# Alembic says "Context impl SQLiteImpl" at INFO on every run; what ran is reported by the callers.
logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)

BASELINE = "0001"
_LOCK_KEY = 0x5952444D  # "YRDM"
_HERE = Path(__file__).parent
# versions/v0006_sharing.py holds revision "0006", whose down_revision is "0005".
_SCRIPT_NAME = re.compile(r"v(\d{4})_\w+\.py")
_VERSION_TABLE = "alembic_version"


def _config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The revision this code writes and reads: the highest script number in versions/, read
    from the file names (tests/test_migrations.py checks that alembic, reading the scripts,
    finds the same head)."""
    numbers = [m[1] for p in (_HERE / "versions").iterdir() if (m := _SCRIPT_NAME.fullmatch(p.name))]
    assert numbers  # versions/ ships with the package
    return max(numbers)


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}


def current(conn: Connection) -> str | None:
    """The database's revision; None when it has none (empty, or made before migrations)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def _recorded(conn: Connection) -> list[str]:
    """The revisions the database records, read without alembic (one row when it is at a revision)."""
    if not sa.inspect(conn).has_table(_VERSION_TABLE):
        return []
    return [str(r) for r in conn.execute(sa.text(f"SELECT version_num FROM {_VERSION_TABLE}")).scalars()]


def _has_tables(conn: Connection) -> bool:
    return any(name != _VERSION_TABLE for name in sa.inspect(conn).get_table_names())


@dataclass(frozen=True)
class Upgrade:
    before: str | None  # None: an empty database, or one made before migrations
    after: str


def upgrade(engine: Engine) -> Upgrade:
    """Bring the database to the head in one transaction (per the dialect: PostgreSQL's DDL is
    transactional, SQLite's mostly is), refusing a database newer than this code."""
    from alembic import command

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        before = current(conn)
        _refuse_unknown(before)
        cfg = _config(conn)
        if before is None and _has_tables(conn):
            log.info("database made before versioned migrations: taken to be at %s", BASELINE)
            command.stamp(cfg, BASELINE)
        command.upgrade(cfg, "head")
        after = current(conn)
    assert after is not None
    return Upgrade(before, after)


def _refuse_unknown(revision: str | None) -> None:
    if revision is not None and revision not in known_revisions():
        raise ConfigError(
            f"the database is at schema revision {revision!r}, which this code (head {head()!r}) does "
            "not know: it was upgraded by a newer yrd; run that version, or restore a backup made "
            "before the upgrade",
            code="schema_unknown",
            field="database_url",
        )


def check_at_head(engine: Engine) -> None:
    """Refuse to run a node on a database that is not exactly at this code's head."""
    with engine.connect() as conn:
        if _recorded(conn) == [head()]:
            return  # how every start goes: the cases below name what to do, with alembic's help
        revision = current(conn)
        tables = _has_tables(conn)
    _refuse_unknown(revision)
    if revision is None and not tables:
        raise ConfigError(
            "the database has no tables: create the schema with 'yrd db upgrade --config node.toml' "
            "(a new SQLite node is created by 'yrd node init')",
            code="schema_missing",
            field="database_url",
        )
    if revision != head():
        raise ConfigError(
            f"the database schema is at revision {revision or 'none (made before migrations)'}, "
            f"older than this code's {head()}: run 'yrd db upgrade --config node.toml' (back it up first)",
            code="schema_outdated",
            field="database_url",
        )
