"""A node's configuration: the frozen :class:`NodeConfig` and the TOML parser that builds it.

Parsing is kept apart from the dataclass so tests and simulations build configs in code
while operators write TOML. The parser is strict: an unknown key is an error, because a typo
such as ``max_body_byte`` silently falling back to a default is worse than refusing to start.
Every error is a :class:`ConfigError` whose ``field`` is the key path (``limits.max_batch``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.toml import (
    TomlTable,
    check_division_code,
    check_host_port,
    check_http_url,
    check_node_id,
    load_toml,
)

MIB = 1024 * 1024


@dataclass(frozen=True)
class LimitsConfig:
    """Every limit a door enforces (docs/deploy.md, "Limits", says what exceeding each returns)."""

    max_body_bytes: int = 8 * MIB
    max_batch: int = 64
    max_attachments: int = 10
    max_attachment_bytes: int = 5 * MIB
    # Back-pressure: the counter refuses a new application (429, Retry-After) while this many
    # items wait in the outbox to its next hop, rather than queue without bound.
    max_outbox_depth: int = 2000
    # Peer service calls (Deliver, NotifyStatus) per authenticated peer: in flight at once,
    # and a token bucket of ``peer_burst`` refilled at ``peer_calls_per_s``.
    peer_max_concurrent_calls: int = 8
    peer_calls_per_s: float = 100.0
    peer_burst: int = 200
    # Counter HTTP requests per authenticated account: far above a person at a screen, far
    # below a script hammering the node.
    clerk_requests_per_s: float = 20.0
    clerk_burst: int = 200
    # Slow clients: the time to send a request's headers, and its body, before being cut off.
    http_header_timeout_s: float = 10.0
    http_body_timeout_s: float = 30.0


@dataclass(frozen=True)
class TransportConfig:
    """gRPC between nodes is TLS with manifest-pinned certificates unless ``plaintext`` is
    set explicitly; HTTPS on the counter front when both ``https_cert`` and ``https_key`` are."""

    plaintext: bool = False
    tls_cert: Path = Path("tls.crt")
    tls_key: Path = Path("tls.key")
    mutual_tls: bool = False
    https_cert: Path | None = None
    https_key: Path | None = None


# The deadline of every call to a peer (a batch, a catalogue pull); a claim lease outlives it.
PEER_CALL_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class DeliveryConfig:
    batch_size: int = 32
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 60.0
    poll_interval_s: float = 0.2
    # A peer with work waiting and no successful call for this long turns /healthz degraded.
    stall_after_s: float = 60.0
    # How often each direct peer is asked for a newer manifest (a rotated key spreads this fast).
    gossip_interval_s: float = 30.0
    # How long a replica's claim on outbox rows lasts: after a replica dies, its claimed rows
    # wait this long before another sends them. Longer than a call may take, or a slow call's
    # rows would be sent twice (harmless at the idempotent owner, but wasted).
    claim_lease_s: float = 30.0


MAX_CLOCK_OFFSET_MS = 7 * 86_400_000


@dataclass(frozen=True)
class ClockConfig:
    """``offset_ms`` moves the node's wall clock (envelope times, nonces, deadlines) by that
    much, ahead when positive: how the simulations play a host whose clock drifted, through
    the injected clock rather than the system's. Zero, the default, is the host's clock."""

    offset_ms: int = 0


@dataclass(frozen=True)
class HandlersConfig:
    webhook_url: str | None = None


@dataclass(frozen=True)
class NodeConfig:
    """One node's settings. Relative paths are taken relative to ``data_dir``; an empty
    ``database_url`` means the SQLite file ``node.db`` in ``data_dir``."""

    node_id: str
    jurisdiction: str
    data_dir: Path
    name: str = ""
    key_file: Path = Path("node.key")
    # Keys beside key_file that open payloads sealed to this node (docs/deploy.md, rotation):
    # the next key before the switch, the old one after it; each while the manifest lists it
    # for this node unrevoked. The node signs with key_file alone.
    opening_key_files: tuple[Path, ...] = ()
    grpc_listen: str = "127.0.0.1:7100"
    http_listen: str = "127.0.0.1:7200"
    database_url: str = ""
    anchor_manifest: Path = Path("anchor.manifest")
    catalogue: Path = Path("catalogue.toml")
    policy_bundle: Path | None = None
    dispatch_rules: Path | None = None  # signed clue dispatch rules (registry/dispatch.py)
    max_skew_ms: int = 30_000
    # How often the audit head is signed and checkpoints exchanged with peers (docs/protocol.md 12).
    audit_checkpoint_interval_s: float = 300.0
    audit_checkpoint_records: int = 1000
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    handlers: HandlersConfig = field(default_factory=HandlersConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    clock: ClockConfig = field(default_factory=ClockConfig)

    def __post_init__(self) -> None:
        # Frozen, so the derived values are set once here rather than recomputed by every reader.
        put = object.__setattr__
        put(self, "key_file", self.data_dir / self.key_file)
        put(self, "opening_key_files", tuple(self.data_dir / p for p in self.opening_key_files))
        put(self, "anchor_manifest", self.data_dir / self.anchor_manifest)
        put(self, "catalogue", self.data_dir / self.catalogue)
        if self.policy_bundle is not None:
            put(self, "policy_bundle", self.data_dir / self.policy_bundle)
        if self.dispatch_rules is not None:
            put(self, "dispatch_rules", self.data_dir / self.dispatch_rules)
        if not self.database_url:
            put(self, "database_url", f"sqlite:///{self.data_dir / 'node.db'}")
        if not self.name:
            put(self, "name", self.node_id)
        t = self.transport
        put(
            self,
            "transport",
            TransportConfig(
                plaintext=t.plaintext,
                tls_cert=self.data_dir / t.tls_cert,
                tls_key=self.data_dir / t.tls_key,
                mutual_tls=t.mutual_tls,
                https_cert=None if t.https_cert is None else self.data_dir / t.https_cert,
                https_key=None if t.https_key is None else self.data_dir / t.https_key,
            ),
        )


def _path(table: TomlTable, key: str, base: Path, default: Path | None) -> Path | None:
    value = table.take(key, str)
    if value is None:
        return default
    if not value:
        raise ConfigError("must not be empty", field=table.path(key))
    return base / Path(value).expanduser()


def config_from_document(doc: Mapping[str, Any], base_dir: Path) -> NodeConfig:
    """Build a NodeConfig from a parsed TOML document whose relative paths are relative to
    ``base_dir`` (the config file's directory); defaults for files live in ``data_dir``."""
    top = TomlTable(doc, "")
    node_id = check_node_id(top.take("node_id", str, required=True), "node_id")
    name = top.take("name", str, "")
    jurisdiction = check_division_code(top.take("jurisdiction", str, required=True), "jurisdiction")
    data_dir = _path(top, "data_dir", base_dir, None) or base_dir
    key_file = _path(top, "key_file", base_dir, None) or Path("node.key")
    opening = _paths(top, "opening_key_files", base_dir)
    grpc_listen = check_host_port(top.take("grpc_listen", str, NodeConfig.grpc_listen), "grpc_listen")
    http_listen = check_host_port(top.take("http_listen", str, NodeConfig.http_listen), "http_listen")
    database_url = top.take("database_url", str, "")
    if database_url and not database_url.startswith(
        ("sqlite://", "postgresql://", "postgresql+psycopg://", "postgres://")
    ):
        raise ConfigError("expected a sqlite:// or postgresql:// URL", field="database_url")
    anchor = _path(top, "anchor_manifest", base_dir, None) or Path("anchor.manifest")
    catalogue = _path(top, "catalogue", base_dir, None) or Path("catalogue.toml")
    policy_bundle = _path(top, "policy_bundle", base_dir, None)
    dispatch_rules = _path(top, "dispatch_rules", base_dir, None)
    max_skew_ms = top.positive("max_skew_ms", int, NodeConfig.max_skew_ms)
    checkpoint_s = float(
        top.positive("audit_checkpoint_interval_s", (int, float), NodeConfig.audit_checkpoint_interval_s)
    )
    checkpoint_records = top.positive("audit_checkpoint_records", int, NodeConfig.audit_checkpoint_records)
    limits = _limits(top.subtable("limits"))
    delivery = _delivery(top.subtable("delivery"))
    handlers = _handlers(top.subtable("handlers"))
    transport = _transport(top.subtable("transport"), base_dir)
    clock = _clock(top.subtable("clock"))
    top.finish()
    return NodeConfig(
        node_id=node_id,
        name=name,
        jurisdiction=jurisdiction,
        data_dir=data_dir,
        key_file=key_file,
        opening_key_files=opening,
        grpc_listen=grpc_listen,
        http_listen=http_listen,
        database_url=database_url,
        anchor_manifest=anchor,
        catalogue=catalogue,
        policy_bundle=policy_bundle,
        dispatch_rules=dispatch_rules,
        max_skew_ms=max_skew_ms,
        audit_checkpoint_interval_s=checkpoint_s,
        audit_checkpoint_records=checkpoint_records,
        limits=limits,
        delivery=delivery,
        handlers=handlers,
        transport=transport,
        clock=clock,
    )


def _paths(table: TomlTable, key: str, base: Path) -> tuple[Path, ...]:
    values = table.take(key, list, [])
    if not all(isinstance(v, str) and v for v in values):
        raise ConfigError("must be a list of file paths", field=table.path(key))
    return tuple(base / Path(v).expanduser() for v in values)


def _clock(t: TomlTable) -> ClockConfig:
    offset = t.take("offset_ms", int, 0)
    if abs(offset) > MAX_CLOCK_OFFSET_MS:
        raise ConfigError(
            f"must lie within ±{MAX_CLOCK_OFFSET_MS} ms (7 days), got {offset}", field=t.path("offset_ms")
        )
    t.finish()
    return ClockConfig(offset_ms=offset)


def _transport(t: TomlTable, base: Path) -> TransportConfig:
    d = TransportConfig()
    plaintext = t.take("plaintext", bool, False)
    mutual = t.take("mutual_tls", bool, False)
    if plaintext and mutual:
        raise ConfigError("mutual TLS needs TLS; drop plaintext", field=t.path("mutual_tls"))
    https_cert = _path(t, "https_cert", base, None)
    https_key = _path(t, "https_key", base, None)
    if (https_cert is None) != (https_key is None):
        raise ConfigError("set both https_cert and https_key, or neither", field=t.path("https_key"))
    transport = TransportConfig(
        plaintext=plaintext,
        tls_cert=_path(t, "tls_cert", base, None) or d.tls_cert,
        tls_key=_path(t, "tls_key", base, None) or d.tls_key,
        mutual_tls=mutual,
        https_cert=https_cert,
        https_key=https_key,
    )
    t.finish()
    return transport


def _limits(t: TomlTable) -> LimitsConfig:
    d = LimitsConfig()
    limits = LimitsConfig(
        max_body_bytes=t.positive("max_body_bytes", int, d.max_body_bytes),
        max_batch=t.positive("max_batch", int, d.max_batch),
        max_attachments=t.positive("max_attachments", int, d.max_attachments),
        max_attachment_bytes=t.positive("max_attachment_bytes", int, d.max_attachment_bytes),
        max_outbox_depth=t.positive("max_outbox_depth", int, d.max_outbox_depth),
        peer_max_concurrent_calls=t.positive("peer_max_concurrent_calls", int, d.peer_max_concurrent_calls),
        peer_calls_per_s=float(t.positive("peer_calls_per_s", (int, float), d.peer_calls_per_s)),
        peer_burst=t.positive("peer_burst", int, d.peer_burst),
        clerk_requests_per_s=float(t.positive("clerk_requests_per_s", (int, float), d.clerk_requests_per_s)),
        clerk_burst=t.positive("clerk_burst", int, d.clerk_burst),
        http_header_timeout_s=float(
            t.positive("http_header_timeout_s", (int, float), d.http_header_timeout_s)
        ),
        http_body_timeout_s=float(t.positive("http_body_timeout_s", (int, float), d.http_body_timeout_s)),
    )
    t.finish()
    return limits


def _delivery(t: TomlTable) -> DeliveryConfig:
    d = DeliveryConfig()
    delivery = DeliveryConfig(
        batch_size=t.positive("batch_size", int, d.batch_size),
        initial_backoff_s=float(t.positive("initial_backoff_s", (int, float), d.initial_backoff_s)),
        max_backoff_s=float(t.positive("max_backoff_s", (int, float), d.max_backoff_s)),
        poll_interval_s=float(t.positive("poll_interval_s", (int, float), d.poll_interval_s)),
        stall_after_s=float(t.positive("stall_after_s", (int, float), d.stall_after_s)),
        gossip_interval_s=float(t.positive("gossip_interval_s", (int, float), d.gossip_interval_s)),
        claim_lease_s=float(t.positive("claim_lease_s", (int, float), d.claim_lease_s)),
    )
    if delivery.max_backoff_s < delivery.initial_backoff_s:
        raise ConfigError("must not be smaller than initial_backoff_s", field=t.path("max_backoff_s"))
    if delivery.claim_lease_s <= PEER_CALL_TIMEOUT_S:
        raise ConfigError(
            f"must be longer than a peer call may take ({PEER_CALL_TIMEOUT_S:g} s)",
            field=t.path("claim_lease_s"),
        )
    t.finish()
    return delivery


def _handlers(t: TomlTable) -> HandlersConfig:
    url = t.take("webhook_url", str)
    handlers = HandlersConfig(webhook_url=None if url is None else check_http_url(url, t.path("webhook_url")))
    t.finish()
    return handlers


def load_config(path: Path) -> NodeConfig:
    path = Path(path)
    return config_from_document(load_toml(path, "config"), path.resolve().parent)


PASSPHRASE_ENV = "YRD_KEY_PASSPHRASE"
PASSPHRASE_FILE_ENV = "YRD_KEY_PASSPHRASE_FILE"


def key_passphrase(environ: Mapping[str, str]) -> bytes | None:
    """The passphrase of an encrypted key file, from the environment: the value itself, or a
    file holding it (what systemd's LoadCredential or a Kubernetes secret volume provides), so
    it never sits in node.toml beside the key."""
    if value := environ.get(PASSPHRASE_ENV):
        return value.encode()
    if file := environ.get(PASSPHRASE_FILE_ENV):
        try:
            return Path(file).read_bytes().rstrip(b"\r\n")
        except OSError as e:
            raise ConfigError(f"cannot read {file}: {e.strerror}", field=PASSPHRASE_FILE_ENV) from e
    return None
