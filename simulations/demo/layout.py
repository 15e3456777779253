"""The demo's data directory: node layouts, fixed ports and the counter accounts.

Everything here is idempotent on purpose. A newcomer who stops the demo and runs it again
gets the same node keys, the same databases (so applications survive) and the same
passwords, because they were generated once and kept beside the nodes.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.clock import Clock
from core.db import Database, check_sqlite_file
from core.errors import ConfigError, Conflict, Unauthenticated
from node import migrations
from node.app import open_node_database
from node.config import NodeConfig
from node.counter.users import UserStore
from registry.catalogue import load_catalogue_file
from simulations.local_federation import NodeSpec, prepare

log = logging.getLogger(__name__)

CREDENTIALS_FILE = "credentials.json"
HTTP_OFFSET = 100
CONFIG_NAME = "node.toml"
LOG_NAME = "node.log"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


# One account per role and node, so the demo shows the whole journey with the role each
# step needs: a counter clerk submits, the owner's department decides, a supervisor
# releases four-eyes holds, an operator reads health and the decision log.
ROLES = ("clerk", "owner_clerk", "supervisor", "operator")


@dataclass(frozen=True)
class NodeAccounts:
    clerk: Credentials
    operator: Credentials
    supervisor: Credentials
    owner_clerk: Credentials
    department: str  # the owner clerk's: the first worklist service's in the node's catalogue

    def by_role(self) -> list[tuple[str, Credentials]]:
        return [(role, getattr(self, role)) for role in ROLES]


@dataclass(frozen=True)
class DemoNode:
    """One node of the demo as the supervisor and the printed table need it."""

    spec: NodeSpec
    config: NodeConfig
    accounts: NodeAccounts

    @property
    def config_path(self) -> Path:
        return self.config.data_dir / CONFIG_NAME

    @property
    def log_path(self) -> Path:
        return self.config.data_dir / LOG_NAME

    @property
    def http_url(self) -> str:
        return f"http://{self.config.http_listen}"


def demo_ports(base_port: int, count: int) -> tuple[list[int], list[int]]:
    """gRPC on ``base+i`` and HTTP on ``base+100+i``: fixed, so bookmarks survive restarts."""
    if not 1024 <= base_port <= 65535 - HTTP_OFFSET - count:
        raise ConfigError(
            f"must leave room for {count} gRPC and {count} HTTP ports (1024-{65535 - HTTP_OFFSET - count})",
            code="bad_port",
            field="--base-port",
        )
    grpc_ports = [base_port + i for i in range(count)]
    return grpc_ports, [p + HTTP_OFFSET for p in grpc_ports]


def check_ports_free(ports: Iterable[int]) -> None:
    """Refuse to start over a port in use. A leftover node from an earlier demo would
    otherwise answer in place of the new one and the demo would report a federation
    that is not the one it started."""
    for port in ports:
        with socket.socket() as s:
            # As the servers do: connections of a stopped demo still in TIME_WAIT do not count.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError as e:
                raise ConfigError(
                    f"127.0.0.1:{port} is in use (is an earlier demo still running?); pick another",
                    code="port_in_use",
                    field="--base-port",
                ) from e


def _write_private(path: Path, text: str) -> None:
    """Write atomically with mode 0600: readers never see half a file, and the passwords
    in it are not readable by other local users."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json_private(path: Path, document: object) -> None:
    _write_private(path, json.dumps(document, ensure_ascii=False, indent=2) + "\n")


def _new_credentials(username: str) -> Credentials:
    return Credentials(username, secrets.token_urlsafe(12))


def owner_department(catalogue: Path) -> str:
    """The department whose owner clerk the demo creates: the one behind the node's first
    work-queue service (the one a person decides), else its first service's."""
    _, definitions = load_catalogue_file(catalogue)
    worklist = [d for d in definitions if d.handler == "worklist"] or list(definitions)
    if not worklist:
        raise ConfigError(f"{catalogue} publishes no services", code="empty_catalogue", field="catalogue")
    return worklist[0].department


def load_or_create_credentials(
    data_dir: Path, node_ids: Sequence[str], departments: dict[str, str]
) -> dict[str, NodeAccounts]:
    """Passwords are generated once per node and kept, so a restarted demo prints the same.
    A credentials file from an older demo gains the roles it lacks."""
    path = data_dir / CREDENTIALS_FILE
    stored: dict[str, dict[str, dict[str, str]]] = {}
    if path.exists():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ConfigError(
                f"{path} is not valid JSON; remove the demo directory to start afresh",
                code="bad_credentials_file",
                field="--data-dir",
            ) from e
    accounts: dict[str, NodeAccounts] = {}
    for node_id in node_ids:
        entry = stored.get(node_id, {})
        roles = {}
        for role in ROLES:
            saved = entry.get(role)
            roles[role] = (
                Credentials(saved["username"], saved["password"])
                if saved
                else _new_credentials(f"{role.replace('_', '-')}-{node_id}")
            )
        accounts[node_id] = NodeAccounts(**roles, department=departments[node_id])
    document = {node_id: {role: vars(cred) for role, cred in a.by_role()} for node_id, a in accounts.items()}
    if document != stored:
        write_json_private(path, document)
    return accounts


def upgrade_demo_database(config: NodeConfig) -> None:
    """Bring a kept demo database to this code's schema, as ``yrd db upgrade`` would.

    An operator's node refuses an older schema until they upgrade on purpose; the demo's data
    directory is the demo's own, and a newcomer who pulled newer code expects ``make demo``
    to keep working with the applications it made yesterday."""
    db = Database(config.database_url)
    try:
        if db.sqlite_path is not None:
            check_sqlite_file(db.sqlite_path)  # missing or damaged: refused, never made anew
        done = migrations.upgrade(db.engine)
    finally:
        db.close()
    if done.before != done.after:
        log.info("upgraded %s's demo database from %s to %s", config.node_id, done.before, done.after)


async def ensure_accounts(config: NodeConfig, accounts: NodeAccounts, clock: Clock) -> None:
    """Create the node's accounts (one per role) unless they exist with these passwords.

    Runs before the node process starts, directly on its database, the way ``yrd users add``
    does. An account that exists with another password means the credentials file and the
    databases have parted; guessing would hand the newcomer a login that fails.
    """
    upgrade_demo_database(config)
    db = open_node_database(config)
    store = UserStore(db, clock)
    try:
        for role, cred in accounts.by_role():
            department = accounts.department if role == "owner_clerk" else ""
            try:
                await store.add_user(cred.username, cred.password, role, department)
            except Conflict:
                try:
                    await store.login(cred.username, cred.password)
                except Unauthenticated as e:
                    raise ConfigError(
                        f"account {cred.username} exists with another password; "
                        f"remove {config.data_dir.parent} to start the demo afresh",
                        code="stale_credentials",
                        field="--data-dir",
                    ) from e
    finally:
        store.close()
        db.close()


def _prepare_nodes(
    data_dir: Path, base_port: int, specs: Sequence[NodeSpec], now_ms: int
) -> list[NodeConfig]:
    grpc_ports, http_ports = demo_ports(base_port, len(specs))
    check_ports_free([*grpc_ports, *http_ports])
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)  # one made by an older demo: it holds databases and passwords
    return prepare(data_dir.resolve(), specs, now_ms=now_ms, grpc_ports=grpc_ports, http_ports=http_ports)


async def lay_out(data_dir: Path, base_port: int, specs: Sequence[NodeSpec], clock: Clock) -> list[DemoNode]:
    """Prepare every node directory (keeping keys and databases) and its accounts. Nothing
    else runs yet, so the blocking file work here holds up no one."""
    configs = _prepare_nodes(data_dir, base_port, specs, clock.now_ms())
    departments = {s.node_id: owner_department(c.catalogue) for s, c in zip(specs, configs, strict=True)}
    accounts = load_or_create_credentials(data_dir, [s.node_id for s in specs], departments)
    nodes = []
    for spec, config in zip(specs, configs, strict=True):
        await ensure_accounts(config, accounts[spec.node_id], clock)
        nodes.append(DemoNode(spec, config, accounts[spec.node_id]))
    log.info("demo laid out in %s for %d nodes", data_dir, len(nodes))
    return nodes
