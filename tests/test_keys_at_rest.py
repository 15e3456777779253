"""Private keys encrypted at rest with a passphrase: written sealed, opened only with the
right passphrase, never readable from the file, and converted in place without a window."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from nacl import pwhash

from core.errors import ConfigError
from core.keys import NodeKey, is_encrypted, load_key, save_key
from node.cli.main import main
from node.config import key_passphrase

FAST = {"opslimit": pwhash.argon2id.OPSLIMIT_MIN, "memlimit": pwhash.argon2id.MEMLIMIT_MIN}
PASSPHRASE = "correct horse battery staple"


def test_a_sealed_key_opens_only_with_its_passphrase(tmp_path: Path) -> None:
    key = NodeKey.generate()
    path = tmp_path / "node.key"
    save_key(key, path, b"s3cret passphrase", **FAST)
    text = path.read_text()
    assert key.seed.hex() not in text
    assert is_encrypted(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(path, b"s3cret passphrase").key_id == key.key_id
    with pytest.raises(ConfigError) as missing:
        load_key(path)
    assert missing.value.code == "key_encrypted"
    with pytest.raises(ConfigError) as wrong:
        load_key(path, b"another passphrase")
    assert wrong.value.code == "key_passphrase_wrong"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t.replace(":", ";", 3),
        lambda t: t.rsplit(":", 1)[0] + ":zz",
        lambda t: t.replace(":argon2id:", ":argon2id:999999999999:"),
    ],
)
def test_a_damaged_sealed_key_is_a_config_error(tmp_path: Path, tamper: object) -> None:
    path = tmp_path / "node.key"
    save_key(NodeKey.generate(), path, b"pass", **FAST)
    path.write_text(tamper(path.read_text().strip()))  # type: ignore[operator]
    with pytest.raises(ConfigError):
        load_key(path, b"pass")


def test_passphrase_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    assert key_passphrase({}) is None
    assert key_passphrase({"YRD_KEY_PASSPHRASE": "abc"}) == b"abc"
    secret_file = tmp_path / "pass"
    secret_file.write_text("from a file\n")
    assert key_passphrase({"YRD_KEY_PASSPHRASE_FILE": str(secret_file)}) == b"from a file"
    with pytest.raises(ConfigError) as e:
        key_passphrase({"YRD_KEY_PASSPHRASE_FILE": str(tmp_path / "absent")})
    assert e.value.field == "YRD_KEY_PASSPHRASE_FILE"


def test_cli_generates_shows_and_encrypts_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = tmp_path / "plain.key"
    assert main(["keys", "generate", "--out", str(plain)]) == 0
    key_id = load_key(plain).key_id
    monkeypatch.setenv("YRD_KEY_PASSPHRASE", PASSPHRASE)
    assert main(["keys", "encrypt", str(plain)]) == 0
    assert is_encrypted(plain)
    assert load_key(plain, PASSPHRASE.encode()).key_id == key_id
    assert not list(tmp_path.glob("*.encrypting"))
    assert main(["keys", "encrypt", str(plain)]) == 2  # already encrypted: refused, file kept
    capsys.readouterr()
    assert main(["keys", "show", str(plain)]) == 0
    assert key_id in capsys.readouterr().out
    monkeypatch.delenv("YRD_KEY_PASSPHRASE")
    assert main(["keys", "show", str(plain)]) == 2
    assert "key_encrypted" in capsys.readouterr().err


def test_cli_refuses_to_encrypt_without_a_passphrase_off_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("YRD_KEY_PASSPHRASE", raising=False)
    monkeypatch.delenv("YRD_KEY_PASSPHRASE_FILE", raising=False)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["keys", "generate", "--out", str(tmp_path / "k.key"), "--encrypt"]) == 2
    assert "--encrypt" in capsys.readouterr().err
    assert not (tmp_path / "k.key").exists()
