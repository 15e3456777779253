"""The ``yrd`` command. Each command group lives in its own module with a
``register(subparsers)`` function; errors become one line naming the field, exit 2.

The groups are found through the ``yrd.commands`` entry points (pyproject.toml), not imported
here by name: the groups that drive a whole federation (demo, bench, simulate) live in
simulations/, which sits above node/, and node must not import upwards."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from core.errors import YrdError

ENTRY_POINT_GROUP = "yrd.commands"
# Help order; a group not listed here (a plug-in) comes after these, by name.
HELP_ORDER = (
    "keys",
    "federation",
    "node",
    "db",
    "users",
    "audit",
    "outbox",
    "policy",
    "bench",
    "simulate",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yrd", description="Yangtze River Delta interoperability gateway")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups = entry_points(group=ENTRY_POINT_GROUP)
    rank = {name: i for i, name in enumerate(HELP_ORDER)}
    for ep in sorted(groups, key=lambda ep: (rank.get(ep.name, len(rank)), ep.name)):
        ep.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except YrdError as e:
        print(f"yrd: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
