"""``yrd users``: counter accounts on a node's database.

A password given on the command line lands in shell history, so ``--password-stdin`` is
offered, and when neither is given a strong one is generated and printed exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.clock import SystemClock
from core.db import Database
from core.errors import InvalidInput
from node.config import NodeConfig, load_config
from node.counter.users import OWNER_CLERK, ROLES, Account, UserStore
from registry.catalogue import load_catalogue_file


def register(subparsers: Any) -> None:
    users = subparsers.add_parser("users", help="manage accounts (clerk, owner_clerk, supervisor, operator)")
    sub = users.add_subparsers(dest="users_command", required=True, metavar="SUBCOMMAND")

    add = sub.add_parser("add", help="create an account")
    add.add_argument("--config", type=Path, required=True, help="the node's TOML config")
    add.add_argument("--username", required=True)
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument(
        "--department",
        default="",
        help="an owner_clerk's department, exactly as the node's catalogue names it (only for owner_clerk)",
    )
    secret = add.add_mutually_exclusive_group()
    secret.add_argument("--password", help="the password (visible in shell history; prefer --password-stdin)")
    secret.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.set_defaults(handler=add_command)

    show = sub.add_parser("list", help="list accounts")
    show.add_argument("--config", type=Path, required=True, help="the node's TOML config")
    show.set_defaults(handler=list_command)


def _open_store(config: Path) -> tuple[Database, UserStore]:
    from node.app import open_node_database  # the whole node; not loaded for every yrd command

    db = open_node_database(load_config(config))
    return db, UserStore(db, SystemClock())


def check_department(config: NodeConfig, role: str, department: str) -> None:
    """An owner clerk's department must be one the node's own catalogue names, or the
    account would see an empty work queue forever; errors name the flag."""
    if role != OWNER_CLERK:
        if department:
            raise InvalidInput(
                f"--department is only for --role {OWNER_CLERK}",
                code="unexpected_department",
                field="--department",
            )
        return
    if not department:
        raise InvalidInput(
            f"--role {OWNER_CLERK} needs --department", code="missing_department", field="--department"
        )
    _, definitions = load_catalogue_file(config.catalogue)
    known = sorted({d.department for d in definitions})
    if department not in known:
        raise InvalidInput(
            f"{department!r} is not a department of this node's catalogue ({', '.join(known)})",
            code="unknown_department",
            field="--department",
        )


def add_command(args: argparse.Namespace) -> int:
    generated = args.password is None and not args.password_stdin
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise InvalidInput("no password on stdin", code="missing_field", field="--password-stdin")
    else:
        password = secrets.token_urlsafe(18) if generated else args.password
    check_department(load_config(args.config), args.role, args.department)
    db, store = _open_store(args.config)
    try:
        account = asyncio.run(store.add_user(args.username, password, args.role, args.department))
    finally:
        store.close()
        db.close()
    where = f" of {account.department}" if account.department else ""
    print(f"added {account.role} {account.username}{where}")
    if generated:
        print(f"password: {password}")
        print("(shown once; it is stored only as an argon2id hash)")
    return 0


def format_accounts(accounts: list[Account]) -> str:
    lines = [f"{'USERNAME':<24} {'ROLE':<11} {'CREATED':<25} DEPARTMENT"]
    for a in accounts:
        created = datetime.fromtimestamp(a.created_at_ms / 1000, UTC).isoformat(timespec="seconds")
        lines.append(f"{a.username:<24} {a.role:<11} {created:<25} {a.department}".rstrip())
    return "\n".join(lines)


def list_command(args: argparse.Namespace) -> int:
    db, store = _open_store(args.config)
    try:
        accounts = asyncio.run(store.list_users())
    finally:
        store.close()
        db.close()
    print(format_accounts(accounts))
    return 0
