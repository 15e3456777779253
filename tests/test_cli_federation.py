"""`yrd federation` end to end through `main`, plus the members.toml conversion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from yrd.federation.v1 import manifest_pb2

from core.clock import FakeClock
from core.errors import ConfigError, ManifestRejected
from core.keys import NodeKey, load_key
from node.cli.federation import init_manifest, verify_manifest_file
from node.cli.main import main
from registry.federation_file import DAY_MS, manifest_from_members
from registry.manifest import load_signed_manifest

PROVINCES = [("shanghai", "31"), ("jiangsu", "32"), ("zhejiang", "33"), ("anhui", "34"), ("fujian", "35")]
NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def member(node_id: str, prefix: str, key: NodeKey, port: int) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "display_name": node_id.title(),
        "jurisdictions": [prefix],
        "grpc_endpoint": f"127.0.0.1:{7100 + port}",
        "http_endpoint": f"http://127.0.0.1:{7200 + port}",
        "keys": [{"public_key": key.public_key.hex(), "status": "active"}],
    }


def members_doc(keys: dict[str, NodeKey], names: list[str], threshold: int) -> dict[str, Any]:
    prefix = dict(PROVINCES)
    return {
        "federation_id": "yrd",
        "threshold": threshold,
        "valid_days": 30,
        "members": [member(n, prefix[n], keys[n], i) for i, n in enumerate(names)],
    }


@pytest.fixture
def keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, NodeKey]:
    out = {}
    for name, _ in PROVINCES:
        assert main(["keys", "generate", "--out", str(tmp_path / f"{name}.key")]) == 0
        out[name] = load_key(tmp_path / f"{name}.key")
    capsys.readouterr()
    return out


def write_members(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(tomli_w.dumps(doc))
    return path


def sign(tmp_path: Path, manifest: Path, *names: str) -> None:
    for name in names:
        argv = ["federation", "sign", "--manifest", str(manifest), "--key", str(tmp_path / f"{name}.key")]
        assert main([*argv, "--node-id", name]) == 0


def test_full_flow_anchor_then_successor(
    tmp_path: Path, keys: dict[str, NodeKey], capsys: pytest.CaptureFixture[str]
) -> None:
    four = ["shanghai", "jiangsu", "zhejiang", "anhui"]
    v1 = tmp_path / "v1.manifest"
    members = write_members(tmp_path / "members.toml", members_doc(keys, four, 3))
    assert main(["federation", "init", "--members", str(members), "--out", str(v1)]) == 0

    sign(tmp_path, v1, "shanghai", "jiangsu")
    capsys.readouterr()
    assert main(["federation", "verify", "--manifest", str(v1)]) == 1
    assert "no_quorum" in capsys.readouterr().out

    sign(tmp_path, v1, "zhejiang")
    capsys.readouterr()
    assert main(["federation", "verify", "--manifest", str(v1)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK federation yrd version 1")
    assert "3 of 4 members of version 1 signed" in out
    assert "threshold 3" in out

    # v2: anhui leaves, fujian joins. It needs a quorum of v1 and of itself.
    v2 = tmp_path / "v2.manifest"
    new_members = ["shanghai", "jiangsu", "zhejiang", "fujian"]
    new = write_members(tmp_path / "new.toml", members_doc(keys, new_members, 3))
    assert main(["federation", "propose", "--current", str(v1), "--members", str(new), "--out", str(v2)]) == 0
    sign(tmp_path, v2, "shanghai", "jiangsu", "zhejiang")
    capsys.readouterr()
    assert main(["federation", "verify", "--manifest", str(v2), "--trusted", str(v1)]) == 0
    out = capsys.readouterr().out
    assert "OK federation yrd version 2" in out
    assert "3 of 4 members of version 1 signed" in out

    # Going back from v2 to v1 is refused, whatever v1's signatures.
    assert main(["federation", "verify", "--manifest", str(v1), "--trusted", str(v2)]) == 1
    assert "rollback" in capsys.readouterr().out


def test_successor_without_quorum_of_the_previous_version_is_refused(
    tmp_path: Path, keys: dict[str, NodeKey], capsys: pytest.CaptureFixture[str]
) -> None:
    v1, v2 = tmp_path / "v1.manifest", tmp_path / "v2.manifest"
    old = write_members(tmp_path / "a.toml", members_doc(keys, ["shanghai", "jiangsu", "zhejiang"], 2))
    main(["federation", "init", "--members", str(old), "--out", str(v1)])
    sign(tmp_path, v1, "shanghai", "jiangsu")
    # The newcomers take over: only one v1 member agrees.
    new = write_members(tmp_path / "b.toml", members_doc(keys, ["shanghai", "anhui", "fujian"], 2))
    main(["federation", "propose", "--current", str(v1), "--members", str(new), "--out", str(v2)])
    sign(tmp_path, v2, "shanghai", "anhui", "fujian")
    capsys.readouterr()
    assert main(["federation", "verify", "--manifest", str(v2), "--trusted", str(v1)]) == 1
    assert "no_quorum_of_previous" in capsys.readouterr().out


def test_sign_refuses_a_key_that_is_not_the_members(
    tmp_path: Path, keys: dict[str, NodeKey], capsys: pytest.CaptureFixture[str]
) -> None:
    v1 = tmp_path / "v1.manifest"
    doc = members_doc(keys, ["shanghai", "jiangsu"], 2)
    main(["federation", "init", "--members", str(write_members(tmp_path / "m.toml", doc)), "--out", str(v1)])
    before = v1.read_bytes()
    capsys.readouterr()
    argv = ["federation", "sign", "--manifest", str(v1), "--key", str(tmp_path / "anhui.key")]
    assert main([*argv, "--node-id", "jiangsu"]) == 2
    err = capsys.readouterr().err
    assert "key_not_listed" in err
    assert keys["anhui"].key_id in err
    assert keys["jiangsu"].key_id in err
    assert "(field --key)" in err
    assert main([*argv, "--node-id", "anhui"]) == 2
    assert "unknown_member" in capsys.readouterr().err
    assert v1.read_bytes() == before


def test_propose_keeps_the_federation_and_counts_up(
    tmp_path: Path, keys: dict[str, NodeKey], capsys: pytest.CaptureFixture[str]
) -> None:
    v1, v2 = tmp_path / "v1.manifest", tmp_path / "v2.manifest"
    doc = members_doc(keys, ["shanghai", "jiangsu"], 1)
    main(["federation", "init", "--members", str(write_members(tmp_path / "m.toml", doc)), "--out", str(v1)])
    other = write_members(tmp_path / "o.toml", {**doc, "federation_id": "other"})
    capsys.readouterr()
    assert (
        main(["federation", "propose", "--current", str(v1), "--members", str(other), "--out", str(v2)]) == 2
    )
    assert "(field federation_id)" in capsys.readouterr().err
    assert not v2.exists()
    # init never overwrites a manifest somebody may already be signing.
    assert main(["federation", "init", "--members", str(tmp_path / "m.toml"), "--out", str(v1)]) == 2
    assert "file_exists" in capsys.readouterr().err


def test_show_text_and_json(
    tmp_path: Path, keys: dict[str, NodeKey], capsys: pytest.CaptureFixture[str]
) -> None:
    v1 = tmp_path / "v1.manifest"
    doc = members_doc(keys, ["shanghai", "jiangsu", "anhui"], 2)
    doc["members"][2]["relay"] = "jiangsu"
    doc["members"][1]["keys"][0]["not_after"] = "2030-01-01T00:00:00+08:00"
    init_manifest(write_members(tmp_path / "m.toml", doc), v1, FakeClock(NOW_MS))
    sign(tmp_path, v1, "jiangsu")
    capsys.readouterr()

    assert main(["federation", "show", "--manifest", str(v1), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["federation_id"], summary["version"], summary["threshold"]) == ("yrd", 1, 2)
    assert summary["issued_at"] == "2026-01-01T00:00:00Z"
    assert summary["expires_at"] == "2026-01-31T00:00:00Z"
    js = summary["members"][1]
    assert js["keys"][0]["not_before"] == "2026-01-01T00:00:00Z"
    assert js["keys"][0]["not_after"] == "2029-12-31T16:00:00Z"
    assert js["keys"][0]["status"] == "active"
    assert summary["members"][0]["keys"][0]["not_after"] == "2026-01-31T00:00:00Z"
    assert summary["members"][2]["relay"] == "jiangsu"
    assert summary["signatures"] == [{"node_id": "jiangsu", "key_id": keys["jiangsu"].key_id}]
    fingerprint = summary["fingerprint"]

    assert main(["federation", "show", "--manifest", str(v1)]) == 0
    text = capsys.readouterr().out
    for expected in (
        "federation yrd  version 1  threshold 2",
        "relayed by jiangsu",
        "prefixes 34",
        "http://127.0.0.1:7201",
        f"fingerprint {fingerprint}",
        keys["anhui"].key_id,
    ):
        assert expected in text


def test_expired_anchor_is_refused_with_a_fixed_clock(tmp_path: Path, keys: dict[str, NodeKey]) -> None:
    v1 = tmp_path / "v1.manifest"
    doc = members_doc(keys, ["shanghai", "jiangsu"], 1)
    init_manifest(write_members(tmp_path / "m.toml", doc), v1, FakeClock(NOW_MS))
    sign(tmp_path, v1, "shanghai")
    result, previous = verify_manifest_file(v1, None, FakeClock(NOW_MS + 29 * DAY_MS))
    assert result.manifest.version == 1
    assert previous is None
    with pytest.raises(ManifestRejected) as info:
        verify_manifest_file(v1, None, FakeClock(NOW_MS + 30 * DAY_MS))
    assert info.value.code == "expired"
    assert load_signed_manifest(v1).signatures[0].node_id == "shanghai"


def base_doc() -> dict[str, Any]:
    key = NodeKey.from_seed(bytes(32))
    other = NodeKey.from_seed(bytes([1]) * 32)
    return {
        "federation_id": "yrd",
        "threshold": 1,
        "members": [member("shanghai", "31", key, 0), member("jiangsu", "32", other, 1)],
    }


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("federation_id",), "YRD!", "federation_id"),
        (("threshold",), 3, "threshold"),
        (("threshold",), 0, "threshold"),
        (("valid_days",), "a year", "valid_days"),
        (("colour",), "red", "colour"),
        (("members", 1, "node_id"), "JS", "members[1].node_id"),
        (("members", 1, "node_id"), "shanghai", "members[1].node_id"),
        (("members", 1, "jurisdictions"), ["3299"], "members[1].jurisdictions[0]"),
        (("members", 1, "jurisdictions"), [32], "members[1].jurisdictions[0]"),
        (("members", 1, "jurisdictions"), ["31"], "members[1].jurisdictions[0]"),
        (("members", 1, "jurisdictions"), [], "members[1].jurisdictions"),
        (("members", 1, "grpc_endpoint"), "127.0.0.1", "members[1].grpc_endpoint"),
        (("members", 1, "http_endpoint"), "127.0.0.1:80", "members[1].http_endpoint"),
        (("members", 1, "relay"), "jiangsu", "members[1].relay"),
        (("members", 1, "relay"), "nobody", "members[1].relay"),
        (("members", 1, "keys"), [], "members[1].keys"),
        (("members", 1, "keys", 0, "public_key"), "abcd", "members[1].keys[0].public_key"),
        (("members", 1, "keys", 0, "status"), "retired", "members[1].keys[0].status"),
        (("members", 1, "keys", 0, "not_before"), "yesterday", "members[1].keys[0].not_before"),
        (("members", 1, "keys", 0, "not_before"), "2026-01-01T00:00:00", "members[1].keys[0].not_before"),
        (("members", 1, "keys", 0, "not_after"), "2025-01-01T00:00:00Z", "members[1].keys[0].not_after"),
        (("members", 1, "keys", 0, "key_id"), "k-1", "members[1].keys[0].key_id"),
    ],
)
def test_bad_member_values_name_their_key_path(
    path: tuple[str | int, ...], value: object, field: str
) -> None:
    doc = base_doc()
    target: Any = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    with pytest.raises(ConfigError) as info:
        manifest_from_members(doc, version=1, now_ms=NOW_MS)
    assert info.value.field == field


def test_duplicate_key_across_members_names_the_second() -> None:
    doc = base_doc()
    doc["members"][1]["keys"] = doc["members"][0]["keys"]
    with pytest.raises(ConfigError) as info:
        manifest_from_members(doc, version=1, now_ms=NOW_MS)
    assert info.value.field == "members[1].keys[0].public_key"


def test_members_conversion_derives_ids_and_windows() -> None:
    manifest = manifest_from_members(base_doc(), version=7, now_ms=NOW_MS)
    assert manifest.version == 7
    assert manifest.expires_at_ms == NOW_MS + 365 * DAY_MS
    key = manifest.members[0].keys[0]
    assert key.key_id == NodeKey.from_seed(bytes(32)).key_id
    assert (key.not_before_ms, key.not_after_ms) == (NOW_MS, manifest.expires_at_ms)
    assert key.status == manifest_pb2.KEY_STATUS_ACTIVE
    assert manifest.members[0].display_name == "Shanghai"


def test_bad_members_file_via_cli_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = base_doc()
    doc["members"][0]["keys"][0]["status"] = "on"
    members = write_members(tmp_path / "m.toml", doc)
    assert (
        main(["federation", "init", "--members", str(members), "--out", str(tmp_path / "v1.manifest")]) == 2
    )
    assert "(field members[0].keys[0].status)" in capsys.readouterr().err
    assert not (tmp_path / "v1.manifest").exists()
