"""``yrd audit``: check a node's hash-chained audit log of envelopes, and its checkpoints.

``verify`` finds altered, reordered or removed records inside the chain; with ``--config``
it also checks the chain against the newest checkpoint the node signed of itself, and with
``--checkpoint FILE`` against one a peer holds (exported there by ``yrd audit checkpoints
--peer``). Only the peer's copy catches an operator who cut the tail of their own log and
deleted their own checkpoints with it (node/trust/audit.py has the threat model).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from yrd.peer.v1 import peer_pb2

from core.db import Database
from core.errors import InvalidInput, NotFound, Unavailable, YrdError, clip
from node.config import NodeConfig, load_config
from node.delivery import checkpoints
from node.trust.audit import AuditProblem, check_against, load_chain, verify_chain

FIELDS = ("node_id", "seq", "head_hash", "at_ms", "key_id", "signature")


def register(subparsers: Any) -> None:
    audit = subparsers.add_parser("audit", help="the audit log of envelopes sent and received")
    sub = audit.add_subparsers(dest="audit_command", required=True, metavar="SUBCOMMAND")
    verify = sub.add_parser("verify", help="detect altered, removed or reordered records")
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="the node's node.toml (its database is read)")
    source.add_argument("--database-url", help="read this database instead (the chain alone)")
    verify.add_argument(
        "--checkpoint", type=Path, help="a checkpoint of this node a peer holds (needs --config)"
    )
    verify.set_defaults(handler=_verify)
    export = sub.add_parser("checkpoints", help="print the newest checkpoint held of a node, as JSON")
    export.add_argument("--config", type=Path, required=True, help="the node's node.toml")
    export.add_argument("--peer", help="whose chain (default: this node's own)")
    export.set_defaults(handler=_export)


def checkpoint_json(cp: peer_pb2.AuditCheckpoint) -> str:
    return json.dumps(
        {
            "node_id": cp.node_id,
            "seq": cp.seq,
            "head_hash": cp.head_hash,
            "at_ms": cp.at_ms,
            "key_id": cp.key_id,
            "signature": cp.signature.hex(),
        },
        indent=2,
    )


def read_checkpoint(path: Path) -> peer_pb2.AuditCheckpoint:
    """A checkpoint file, every field checked for its type before anything trusts it."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidInput(
            f"cannot read {path}: {type(e).__name__}", code="bad_checkpoint", field="--checkpoint"
        ) from e
    if not isinstance(doc, dict) or set(doc) != set(FIELDS):
        raise InvalidInput(
            f"expected an object with exactly {', '.join(FIELDS)}",
            code="bad_checkpoint",
            field="--checkpoint",
        )
    for name, kind in (("node_id", str), ("head_hash", str), ("key_id", str), ("signature", str)):
        if not isinstance(doc[name], kind):
            raise InvalidInput("must be a string", code="bad_checkpoint", field=name)
    for name in ("seq", "at_ms"):
        if not isinstance(doc[name], int) or isinstance(doc[name], bool) or not 0 <= doc[name] < 2**63:
            raise InvalidInput("must be a non-negative integer", code="bad_checkpoint", field=name)
    try:
        signature = bytes.fromhex(doc["signature"])
    except ValueError as e:
        raise InvalidInput("must be hex", code="bad_checkpoint", field="signature") from e
    return peer_pb2.AuditCheckpoint(
        node_id=doc["node_id"],
        seq=doc["seq"],
        head_hash=doc["head_hash"],
        at_ms=doc["at_ms"],
        key_id=doc["key_id"],
        signature=signature,
    )


def _verify(args: argparse.Namespace) -> int:
    if args.checkpoint is not None and args.config is None:
        raise InvalidInput(
            "a checkpoint is checked against the node's manifest: pass --config", field="--checkpoint"
        )
    config = load_config(args.config) if args.config else None
    db = Database(args.database_url or (config.database_url if config else ""))
    try:
        records = db.transact(load_chain)
        own = db.transact(lambda s: checkpoints.latest(s, config.node_id)) if config else None
    except SQLAlchemyError as e:
        raise Unavailable(f"cannot read the audit log: {type(e).__name__}", code="audit_unreadable") from e
    finally:
        db.close()
    problems = list(verify_chain(records))
    anchors: list[tuple[str, peer_pb2.AuditCheckpoint]] = []
    if config is not None:
        if own is not None:
            anchors.append(("its own newest checkpoint", checkpoints.to_message(own)))
        if args.checkpoint is not None:
            anchors.append(
                (f"the checkpoint in {args.checkpoint}", _peer_checkpoint(config, args.checkpoint))
            )
    for what, cp in anchors:
        problem = check_against(records, cp.seq, cp.head_hash)
        if problem is not None:
            problems.append(AuditProblem(problem.seq, f"{problem.problem} ({what})"))
    for p in problems:
        print(f"record {p.seq}: {p.problem}")
    if problems:
        print(f"BROKEN: {len(problems)} problem(s) in {len(records)} records")
        return 1
    head = records[-1].hash if records else "(empty)"
    against = "".join(f"; holds record {cp.seq} of {what}" for what, cp in anchors)
    print(f"OK: {len(records)} records, chain intact; head {head}{against}")
    return 0


def _peer_checkpoint(config: NodeConfig, path: Path) -> peer_pb2.AuditCheckpoint:
    from node.app import load_trusted_manifest  # the whole node; not loaded for every yrd command

    cp = read_checkpoint(path)
    if cp.node_id != config.node_id:
        raise InvalidInput(
            f"the checkpoint is of {clip(cp.node_id)}, not of this node {config.node_id}", field="node_id"
        )
    manifest = load_trusted_manifest(config)
    try:
        checkpoints.check_signature(manifest, cp)
    except YrdError as e:
        raise InvalidInput(f"the checkpoint's signature does not verify: {e}", code="bad_checkpoint") from e
    return cp


def _export(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    node_id = args.peer or config.node_id
    db = Database(config.database_url)
    try:
        row = db.transact(lambda s: checkpoints.latest(s, node_id))
    except SQLAlchemyError as e:
        raise Unavailable(f"cannot read the checkpoints: {type(e).__name__}", code="audit_unreadable") from e
    finally:
        db.close()
    if row is None:
        raise NotFound(f"no checkpoint of {clip(node_id)} is held here", code="no_checkpoint", field="--peer")
    print(checkpoint_json(checkpoints.to_message(row)))
    return 0
