"""``yrd cert verify (FILE|TEXT) --manifest PATH``: check an e-certificate offline.

Nothing runs but this command: the manifest file (a member's anchor or current manifest,
checked for its own quorum) is the only thing trusted, so a counter with no network, or an
auditor with a copy of the manifest, gets the same answer as a node (docs/protocol.md, 15).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.clock import SystemClock
from core.errors import ConfigError
from registry.certificates import MAX_TEXT_CHARS, Verdict, is_text, verify
from registry.manifest import load_signed_manifest, verify_anchor


def register(subparsers: Any) -> None:
    cert = subparsers.add_parser("cert", help="e-certificates (电子证照): verify offline")
    sub = cert.add_subparsers(dest="cert_command", required=True, metavar="SUBCOMMAND")
    check = sub.add_parser("verify", help="verify a certificate file or its YRDC1: text against a manifest")
    check.add_argument(
        "certificate", metavar="FILE|TEXT", help="a certificate file, or the text of its QR code"
    )
    check.add_argument(
        "--manifest", type=Path, required=True, help="a signed manifest file (anchor.manifest)"
    )
    check.add_argument("--json", action="store_true", help="print the verdict as JSON")
    check.set_defaults(handler=verify_command)


def _read(arg: str) -> bytes:
    """The QR text itself when it starts with the prefix, else the file it names."""
    if is_text(arg):
        return arg.encode()
    path = Path(arg)
    try:
        if path.stat().st_size > MAX_TEXT_CHARS:
            return b"\0" * (MAX_TEXT_CHARS + 1)  # refused as malformed without reading it all
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read certificate {arg!r}: {e.strerror}", field="certificate") from e


def verify_command(args: argparse.Namespace) -> int:
    manifest = verify_anchor(load_signed_manifest(args.manifest))
    verdict = verify(_read(args.certificate), manifest, SystemClock().now_ms())
    print(json.dumps(verdict.to_api(), ensure_ascii=False, indent=2) if args.json else _human(verdict))
    return 0 if verdict.valid else 1


def _human(verdict: Verdict) -> str:
    lines = ["valid" if verdict.valid else f"refused: {verdict.reason}: {verdict.detail}"]
    c = verdict.certificate
    if c is not None:
        lines += [
            f"  {c['name']} ({c['name_en']})",
            f"  certificate {c['certificate_id']}, issued by {c['issuer']} ({c['department']}) "
            f"key {c['key_id']} at {_utc(c['issued_at_ms'])}",
            f"  valid until {_utc(c['valid_until_ms']) if c['valid_until_ms'] else 'no end'}",
            f"  holder ({c['holder']['kind']}): {c['holder']['name']} {c['holder']['id']}",
        ]
        lines += [f"  {f['label'] or f['name']}: {f['value']}" for f in c["fields"]]
    return "\n".join(lines)


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
