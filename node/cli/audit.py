"""``yrd audit``: check a node's hash-chained audit log of envelopes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from core.db import Database
from core.errors import Unavailable
from node.config import load_config
from node.trust.audit import load_chain, verify_chain


def register(subparsers: Any) -> None:
    audit = subparsers.add_parser("audit", help="the audit log of envelopes sent and received")
    sub = audit.add_subparsers(dest="audit_command", required=True, metavar="SUBCOMMAND")
    verify = sub.add_parser("verify", help="detect altered, removed or reordered records")
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="the node's node.toml (its database is read)")
    source.add_argument("--database-url", help="read this database instead")
    verify.set_defaults(handler=_verify)


def _verify(args: argparse.Namespace) -> int:
    url = args.database_url or load_config(args.config).database_url
    db = Database(url)
    try:
        records = db.transact(load_chain)
    except SQLAlchemyError as e:
        raise Unavailable(f"cannot read the audit log: {type(e).__name__}", code="audit_unreadable") from e
    finally:
        db.close()
    problems = list(verify_chain(records))
    for p in problems:
        print(f"record {p.seq}: {p.problem}")
    if problems:
        print(f"BROKEN: {len(problems)} problem(s) in {len(records)} records")
        return 1
    head = records[-1].hash if records else "(empty)"
    print(f"OK: {len(records)} records, chain intact; head {head}")
    return 0
