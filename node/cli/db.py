"""``yrd db``: the node database's schema revision, and upgrading it (node/migrations).

``upgrade`` is run with the node stopped (every replica of it), after a backup: a running
node of the old code would go on writing the old schema's rows. It is safe to run twice and
from two replicas at once (the second finds the schema at the head). A SQLite file must
already exist, for the same reason a node refuses a missing one: upgrading a mistyped path
would create an empty database instead of the one holding the applications.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from core.db import Database, check_sqlite_file
from core.errors import Unavailable
from node import migrations
from node.config import load_config


def register(subparsers: Any) -> None:
    db = subparsers.add_parser("db", help="the node database's schema: revision and upgrade")
    sub = db.add_subparsers(dest="db_command", required=True, metavar="SUBCOMMAND")
    upgrade = sub.add_parser("upgrade", help="run the schema migrations up to this code's head")
    upgrade.add_argument("--config", type=Path, required=True, help="the node's node.toml")
    upgrade.set_defaults(handler=_upgrade)
    status = sub.add_parser("status", help="print the database's revision and this code's head")
    status.add_argument("--config", type=Path, required=True, help="the node's node.toml")
    status.set_defaults(handler=_status)


def _open(config: Path) -> Database:
    db = Database(load_config(config).database_url)
    if db.sqlite_path is not None:
        try:
            check_sqlite_file(db.sqlite_path)
        except BaseException:
            db.close()
            raise
    return db


def _upgrade(args: argparse.Namespace) -> int:
    db = _open(args.config)
    try:
        done = migrations.upgrade(db.engine)
    except SQLAlchemyError as e:
        raise Unavailable(
            f"the upgrade failed and was rolled back: {type(e).__name__}", code="db_upgrade"
        ) from e
    finally:
        db.close()
    if done.before == done.after:
        print(f"the schema is at {done.after}, this code's head: nothing to do")
    else:
        print(f"upgraded the schema from {done.before or 'none'} to {done.after}")
    return 0


def _status(args: argparse.Namespace) -> int:
    db = _open(args.config)
    try:
        with db.engine.connect() as conn:
            revision = migrations.current(conn)
    except SQLAlchemyError as e:
        raise Unavailable(f"cannot read the schema revision: {type(e).__name__}", code="db_unreadable") from e
    finally:
        db.close()
    head = migrations.head()
    if revision == head:
        state = "at head"
    elif revision is None or revision in migrations.known_revisions():
        state = "older: run 'yrd db upgrade'"
    else:
        state = "newer than this code: run the newer yrd"
    print(f"database: {revision or 'none'}; code head: {head} ({state})")
    return 0
