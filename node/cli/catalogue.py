"""``yrd catalogue lint``: check bundles against the catalogue their components live in.

The loader checks a bundle on its own (cycles, names, where each mapping reads from) and
against components in the same file; a bundle naming another member's matter can only be
checked against the union. With ``--config`` that union is the node's own catalogue file
plus the peers' catalogues its database holds (as last verified by catalogue sync), which
is what the lead node will route against; with files, it is those files together (the
samples by default), which is what an operator checks before publishing.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlmodel import select
from yrd.catalogue.v1 import catalogue_pb2

from node.app import open_node_database
from node.config import load_config
from node.models import PeerCatalogue
from registry.bundles import component_problems, is_bundle
from registry.catalogue import SAMPLES_DIR, load_catalogue_file

ServiceDefinition = catalogue_pb2.ServiceDefinition


def register(subparsers: Any) -> None:
    catalogue = subparsers.add_parser("catalogue", help="check catalogue files and their bundles")
    sub = catalogue.add_subparsers(dest="catalogue_command", required=True, metavar="SUBCOMMAND")
    lint = sub.add_parser("lint", help="check every bundle against the union of the catalogues")
    lint.add_argument(
        "files", type=Path, nargs="*", metavar="FILE", help=f"catalogue TOML files (default {SAMPLES_DIR})"
    )
    lint.add_argument("--config", type=Path, help="node config: its catalogue and the peers' it holds")
    lint.set_defaults(handler=lint_command)


def _peer_definitions(config_path: Path) -> tuple[Path, list[ServiceDefinition]]:
    config = load_config(config_path)
    db = open_node_database(config)
    try:
        rows = db.transact(lambda s: list(s.exec(select(PeerCatalogue)).all()))
    finally:
        db.close()
    peers: list[ServiceDefinition] = []
    for row in rows:
        if row.node_id == config.node_id:
            continue
        for entry in catalogue_pb2.Catalogue.FromString(row.catalogue).entries:
            if entry.node_id != config.node_id:
                peers.append(ServiceDefinition.FromString(entry.definition))
    return config.catalogue, peers


def lint_problems(
    own: Iterable[tuple[str, ServiceDefinition]], others: Iterable[ServiceDefinition]
) -> list[str]:
    """One line per problem of each bundle in ``own`` (source, definition), named by file,
    service and TOML key, checked against ``own`` and ``others`` together."""
    own = list(own)
    union: dict[str, ServiceDefinition] = {d.service_id: d for d in others}
    union.update({d.service_id: d for _, d in own})
    lines = []
    for source, defn in own:
        if is_bundle(defn):
            for where, reason in component_problems(defn, union.get):
                lines.append(f"{source}: {defn.service_id}: {where}: {reason}")
    return lines


def lint_command(args: argparse.Namespace) -> int:
    others: list[ServiceDefinition] = []
    files: list[Path] = list(args.files)
    if args.config is not None:
        own_file, others = _peer_definitions(args.config)
        files = files or [own_file]
    files = files or sorted(SAMPLES_DIR.glob("*.toml"))
    own = [(str(path), defn) for path in files for defn in load_catalogue_file(path)[1]]
    problems = lint_problems(own, others)
    for line in problems:
        print(line)
    bundles = sum(1 for _, d in own if is_bundle(d))
    print(f"{len(own)} services, {bundles} bundles, {len(problems)} problems")
    return 1 if problems else 0
