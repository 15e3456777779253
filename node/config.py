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
    max_body_bytes: int = 8 * MIB
    max_batch: int = 64
    max_attachments: int = 10
    max_attachment_bytes: int = 5 * MIB
    # Back-pressure: the counter refuses a new application (429, Retry-After) while this many
    # items wait in the outbox to its next hop, rather than queue without bound.
    max_outbox_depth: int = 2000


@dataclass(frozen=True)
class DeliveryConfig:
    batch_size: int = 32
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 60.0
    poll_interval_s: float = 0.2
    # A peer with work waiting and no successful call for this long turns /healthz degraded.
    stall_after_s: float = 60.0


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
    grpc_listen: str = "127.0.0.1:7100"
    http_listen: str = "127.0.0.1:7200"
    database_url: str = ""
    anchor_manifest: Path = Path("anchor.manifest")
    catalogue: Path = Path("catalogue.toml")
    policy_bundle: Path | None = None
    max_skew_ms: int = 30_000
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    handlers: HandlersConfig = field(default_factory=HandlersConfig)

    def __post_init__(self) -> None:
        # Frozen, so the derived values are set once here rather than recomputed by every reader.
        put = object.__setattr__
        put(self, "key_file", self.data_dir / self.key_file)
        put(self, "anchor_manifest", self.data_dir / self.anchor_manifest)
        put(self, "catalogue", self.data_dir / self.catalogue)
        if self.policy_bundle is not None:
            put(self, "policy_bundle", self.data_dir / self.policy_bundle)
        if not self.database_url:
            put(self, "database_url", f"sqlite:///{self.data_dir / 'node.db'}")
        if not self.name:
            put(self, "name", self.node_id)


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
    max_skew_ms = top.positive("max_skew_ms", int, NodeConfig.max_skew_ms)
    limits = _limits(top.subtable("limits"))
    delivery = _delivery(top.subtable("delivery"))
    handlers = _handlers(top.subtable("handlers"))
    top.finish()
    return NodeConfig(
        node_id=node_id,
        name=name,
        jurisdiction=jurisdiction,
        data_dir=data_dir,
        key_file=key_file,
        grpc_listen=grpc_listen,
        http_listen=http_listen,
        database_url=database_url,
        anchor_manifest=anchor,
        catalogue=catalogue,
        policy_bundle=policy_bundle,
        max_skew_ms=max_skew_ms,
        limits=limits,
        delivery=delivery,
        handlers=handlers,
    )


def _limits(t: TomlTable) -> LimitsConfig:
    d = LimitsConfig()
    limits = LimitsConfig(
        max_body_bytes=t.positive("max_body_bytes", int, d.max_body_bytes),
        max_batch=t.positive("max_batch", int, d.max_batch),
        max_attachments=t.positive("max_attachments", int, d.max_attachments),
        max_attachment_bytes=t.positive("max_attachment_bytes", int, d.max_attachment_bytes),
        max_outbox_depth=t.positive("max_outbox_depth", int, d.max_outbox_depth),
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
    )
    if delivery.max_backoff_s < delivery.initial_backoff_s:
        raise ConfigError("must not be smaller than initial_backoff_s", field=t.path("max_backoff_s"))
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
