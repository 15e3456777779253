"""The human-written members file (members.toml) and its conversion to a Manifest.

Operators describe the federation in TOML because they review it by eye before signing;
the Manifest proto is what gets signed. Every wrong value is refused here with its key path
(``members[2].keys[0].status``), since once signed a mistake costs a new quorum to undo.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from yrd.federation.v1 import manifest_pb2

from core.division_table import DIVISIONS
from core.errors import ConfigError
from core.keys import key_id_for
from core.toml import TomlTable, check_host_port, check_http_url, check_node_id, load_toml

DAY_MS = 86_400_000

KEY_STATUSES = {
    "active": manifest_pb2.KEY_STATUS_ACTIVE,
    "retiring": manifest_pb2.KEY_STATUS_RETIRING,
    "revoked": manifest_pb2.KEY_STATUS_REVOKED,
}


def load_members_file(path: Path) -> dict[str, Any]:
    return load_toml(Path(path), "members")


def manifest_from_members(doc: dict[str, Any], *, version: int, now_ms: int) -> manifest_pb2.Manifest:
    """The unsigned Manifest described by a members document, issued at ``now_ms``."""
    top = TomlTable(doc, "")
    federation_id = top.take("federation_id", str, required=True)
    if not re.fullmatch(r"[a-z0-9-]{1,64}", federation_id):
        raise ConfigError(f"expected [a-z0-9-]{{1,64}}, got {federation_id!r}", field="federation_id")
    threshold = top.positive("threshold", int, required=True)
    valid_days = top.positive("valid_days", int, 365)
    member_tables = top.tables("members", required=True)
    top.finish()
    if not member_tables:
        raise ConfigError("a federation needs at least one member", field="members")
    if threshold > len(member_tables):
        raise ConfigError(
            f"threshold {threshold} exceeds the {len(member_tables)} members", field="threshold"
        )
    expires_at_ms = now_ms + valid_days * DAY_MS
    manifest = manifest_pb2.Manifest(
        federation_id=federation_id,
        version=version,
        threshold=threshold,
        issued_at_ms=now_ms,
        expires_at_ms=expires_at_ms,
    )
    for table in member_tables:
        manifest.members.append(_member(table, now_ms, expires_at_ms))
    _check_across_members(manifest)
    return manifest


def _member(t: TomlTable, now_ms: int, expires_at_ms: int) -> manifest_pb2.Member:
    node_id = check_node_id(t.take("node_id", str, required=True), t.path("node_id"))
    member = manifest_pb2.Member(
        node_id=node_id,
        display_name=t.take("display_name", str, node_id),
        grpc_endpoint=check_host_port(t.take("grpc_endpoint", str, required=True), t.path("grpc_endpoint")),
        http_endpoint=check_http_url(t.take("http_endpoint", str, required=True), t.path("http_endpoint")),
        relay=t.take("relay", str, ""),
    )
    jurisdictions = t.take("jurisdictions", list, required=True)
    if not jurisdictions:
        raise ConfigError("a member serves at least one jurisdiction prefix", field=t.path("jurisdictions"))
    for i, prefix in enumerate(jurisdictions):
        member.jurisdictions.append(_jurisdiction_prefix(prefix, f"{t.path('jurisdictions')}[{i}]"))
    certificates = t.take("tls_certificates", list, [])
    for i, pem in enumerate(certificates):
        member.tls_certificates.append(_certificate(pem, f"{t.path('tls_certificates')}[{i}]"))
    key_tables = t.tables("keys", required=True)
    if not key_tables:
        raise ConfigError("a member needs at least one key", field=t.path("keys"))
    for key_table in key_tables:
        member.keys.append(_member_key(key_table, now_ms, expires_at_ms))
    t.finish()
    return member


def _certificate(value: object, where: str) -> bytes:
    """One PEM certificate (what ``yrd node init`` prints), pinned as its DER bytes."""
    if not isinstance(value, str):
        raise ConfigError("expected a PEM certificate as a string", field=where)
    try:
        cert = x509.load_pem_x509_certificate(value.encode())
    except ValueError as e:
        raise ConfigError("not a PEM X.509 certificate", field=where) from e
    return cert.public_bytes(serialization.Encoding.DER)


def _jurisdiction_prefix(value: object, where: str) -> str:
    """A GB/T 2260 prefix: 2 (province), 4 (city) or 6 (county) digits naming a real division."""
    if not isinstance(value, str) or not re.fullmatch(r"\d{2}|\d{4}|\d{6}", value):
        raise ConfigError(
            f"expected a 2, 4 or 6 digit division prefix as a string, got {value!r}", field=where
        )
    if value.ljust(6, "0") not in DIVISIONS:
        raise ConfigError(f"{value} is not a known GB/T 2260 division", field=where)
    return value


def _member_key(t: TomlTable, now_ms: int, expires_at_ms: int) -> manifest_pb2.MemberKey:
    hex_key = t.take("public_key", str, required=True)
    if not re.fullmatch(r"[0-9a-fA-F]{64}", hex_key):
        raise ConfigError("expected 64 hex characters (a raw Ed25519 public key)", field=t.path("public_key"))
    public_key = bytes.fromhex(hex_key)
    not_before = _time_ms(t, "not_before", now_ms)
    not_after = _time_ms(t, "not_after", expires_at_ms)
    if not_after <= not_before:
        raise ConfigError("must be later than not_before", field=t.path("not_after"))
    status_name = t.take("status", str, "active")
    if status_name not in KEY_STATUSES:
        raise ConfigError(
            f"expected one of {', '.join(KEY_STATUSES)}, got {status_name!r}", field=t.path("status")
        )
    t.finish()
    return manifest_pb2.MemberKey(
        key_id=key_id_for(public_key),
        public_key=public_key,
        not_before_ms=not_before,
        not_after_ms=not_after,
        status=KEY_STATUSES[status_name],
    )


def _time_ms(t: TomlTable, key: str, default: int) -> int:
    """An RFC 3339 time with an offset, quoted or as a TOML datetime, in Unix milliseconds."""
    value = t.take(key, (str, datetime))
    if value is None:
        return default
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as e:
            raise ConfigError(f"expected an RFC 3339 time, got {value!r}", field=t.path(key)) from e
    if value.tzinfo is None:
        raise ConfigError("the time needs an offset, e.g. 2026-01-01T00:00:00Z", field=t.path(key))
    return int(value.timestamp() * 1000)


def _check_across_members(manifest: manifest_pb2.Manifest) -> None:
    """Rules that span members: unique ids, keys and prefixes, and relays that are direct members."""
    node_ids: set[str] = set()
    key_owner: dict[str, str] = {}
    prefix_owner: dict[str, str] = {}
    for i, member in enumerate(manifest.members):
        if member.node_id in node_ids:
            raise ConfigError(f"node id {member.node_id} appears twice", field=f"members[{i}].node_id")
        node_ids.add(member.node_id)
        for j, key in enumerate(member.keys):
            if key.key_id in key_owner:
                raise ConfigError(
                    f"key {key.key_id} is already listed for {key_owner[key.key_id]}",
                    field=f"members[{i}].keys[{j}].public_key",
                )
            key_owner[key.key_id] = member.node_id
        for j, prefix in enumerate(member.jurisdictions):
            if prefix in prefix_owner:
                raise ConfigError(
                    f"prefix {prefix} is already served by {prefix_owner[prefix]}",
                    field=f"members[{i}].jurisdictions[{j}]",
                )
            prefix_owner[prefix] = member.node_id
    direct = {m.node_id for m in manifest.members if not m.relay}
    for i, member in enumerate(manifest.members):
        if member.relay and (member.relay not in direct or member.relay == member.node_id):
            raise ConfigError(
                f"relay {member.relay!r} must be another member of this federation, reached directly",
                field=f"members[{i}].relay",
            )


def iso_utc(ms: int) -> str:
    """Unix milliseconds as ``2026-01-01T00:00:00Z``, the form operators read and write."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
