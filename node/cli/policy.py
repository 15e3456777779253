"""``yrd policy``: lint, test, explain and sign policy bundles, and read the decision log.

Lint, test and explain read a bundle without its signature, because they run on an
operator's working copy before it is signed; only the node (policies.holder) insists on
one. Their default universe is the catalogues in registry/samples, so running them in
the repository needs no flags.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.clock import SystemClock
from core.errors import ConfigError, InvalidInput, NotFound
from core.keys import load_key
from node.config import key_passphrase
from policies.cases import case_file_for, load_cases, run_case_file
from policies.catalogue import (
    CatalogueService,
    read_catalogues,
    read_data_ids,
    read_members,
    sample_catalogue_paths,
)
from policies.engine import PolicyEngine
from policies.explain import explain
from policies.lint import lint_bundle
from policies.model import PolicyInput
from policies.schema import load_bundle
from policies.signing import sign_bundle

BUNDLES_DIR = Path(__file__).resolve().parents[2] / "policies" / "bundles"


def register(subparsers: Any) -> None:
    policy = subparsers.add_parser("policy", help="lint, test, explain and sign policy bundles")
    sub = policy.add_subparsers(dest="policy_command", required=True, metavar="SUBCOMMAND")

    lint = sub.add_parser("lint", help="schema and semantic checks of bundles (and their test files)")
    lint.add_argument("bundles", type=Path, nargs="+", metavar="PATH", help="bundle, test file or folder")
    _universe_args(lint)
    lint.add_argument("--members", type=Path, help="members file: also check peer node ids")
    lint.set_defaults(handler=lint_command)

    test = sub.add_parser("test", help="run the test cases kept beside bundles (<name>.tests.yaml)")
    test.add_argument(
        "paths", type=Path, nargs="*", metavar="PATH", help=f"bundles or folders (default {BUNDLES_DIR})"
    )
    _universe_args(test)
    test.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    test.set_defaults(handler=test_command)

    exp = sub.add_parser("explain", help="which rules apply to an input, and why the decision is what it is")
    exp.add_argument("bundle", type=Path, metavar="BUNDLE")
    exp.add_argument("--direction", choices=("outbound", "inbound"), required=True)
    exp.add_argument("--peer", required=True, help="peer node id")
    exp.add_argument("--peer-jurisdiction", help="default: from --members")
    exp.add_argument("--members", type=Path, help="members file, to look up the peer's jurisdiction")
    exp.add_argument("--service", required=True, help="service id")
    exp.add_argument("--owner", help="service owner division code (default: from the catalogue)")
    exp.add_argument("--department", help="owning department (default: from the catalogue)")
    exp.add_argument("--purpose", default="service-delivery")
    exp.add_argument("--role", default="clerk")
    exp.add_argument("--fields", default="", help="comma-separated field names present")
    exp.add_argument("--no-consent", action="store_true", help="the applicant's consent is not recorded")
    exp.add_argument("--at", help="ISO 8601 time with offset (default: now)")
    _universe_args(exp)
    exp.set_defaults(handler=explain_command)

    log = sub.add_parser("log", help="recent decisions from a node's decision log")
    where = log.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, help="node config TOML (its database_url is read)")
    where.add_argument("--database-url")
    log.add_argument("--limit", type=int, default=50)
    log.add_argument("--since-ms", type=int, default=0)
    log.add_argument("--json", action="store_true", help="one JSON object per line")
    log.set_defaults(handler=log_command)

    sign = sub.add_parser("sign", help="write BUNDLE.sig, the node key's signature of the bundle")
    sign.add_argument("bundle", type=Path, metavar="BUNDLE")
    sign.add_argument("--key", type=Path, required=True, help="node key file")
    sign.set_defaults(handler=sign_command)


def _universe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--catalogue",
        type=Path,
        action="append",
        help="catalogue TOML with [[services]] and [[data]] (repeatable; default registry/samples/*.toml)",
    )


def _catalogue(args: argparse.Namespace) -> dict[str, CatalogueService]:
    return read_catalogues(args.catalogue or sample_catalogue_paths())


def lint_command(args: argparse.Namespace) -> int:
    catalogue = _catalogue(args)
    data = read_data_ids(args.catalogue or sample_catalogue_paths())
    members = read_members(args.members) if args.members else None
    problems = 0
    for path in _lint_targets(args.bundles):
        if path.name.endswith(".tests.yaml"):
            load_cases(path, catalogue)  # schema only; `yrd policy test` runs them
            print(f"{path}: ok")
            continue
        try:
            bundle = load_bundle(path)
        except ConfigError as e:
            issues = e.extra.get("issues") or [str(e)]
            print("\n".join(issues))
            problems += len(issues)
            continue
        findings = lint_bundle(bundle, catalogue or None, members, data if catalogue else None)
        for finding in findings:
            print(finding)
        problems += len(findings)
        if not findings:
            print(f"{path}: ok")
    return 1 if problems else 0


def _lint_targets(paths: list[Path]) -> list[Path]:
    """Folders expand to their bundles and test files, so `lint policies/bundles` works."""
    out: list[Path] = []
    for path in paths:
        out.extend(sorted(path.glob("*.yaml")) if path.is_dir() else [path])
    return out


def _test_files(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths or [BUNDLES_DIR]:
        if path.is_dir():
            found.extend(sorted(path.glob("*.tests.yaml")))
        elif path.name.endswith(".tests.yaml"):
            found.append(path)
        else:
            found.append(case_file_for(path))
    missing = [p for p in found if not p.is_file()]
    if missing:
        raise NotFound(f"no test file {missing[0]}", field="PATH")
    if not found:
        raise NotFound("no *.tests.yaml files found", field="PATH")
    return found


def test_command(args: argparse.Namespace) -> int:
    catalogue = _catalogue(args)
    total = failed = 0
    for path in _test_files(args.paths):
        for result in run_case_file(path, catalogue):
            total += 1
            failed += not result.passed
            if args.verbose or not result.passed:
                print(result)
    print(f"{total - failed} passed, {failed} failed")
    return 1 if failed else 0


def explain_command(args: argparse.Namespace) -> int:
    catalogue = _catalogue(args)
    known = catalogue.get(args.service)
    jurisdiction = args.peer_jurisdiction
    if jurisdiction is None and args.members:
        jurisdiction = next(iter(read_members(args.members).get(args.peer, ())), None)
    if jurisdiction is None:
        raise InvalidInput(
            "give --peer-jurisdiction or a --members file naming the peer", field="--peer-jurisdiction"
        )
    owner = args.owner or (known.owner if known else None)
    department = args.department or (known.department if known else None)
    if owner is None or department is None:
        raise InvalidInput(
            f"{args.service} is in no catalogue; give --owner and --department", field="--service"
        )
    inp = PolicyInput(
        direction=args.direction,
        peer_node=args.peer,
        peer_jurisdiction=jurisdiction,
        service_id=args.service,
        service_owner=owner,
        service_department=department,
        purpose=args.purpose,
        role=args.role,
        fields=frozenset(f.strip() for f in args.fields.split(",") if f.strip()),
        consent=not args.no_consent,
        at_ms=_at_ms(args.at),
    )
    engine = PolicyEngine(load_bundle(args.bundle), SystemClock())
    print(explain(engine, inp).render())
    return 0


def _at_ms(text: str | None) -> int:
    if text is None:
        return SystemClock().now_ms()
    try:
        at = datetime.fromisoformat(text)
    except ValueError as e:
        raise InvalidInput(f"{text!r} is not an ISO 8601 time", field="--at") from e
    if at.tzinfo is None:
        raise InvalidInput("give the UTC offset, e.g. 2026-01-05T10:00:00+08:00", field="--at")
    return round(at.timestamp() * 1000)


def log_command(args: argparse.Namespace) -> int:
    from sqlalchemy import inspect

    from core.db import Database
    from policies.decision_log import DecisionLog

    url = args.database_url
    if args.config is not None:
        from node.config import load_config

        url = load_config(args.config).database_url
    db = Database(url)
    try:
        if not inspect(db.engine).has_table("policy_decision"):
            raise NotFound("this database has no policy decision log yet", field="--database-url")
        rows = asyncio.run(DecisionLog(db).recent(limit=args.limit, since_ms=args.since_ms))
    finally:
        db.close()
    for row in rows:
        print(json.dumps(row, ensure_ascii=False) if args.json else _log_line(row))
    return 0


def _log_line(row: dict[str, Any]) -> str:
    at = datetime.fromtimestamp(row["at_ms"] / 1000, UTC).isoformat(timespec="seconds")
    verdict = "ALLOW" if row["allowed"] else "DENY "
    rule = row["deciding_rule"] or "(default deny)"
    return (
        f"{at} {verdict} {row['direction']:8} {row['peer_node']:10} {row['service_id']} "
        f"purpose={row['purpose']} role={row['role']} rule={rule} code={row['code']} id={row['decision_id']}"
    )


def sign_command(args: argparse.Namespace) -> int:
    load_bundle(args.bundle)  # never sign a bundle the node would refuse to load
    key = load_key(args.key, key_passphrase(os.environ))
    sig = sign_bundle(args.bundle, key)
    print(f"wrote {sig} (key {key.key_id})")
    return 0
