"""`yrd keys` and `yrd node init`: the two commands that create key files."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest

from core.keys import load_key
from node.cli.main import main
from node.cli.node import derive_node_id, jurisdiction_prefix
from node.config import load_config
from registry.federation_file import manifest_from_members


def output_fields(text: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def test_generate_writes_a_private_key_and_prints_only_public_parts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keys" / "a.key"
    assert main(["keys", "generate", "--out", str(path)]) == 0
    out = capsys.readouterr().out
    key = load_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    fields = output_fields(out)
    assert fields["key_id"] == key.key_id
    assert fields["public_key"] == key.public_key.hex()
    assert key.seed.hex() not in out

    assert main(["keys", "show", str(path)]) == 0
    shown = capsys.readouterr().out
    assert output_fields(shown) == {"key_id": key.key_id, "public_key": key.public_key.hex()}
    assert key.seed.hex() not in shown


def test_generate_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "a.key"
    assert main(["keys", "generate", "--out", str(path)]) == 0
    before = path.read_text()
    assert main(["keys", "generate", "--out", str(path)]) == 2
    assert "key_exists" in capsys.readouterr().err
    assert path.read_text() == before


def test_show_refuses_a_key_readable_by_others(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "a.key"
    main(["keys", "generate", "--out", str(path)])
    path.chmod(0o644)
    assert main(["keys", "show", str(path)]) == 2
    assert "(field key_file)" in capsys.readouterr().err


def test_node_init_writes_a_loadable_config_and_a_members_snippet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node_dir = tmp_path / "js"
    argv = ["node", "init", "--jurisdiction", "320000", "--name", "Jiangsu", "--dir", str(node_dir)]
    assert main([*argv, "--grpc-listen", "127.0.0.1:7102", "--http-listen", "127.0.0.1:7202"]) == 0
    out = capsys.readouterr().out

    config = load_config(node_dir / "node.toml")
    key = load_key(config.key_file)
    assert config.key_file == node_dir.resolve() / "node.key"
    assert stat.S_IMODE(config.key_file.stat().st_mode) == 0o600
    assert (config.node_id, config.name, config.jurisdiction) == ("jiangsu", "Jiangsu", "320000")
    assert config.grpc_listen == "127.0.0.1:7102"
    fields = output_fields(out)
    assert fields["key_id"] == key.key_id
    assert fields["public_key"] == key.public_key.hex()
    assert key.seed.hex() not in out

    # The printed snippet is a valid members.toml fragment describing this node.
    snippet = tomllib.loads(out[out.index("[[members]]") :])
    manifest = manifest_from_members(
        {"federation_id": "yrd", "threshold": 1, **snippet}, version=1, now_ms=1_767_225_600_000
    )
    member = manifest.members[0]
    assert (member.node_id, list(member.jurisdictions)) == ("jiangsu", ["32"])
    assert member.http_endpoint == "http://127.0.0.1:7202"
    assert member.keys[0].public_key == key.public_key

    assert main(argv) == 2
    assert "file_exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        (["--jurisdiction", "329999", "--name", "Jiangsu"], "--jurisdiction"),
        (["--jurisdiction", "320000", "--name", "江苏"], "--node-id"),
        (["--jurisdiction", "320000", "--name", "Jiangsu", "--node-id", "JS"], "node_id"),
        (["--jurisdiction", "320000", "--name", "Jiangsu", "--grpc-listen", "nowhere"], "grpc_listen"),
    ],
)
def test_node_init_refusals_name_the_field_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], field: str
) -> None:
    assert main(["node", "init", "--dir", str(tmp_path / "n"), *extra]) == 2
    assert f"(field {field})" in capsys.readouterr().err
    assert not (tmp_path / "n" / "node.key").exists()
    assert not (tmp_path / "n" / "node.toml").exists()


def test_node_id_derivation_and_prefixes() -> None:
    assert derive_node_id("Jiangsu") == "jiangsu"
    assert derive_node_id("Suzhou City / 苏州") == "suzhou-city"
    assert derive_node_id("Zürich") == "zurich"
    assert derive_node_id("江苏") is None
    assert derive_node_id("S") is None
    assert jurisdiction_prefix("320000") == "32"
    assert jurisdiction_prefix("320500") == "3205"
    assert jurisdiction_prefix("320506") == "320506"
