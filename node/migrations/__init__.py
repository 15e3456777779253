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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from core.errors import ConfigError

log = logging.getLogger(__name__)
# Alembic says "Context impl SQLiteImpl" at INFO on every run; what ran is reported by the callers.
logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)

BASELINE = "0001"
_LOCK_KEY = 0x5952444D  # "YRDM"
_HERE = Path(__file__).parent


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The revision this code writes and reads."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None  # versions/ ships with the package
    return revision


def known_revisions() -> set[str]:
    return {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}


def current(conn: Connection) -> str | None:
    """The database's revision; None when it has none (empty, or made before migrations)."""
    return MigrationContext.configure(conn).get_current_revision()


def _has_tables(conn: Connection) -> bool:
    return any(name != "alembic_version" for name in sa.inspect(conn).get_table_names())


@dataclass(frozen=True)
class Upgrade:
    before: str | None  # None: an empty database, or one made before migrations
    after: str


def upgrade(engine: Engine) -> Upgrade:
    """Bring the database to the head in one transaction (per the dialect: PostgreSQL's DDL is
    transactional, SQLite's mostly is), refusing a database newer than this code."""
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
