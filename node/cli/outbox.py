"""``yrd outbox``: the dead letters of a node's outbox, listed and re-driven.

Works on the node's database directly, so it answers whether or not the node runs; a
running node notices a re-driven entry at its next outbox scan (about a second) and sends it.
What becomes a dead letter, and why a policy refusal does not, is in node/delivery/dead_letters.py.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from core.clock import SystemClock
from core.db import Database
from core.errors import InvalidInput, NotFound, Unavailable
from node.app import open_node_database
from node.config import load_config
from node.delivery.outbox import DeadLetter, dead_letters, redrive

T = TypeVar("T")
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000


def register(subparsers: Any) -> None:
    outbox = subparsers.add_parser("outbox", help="dead letters: what delivery set aside")
    sub = outbox.add_subparsers(dest="outbox_command", required=True, metavar="SUBCOMMAND")
    dead = sub.add_parser("dead", help="list dead letters, newest first")
    dead.add_argument("--config", type=Path, required=True, help="the node's node.toml")
    dead.add_argument(
        "--limit", default=str(DEFAULT_LIMIT), help=f"at most this many (default {DEFAULT_LIMIT})"
    )
    dead.set_defaults(handler=_dead)
    retry = sub.add_parser("retry", help="put one dead letter back in its queue, due now")
    retry.add_argument("--config", type=Path, required=True, help="the node's node.toml")
    retry.add_argument("id", help="the entry id that `yrd outbox dead` shows")
    retry.set_defaults(handler=_retry)


def _dead(args: argparse.Namespace) -> int:
    limit = _positive(args.limit, "limit", MAX_LIMIT)
    letters = _with_db(args.config, lambda db: db.transact(lambda s: dead_letters(s, limit)))
    if not letters:
        print("no dead letters")
        return 0
    for letter in letters:
        print(_line(letter))
    print(f"{len(letters)} dead letter(s); `yrd outbox retry --config {args.config} ID` re-drives one")
    return 0


def _retry(args: argparse.Namespace) -> int:
    entry_id = _positive(args.id, "id", 2**63 - 1)
    now = SystemClock().now_ms()
    found = _with_db(args.config, lambda db: db.transact(lambda s: redrive(s, entry_id, now)))
    if not found:
        raise NotFound(f"outbox entry {entry_id} is not a dead letter", code="not_dead_letter", field="id")
    print(f"outbox entry {entry_id} is due again")
    return 0


def _line(letter: DeadLetter) -> str:
    at = datetime.fromtimestamp(letter.dead_at_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    method = letter.method.rsplit("/", 1)[-1]
    # Item ids and details come from peers: JSON-quoted, so no control character reaches the terminal.
    return (
        f"{letter.id}\t{letter.peer}\t{method}\t{json.dumps(letter.item_id)}\t{letter.reason}\t{at}"
        f"\tattempts={letter.attempts}\t{json.dumps(letter.detail, ensure_ascii=False)}"
    )


def _positive(raw: str, name: str, high: int) -> int:
    bad = InvalidInput(f"{name} must be an integer from 1 to {high}", code="bad_argument", field=name)
    if not raw.isascii() or not raw.isdigit():
        raise bad
    value = int(raw)
    if not 1 <= value <= high:
        raise bad
    return value


def _with_db(config: Path, work: Callable[[Database], T]) -> T:
    # The same opening every start uses: a missing, empty or damaged database is refused,
    # never created afresh by a look at the outbox.
    db = open_node_database(load_config(config))
    try:
        return work(db)
    except SQLAlchemyError as e:
        raise Unavailable(f"cannot read the outbox: {type(e).__name__}", code="outbox_unreadable") from e
    finally:
        db.close()
