from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w

from core.errors import ConfigError
from node.config import LimitsConfig, NodeConfig, load_config

MINIMAL = {"node_id": "jiangsu", "jurisdiction": "320000"}


def write(tmp_path: Path, doc: dict[str, object]) -> Path:
    path = tmp_path / "node.toml"
    path.write_bytes(tomli_w.dumps(doc).encode())
    return path


def load_error(tmp_path: Path, doc: dict[str, object]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, doc))
    return info.value


def test_minimal_file_gets_defaults_inside_the_config_directory(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config.data_dir == tmp_path
    assert config.key_file == tmp_path / "node.key"
    assert config.database_url == f"sqlite:///{tmp_path}/node.db"
    assert config.anchor_manifest == tmp_path / "anchor.manifest"
    assert config.policy_bundle is None
    assert config.name == "jiangsu"
    assert config.max_skew_ms == 30_000
    assert config.limits == LimitsConfig()
    assert config.limits.max_body_bytes == 8 * 1024 * 1024
    assert config.delivery.initial_backoff_s == 0.5
    assert config.delivery.stall_after_s == 60.0
    assert config.handlers.webhook_url is None


def test_full_file_round_trips_every_field(tmp_path: Path) -> None:
    doc = {
        **MINIMAL,
        "name": "江苏",
        "data_dir": "state",
        "key_file": "/etc/yrd/node.key",
        "grpc_listen": "[::1]:0",
        "http_listen": "0.0.0.0:8080",
        "database_url": "postgresql://postgres@127.0.0.1:5432/yrd",
        "anchor_manifest": "fed/v1.manifest",
        "catalogue": "catalogue.toml",
        "policy_bundle": "policies/bundle.yaml",
        "max_skew_ms": 5000,
        "limits": {"max_body_bytes": 1024, "max_batch": 8, "max_attachments": 2, "max_attachment_bytes": 512},
        "delivery": {
            "batch_size": 4,
            "initial_backoff_s": 1,
            "max_backoff_s": 2.5,
            "poll_interval_s": 0.05,
            "stall_after_s": 90,
            "claim_lease_s": 45,
        },
        "handlers": {"webhook_url": "https://dept.example/hook"},
    }
    config = load_config(write(tmp_path, doc))
    assert config.data_dir == tmp_path / "state"
    assert config.key_file == Path("/etc/yrd/node.key")
    # Relative paths in the file are relative to the file, not to data_dir.
    assert config.anchor_manifest == tmp_path / "fed/v1.manifest"
    assert config.policy_bundle == tmp_path / "policies/bundle.yaml"
    assert config.database_url == "postgresql://postgres@127.0.0.1:5432/yrd"
    assert config.grpc_listen == "[::1]:0"
    assert config.limits.max_attachments == 2
    assert config.delivery.initial_backoff_s == 1.0
    assert isinstance(config.delivery.initial_backoff_s, float)
    assert config.delivery.stall_after_s == 90.0
    assert config.delivery.claim_lease_s == 45.0
    assert config.handlers.webhook_url == "https://dept.example/hook"
    assert config.name == "江苏"


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"node_id": "Jiangsu"}, "node_id"),
        ({"node_id": "j"}, "node_id"),
        ({"jurisdiction": "329999"}, "jurisdiction"),
        ({"jurisdiction": 320000}, "jurisdiction"),
        ({"jurisdiction": "32"}, "jurisdiction"),
        ({"grpc_listen": "localhost"}, "grpc_listen"),
        ({"http_listen": "127.0.0.1:70000"}, "http_listen"),
        ({"database_url": "mysql://x"}, "database_url"),
        ({"max_skew_ms": 0}, "max_skew_ms"),
        ({"max_skew_ms": "30s"}, "max_skew_ms"),
        ({"key_file": ""}, "key_file"),
        ({"limits": {"max_batch": True}}, "limits.max_batch"),
        ({"limits": {"max_body_byte": 10}}, "limits.max_body_byte"),
        ({"limits": 5}, "limits"),
        ({"delivery": {"max_backoff_s": 0.1}}, "delivery.max_backoff_s"),
        ({"delivery": {"poll_interval_s": -1.0}}, "delivery.poll_interval_s"),
        ({"delivery": {"stall_after_s": 0}}, "delivery.stall_after_s"),
        ({"delivery": {"claim_lease_s": 10}}, "delivery.claim_lease_s"),  # not beyond a call's 10 s
        ({"handlers": {"webhook_url": "ftp://x"}}, "handlers.webhook_url"),
        ({"grpc_listn": "127.0.0.1:1"}, "grpc_listn"),
    ],
)
def test_each_wrong_value_names_its_key(tmp_path: Path, patch: dict[str, object], field: str) -> None:
    assert load_error(tmp_path, {**MINIMAL, **patch}).field == field


@pytest.mark.parametrize("missing", ["node_id", "jurisdiction"])
def test_required_keys(tmp_path: Path, missing: str) -> None:
    doc = {k: v for k, v in MINIMAL.items() if k != missing}
    err = load_error(tmp_path, doc)
    assert err.field == missing
    assert "required" in err.reason


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("node_id = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_built_in_code_resolves_relative_paths_against_data_dir(tmp_path: Path) -> None:
    config = NodeConfig(
        node_id="anhui", jurisdiction="340000", data_dir=tmp_path, policy_bundle=Path("p.yaml")
    )
    assert config.key_file == tmp_path / "node.key"
    assert config.policy_bundle == tmp_path / "p.yaml"
    assert config.database_url.endswith("/node.db")
    explicit = NodeConfig(node_id="anhui", jurisdiction="340000", data_dir=tmp_path, database_url="sqlite://")
    assert explicit.database_url == "sqlite://"
