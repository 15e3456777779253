"""``yrd data``: the records a node holds for the data catalogue, its disclosure log and its
call meter (docs/sharing.md).

Works on the node's database directly, like ``yrd outbox``, so it answers whether or not the
node runs. ``load`` checks every record of the file against the resource it names (types,
choices, resident id and credit code check characters) before it stores any; subjects are
stored under this node's keyed digest (its key in the ``node_secret`` table), never in the clear.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sqlmodel import Session

from core.errors import InvalidInput
from node.app import load_catalogues, open_node_database
from node.config import NodeConfig, load_config
from node.sharing.checks import check_subject, subject_ref
from node.sharing.records import (
    read_disclosures,
    read_meter,
    read_records_file,
    store_records,
)
from node.trust.secret import local_secret

DAY = "YYYY-MM-DD (China Standard Time)"


def register(subparsers: Any) -> None:
    data = subparsers.add_parser("data", help="held records, disclosure log and call meter of data sharing")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    load = sub.add_parser("load", help="load held records from a JSON file (docs/sharing.md)")
    load.add_argument("--config", type=Path, required=True, help="the node's node.toml")
    load.add_argument("file", type=Path, help="the records file")
    load.set_defaults(handler=_load)
    report = sub.add_parser("report", help="calls per day, resource, asker and outcome")
    report.add_argument("--config", type=Path, required=True, help="the node's node.toml")
    report.add_argument("--since", help=f"first day, {DAY}")
    report.add_argument("--until", help=f"last day, {DAY}")
    report.add_argument("--resource", help="one resource id")
    report.add_argument("--json", action="store_true", help="the report as JSON")
    report.set_defaults(handler=_report)
    log = sub.add_parser("disclosures", help="the disclosure log, newest first")
    log.add_argument("--config", type=Path, required=True, help="the node's node.toml")
    log.add_argument("--subject", help="one person's resident id (or a company's credit code)")
    log.add_argument("--subject-kind", choices=("person", "company"), default="person")
    log.add_argument("--side", choices=("holder", "asker"))
    log.set_defaults(handler=_disclosures)


def load_records(config: NodeConfig, path: Path) -> dict[str, int]:
    """Check and store a records file in a node's database; how many of each resource."""
    _, resources = load_catalogues(config)
    by_id = {r.resource_id: r for r in resources}
    by_resource = read_records_file(path, config.node_id, by_id)
    db = open_node_database(config)
    try:
        return db.transact(lambda s: store_records(s, local_secret(s), by_id, by_resource))
    finally:
        db.close()


def _load(args: argparse.Namespace) -> int:
    counts = load_records(load_config(args.config), args.file)
    for resource_id, n in sorted(counts.items()):
        print(f"{resource_id}\t{n} record(s)")
    return 0


def _day(value: str | None, name: str) -> str | None:
    if value is not None and not (
        len(value) == 10 and value[4] == value[7] == "-" and value.replace("-", "").isdigit()
    ):
        raise InvalidInput(f"{name} must be {DAY}", code="bad_argument", field=name)
    return value


def _report(args: argparse.Namespace) -> int:
    since, until = _day(args.since, "since"), _day(args.until, "until")
    db = open_node_database(load_config(args.config))
    try:
        found = db.transact(lambda s: read_meter(s, since=since, until=until, resource=args.resource))
    finally:
        db.close()
    if args.json:
        print(json.dumps(found, ensure_ascii=False, indent=2))
        return 0
    for row in found["rows"]:
        print(f"{row['day']}\t{row['resource_id']}\t{row['asker_node']}\t{row['outcome']}\t{row['calls']}")
    print(f"{found['total']} call(s)")
    return 0


def _disclosures(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.subject is not None:
        check_subject(args.subject_kind, args.subject, "subject")
    db = open_node_database(config)

    def read(s: Session) -> list[dict[str, Any]]:
        ref = None
        if args.subject is not None:
            ref = subject_ref(local_secret(s), args.subject_kind, args.subject)
        return read_disclosures(s, subject_ref=ref, side=args.side, limit=1000)

    try:
        rows = db.transact(read)
    finally:
        db.close()
    for d in rows:
        # Values came from peers: JSON-quoted, so no control character reaches the terminal.
        department = json.dumps(d["asker_department"], ensure_ascii=False)
        outcome = f"{d['outcome']}:{d['reason_code']}" if d["reason_code"] else d["outcome"]
        print(
            f"{d['at']}\t{d['side']}\t{d['query_id']}\t{d['asker_node']}/{department}"
            f"\t{d['holder_node']}\t{d['resource_id']}\t{outcome}\t{d['basis']}\t{','.join(d['fields'])}"
        )
    print(f"{len(rows)} record(s)")
    return 0
