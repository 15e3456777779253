"""``yrd federation``: write, sign, verify and read federation manifests.

The steps mirror how equals agree without a central server: one operator turns the reviewed
members.toml into an unsigned manifest, each member signs the same file with its own key,
and anyone can verify it, as an anchor (a quorum of its own members) or as the successor of
the manifest they already trust (a quorum of the old members). Each step is a function taking
a clock, so tests fix the time; the handlers only parse arguments and print.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError
from yrd.federation.v1 import manifest_pb2

from core.clock import Clock, SystemClock
from core.errors import ConfigError, Conflict, ManifestRejected, NotFound
from core.keys import load_key
from node.config import key_passphrase
from registry.federation_file import iso_utc, load_members_file, manifest_from_members
from registry.manifest import (
    TrustedManifest,
    check_form,
    fingerprint,
    load_signed_manifest,
    save_signed_manifest,
    sign_manifest,
    verify_anchor,
    verify_successor,
)

STATUS_NAMES = {
    manifest_pb2.KEY_STATUS_ACTIVE: "active",
    manifest_pb2.KEY_STATUS_RETIRING: "retiring",
    manifest_pb2.KEY_STATUS_REVOKED: "revoked",
}


def register(subparsers: Any) -> None:
    fed = subparsers.add_parser("federation", help="write, sign, verify and show federation manifests")
    sub = fed.add_subparsers(dest="federation_command", required=True, metavar="SUBCOMMAND")

    init = sub.add_parser("init", help="version 1 manifest (unsigned) from a members.toml")
    init.add_argument("--members", type=Path, required=True)
    init.add_argument("--out", type=Path, required=True)
    init.set_defaults(handler=_init_command)

    propose = sub.add_parser("propose", help="the next version (unsigned) from the current manifest")
    propose.add_argument("--current", type=Path, required=True)
    propose.add_argument("--members", type=Path, required=True)
    propose.add_argument("--out", type=Path, required=True)
    propose.set_defaults(handler=_propose_command)

    sign = sub.add_parser("sign", help="add a member's signature to a manifest file, in place")
    sign.add_argument("--manifest", type=Path, required=True)
    sign.add_argument("--key", type=Path, required=True)
    sign.add_argument("--node-id", required=True)
    sign.set_defaults(handler=_sign_command)

    verify = sub.add_parser("verify", help="check signatures: as an anchor, or as successor of --trusted")
    verify.add_argument("--manifest", type=Path, required=True)
    verify.add_argument("--trusted", type=Path, help="the manifest currently trusted")
    verify.set_defaults(handler=_verify_command)

    show = sub.add_parser("show", help="print a readable summary of a manifest")
    show.add_argument("--manifest", type=Path, required=True)
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    show.set_defaults(handler=_show_command)


def decode_manifest(signed: manifest_pb2.SignedManifest) -> manifest_pb2.Manifest:
    """The Manifest inside, without checking any signature (for signing and showing)."""
    manifest = manifest_pb2.Manifest()
    try:
        manifest.ParseFromString(signed.manifest)
    except DecodeError as e:
        raise ManifestRejected("the manifest bytes do not decode", code="malformed_manifest") from e
    return manifest


def _write_new(path: Path, signed: manifest_pb2.SignedManifest) -> None:
    if path.exists():
        raise Conflict(f"{path} already exists; refusing to overwrite it", code="file_exists", field="--out")
    save_signed_manifest(path, signed)


def init_manifest(members: Path, out: Path, clock: Clock) -> manifest_pb2.SignedManifest:
    manifest = manifest_from_members(load_members_file(members), version=1, now_ms=clock.now_ms())
    check_form(manifest)
    signed = manifest_pb2.SignedManifest(manifest=manifest.SerializeToString(deterministic=True))
    _write_new(out, signed)
    return signed


def propose_manifest(current: Path, members: Path, out: Path, clock: Clock) -> manifest_pb2.SignedManifest:
    """The successor of ``current``: same federation, version + 1, not yet signed."""
    old = decode_manifest(load_signed_manifest(current))
    doc = load_members_file(members)
    if doc.get("federation_id") != old.federation_id:
        raise ConfigError(
            f"must stay {old.federation_id!r}, the federation of {current}", field="federation_id"
        )
    manifest = manifest_from_members(doc, version=old.version + 1, now_ms=clock.now_ms())
    check_form(manifest)
    signed = manifest_pb2.SignedManifest(manifest=manifest.SerializeToString(deterministic=True))
    _write_new(out, signed)
    return signed


def sign_manifest_file(path: Path, key_file: Path, node_id: str) -> manifest_pb2.SignedManifest:
    """Add ``node_id``'s signature, refusing a key the manifest does not list for that member,
    since such a signature would only be discarded by every verifier."""
    signed = load_signed_manifest(path)
    manifest = decode_manifest(signed)
    check_form(manifest)
    member = next((m for m in manifest.members if m.node_id == node_id), None)
    if member is None:
        raise NotFound(
            f"{node_id} is not a member of version {manifest.version}",
            code="unknown_member",
            field="--node-id",
        )
    key = load_key(key_file, key_passphrase(os.environ))
    listed = {k.key_id: k for k in member.keys}
    if key.key_id not in listed:
        raise ConfigError(
            f"key {key.key_id} is not one of {node_id}'s keys in version {manifest.version} "
            f"(listed: {', '.join(listed) or 'none'})",
            code="key_not_listed",
            field="--key",
        )
    if listed[key.key_id].status == manifest_pb2.KEY_STATUS_REVOKED:
        raise ConfigError(
            f"key {key.key_id} is revoked in version {manifest.version}; its signature would not count",
            code="key_revoked",
            field="--key",
        )
    signed = sign_manifest(signed, node_id, key)
    save_signed_manifest(path, signed)
    return signed


def verify_manifest_file(
    path: Path, trusted: Path | None, clock: Clock
) -> tuple[TrustedManifest, TrustedManifest | None]:
    """Verify ``path`` as an anchor, or as successor of ``trusted`` (itself verified as an
    anchor first: a successor is only as good as what it descends from). Returns the verified
    manifest and the one it succeeds, if any."""
    candidate = load_signed_manifest(path)
    now_ms = clock.now_ms()
    if trusted is None:
        result = verify_anchor(candidate)
        if result.expired(now_ms):
            raise ManifestRejected(f"expired at {iso_utc(result.manifest.expires_at_ms)}", code="expired")
        return result, None
    previous = verify_anchor(load_signed_manifest(trusted))
    return verify_successor(previous, candidate, now_ms), previous


def quorum_line(signed: manifest_pb2.SignedManifest, by: manifest_pb2.Manifest) -> str:
    """How many of ``by``'s members signed ``signed``, against ``by``'s threshold."""
    members = {m.node_id for m in by.members}
    signers = sorted({s.node_id for s in signed.signatures} & members)
    return (
        f"{len(signers)} of {len(members)} members of version {by.version} signed "
        f"({', '.join(signers)}), threshold {by.threshold}"
    )


def manifest_summary(signed: manifest_pb2.SignedManifest) -> dict[str, Any]:
    """The JSON form of ``yrd federation show``; the text form is rendered from it."""
    m = decode_manifest(signed)
    return {
        "federation_id": m.federation_id,
        "version": m.version,
        "threshold": m.threshold,
        "issued_at": iso_utc(m.issued_at_ms),
        "expires_at": iso_utc(m.expires_at_ms),
        "fingerprint": fingerprint(signed.manifest),
        "members": [
            {
                "node_id": member.node_id,
                "display_name": member.display_name,
                "jurisdictions": list(member.jurisdictions),
                "grpc_endpoint": member.grpc_endpoint,
                "http_endpoint": member.http_endpoint,
                "relay": member.relay,
                "keys": [
                    {
                        "key_id": k.key_id,
                        "public_key": k.public_key.hex(),
                        "status": STATUS_NAMES.get(k.status, "unspecified"),
                        "not_before": iso_utc(k.not_before_ms),
                        "not_after": iso_utc(k.not_after_ms),
                    }
                    for k in member.keys
                ],
            }
            for member in m.members
        ],
        "signatures": [{"node_id": s.node_id, "key_id": s.key_id} for s in signed.signatures],
    }


def render_summary(s: dict[str, Any]) -> str:
    lines = [
        f"federation {s['federation_id']}  version {s['version']}  threshold {s['threshold']}",
        f"issued  {s['issued_at']}",
        f"expires {s['expires_at']}",
        f"members ({len(s['members'])}):",
    ]
    for m in s["members"]:
        lines.append(f"  {m['node_id']} ({m['display_name']})  prefixes {', '.join(m['jurisdictions'])}")
        lines.append(f"    grpc {m['grpc_endpoint']}  http {m['http_endpoint']}")
        if m["relay"]:
            lines.append(f"    relayed by {m['relay']}")
        for k in m["keys"]:
            lines.append(f"    key {k['key_id']} {k['status']}  {k['not_before']} .. {k['not_after']}")
    lines.append(f"signatures ({len(s['signatures'])}):")
    lines.extend(f"  {sig['node_id']} with {sig['key_id']}" for sig in s["signatures"])
    lines.append(f"fingerprint {s['fingerprint']}")
    return "\n".join(lines)


def _init_command(args: argparse.Namespace) -> int:
    signed = init_manifest(args.members, args.out, SystemClock())
    print(f"wrote {args.out} (version 1, unsigned); fingerprint {fingerprint(signed.manifest)}")
    return 0


def _propose_command(args: argparse.Namespace) -> int:
    signed = propose_manifest(args.current, args.members, args.out, SystemClock())
    version = decode_manifest(signed).version
    print(f"wrote {args.out} (version {version}, unsigned); fingerprint {fingerprint(signed.manifest)}")
    return 0


def _sign_command(args: argparse.Namespace) -> int:
    signed = sign_manifest_file(args.manifest, args.key, args.node_id)
    print(f"signed {args.manifest} as {args.node_id}; {len(signed.signatures)} signature(s) present")
    return 0


def _verify_command(args: argparse.Namespace) -> int:
    try:
        result, previous = verify_manifest_file(args.manifest, args.trusted, SystemClock())
    except ManifestRejected as e:
        print(f"REJECTED {e}")
        return 1
    m = result.manifest
    print(f"OK federation {m.federation_id} version {m.version}")
    if previous is not None:
        print(f"  {quorum_line(result.signed, previous.manifest)}")
    print(f"  {quorum_line(result.signed, m)}")
    print(f"  fingerprint {result.fingerprint}")
    return 0


def _show_command(args: argparse.Namespace) -> int:
    summary = manifest_summary(load_signed_manifest(args.manifest))
    print(json.dumps(summary, ensure_ascii=False, indent=2) if args.json else render_summary(summary))
    return 0
