"""``yrd node``: set up and run one node.

``init`` is the first thing a provincial operator runs: it creates the node's key, its TLS
key and self-signed certificate (pinned by the manifest, docs/deploy.md), a config that
loads and the node's empty database at the schema head of node/migrations (the only way a
node database is born: a node that finds its database missing later refuses to start), and
prints the
``[[members]]`` entry to hand to the federation, so the public key travels by copy-paste
and the seed never leaves the directory.
"""

from __future__ import annotations

import argparse
import datetime
import re
import unicodedata
from pathlib import Path
from typing import Any

import tomli_w

from core.errors import ConfigError, Conflict
from core.keys import NodeKey, save_key
from core.toml import NODE_ID_RE, check_division_code
from node.config import NodeConfig, config_from_document
from node.trust.tls import DEFAULT_VALID_DAYS, certificate_fingerprint, create_tls_identity

CONFIG_NAME = "node.toml"
KEY_NAME = "node.key"


def register(subparsers: Any) -> None:
    node = subparsers.add_parser("node", help="set up and run a node")
    sub = node.add_subparsers(dest="node_command", required=True, metavar="SUBCOMMAND")

    init = sub.add_parser("init", help="create a node key and node.toml in a directory")
    init.add_argument("--jurisdiction", required=True, help="6-digit GB/T 2260 code, e.g. 320000")
    init.add_argument("--name", required=True, help="display name, e.g. Jiangsu")
    init.add_argument("--dir", type=Path, required=True, help="the node's data directory")
    init.add_argument("--node-id", help="[a-z0-9-]{2,32}; default: derived from --name")
    init.add_argument("--grpc-listen", default=NodeConfig.grpc_listen, help="host:port")
    init.add_argument("--http-listen", default=NodeConfig.http_listen, help="host:port")
    init.set_defaults(handler=_init_command)

    tls = sub.add_parser("tls-new", help="a new TLS key and certificate beside the current ones, to rotate")
    tls.add_argument("--config", type=Path, required=True, help="the node's node.toml")
    tls.add_argument("--out", default="tls.next", help="file stem in the data directory (.crt and .key)")
    tls.add_argument("--valid-days", type=int, default=DEFAULT_VALID_DAYS)
    tls.set_defaults(handler=_tls_new_command)

    run = sub.add_parser("run", help="run a node until SIGINT or SIGTERM")
    run.add_argument("--config", type=Path, required=True, help="the node's node.toml")
    run.set_defaults(handler=_run_command)


def _run_command(args: argparse.Namespace) -> int:
    from node.config import load_config
    from node.runner import run

    run(load_config(args.config))
    return 0


def _tls_new_command(args: argparse.Namespace) -> int:
    """Step 1 of a rotation (docs/deploy.md): the pair to pin next to the current one."""
    from node.config import load_config

    config = load_config(args.config)
    if not 1 <= args.valid_days <= 3650:
        raise ConfigError("expected 1 to 3650 days", field="--valid-days")
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", args.out):
        raise ConfigError("expected a plain file stem such as tls.next", field="--out")
    cert, key = config.data_dir / f"{args.out}.crt", config.data_dir / f"{args.out}.key"
    der = create_tls_identity(
        config.node_id, cert, key, datetime.datetime.now(datetime.UTC), valid_days=args.valid_days
    )
    print(f"wrote {cert} and {key}")
    print(f"sha256: {certificate_fingerprint(der)}")
    print("\n# Add to this member's tls_certificates in members.toml, next to the current one:")
    print(cert.read_text(), end="")
    return 0


def derive_node_id(name: str) -> str | None:
    """``Jiangsu Province`` -> ``jiangsu-province``; None when the name has too little ASCII
    to make an id (e.g. ``江苏``), so the operator must choose one rather than get ``x1``."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    candidate = re.sub(r"[^a-z0-9]+", "-", ascii_name).strip("-")[:32].strip("-")
    return candidate if NODE_ID_RE.fullmatch(candidate) else None


def jurisdiction_prefix(code: str) -> str:
    """The prefix a member serves: ``320000`` -> ``32``, ``320500`` -> ``3205``."""
    prefix = code
    while len(prefix) > 2 and prefix.endswith("00"):
        prefix = prefix[:-2]
    return prefix


def init_node(
    directory: Path,
    *,
    jurisdiction: str,
    name: str,
    node_id: str | None = None,
    grpc_listen: str = NodeConfig.grpc_listen,
    http_listen: str = NodeConfig.http_listen,
) -> tuple[NodeConfig, NodeKey]:
    """Write ``node.key``, ``node.toml`` and a new database into ``directory``; nothing is
    written unless the whole config is valid and none of them exists yet."""
    from core.db import Database
    from node.app import create_node_database

    check_division_code(jurisdiction, "--jurisdiction")
    node_id = node_id or derive_node_id(name)
    if node_id is None:
        raise ConfigError(f"cannot derive a node id from {name!r}; pass one", field="--node-id")
    doc = {
        "node_id": node_id,
        "name": name,
        "jurisdiction": jurisdiction,
        "data_dir": ".",
        "key_file": KEY_NAME,
        "grpc_listen": grpc_listen,
        "http_listen": http_listen,
        "anchor_manifest": "anchor.manifest",
        "catalogue": "catalogue.toml",
    }
    directory = directory.resolve()
    config = config_from_document(doc, directory)
    config_path = directory / CONFIG_NAME
    db_path = Database(config.database_url).sqlite_path
    for path, what in (
        (config.key_file, "key"),
        (config_path, "config"),
        (db_path, "database"),
        (config.transport.tls_cert, "TLS certificate"),
        (config.transport.tls_key, "TLS key"),
    ):
        if path is not None and path.exists():
            raise Conflict(
                f"{path} already exists; refusing to replace the node's {what}",
                code="file_exists",
                field="--dir",
            )
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)  # the node's own folder: its key, database and config
    key = NodeKey.generate()
    save_key(key, config.key_file)
    create_tls_identity(
        node_id, config.transport.tls_cert, config.transport.tls_key, datetime.datetime.now(datetime.UTC)
    )
    with config_path.open("xb") as f:
        tomli_w.dump(doc, f)
    create_node_database(config).close()
    return config, key


def members_snippet(config: NodeConfig, key: NodeKey) -> str:
    """The ``[[members]]`` entry for this node, ready for the federation's members.toml."""
    member = {
        "node_id": config.node_id,
        "display_name": config.name,
        "jurisdictions": [jurisdiction_prefix(config.jurisdiction)],
        "grpc_endpoint": config.grpc_listen,
        "http_endpoint": f"http://{config.http_listen}",
        "keys": [{"public_key": key.public_key.hex(), "status": "active"}],
        # Pinned: peers trust this certificate for this node and no other (docs/deploy.md).
        "tls_certificates": [config.transport.tls_cert.read_text()],
    }
    return tomli_w.dumps({"members": [member]})


def _init_command(args: argparse.Namespace) -> int:
    config, key = init_node(
        args.dir,
        jurisdiction=args.jurisdiction,
        name=args.name,
        node_id=args.node_id,
        grpc_listen=args.grpc_listen,
        http_listen=args.http_listen,
    )
    print(
        f"wrote {config.key_file}, {config.transport.tls_cert}, {config.transport.tls_key}, "
        f"{config.data_dir / CONFIG_NAME} and the node's database"
    )
    print(f"node_id: {config.node_id}")
    print(f"key_id: {key.key_id}")
    print(f"public_key: {key.public_key.hex()}")
    print("\n# Add to the federation's members.toml (use addresses the other nodes can reach):")
    print(members_snippet(config, key), end="")
    return 0
