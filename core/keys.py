"""Node signing keys: Ed25519 seeds on disk, key ids derived from public keys.

A key file holds one line, ``ed25519:<64 hex chars of the seed>``; it is written with
mode 0600 and refused when other users can read it, because whoever reads it can
speak for the node. The key id is derived from the public key so that two operators
can never disagree about which key an id names.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from nacl.signing import SigningKey, VerifyKey

from core.errors import ConfigError

KEY_FILE_PREFIX = "ed25519:"


def key_id_for(public_key: bytes) -> str:
    """``k-`` and the first 16 hex characters of SHA-256 of the raw public key."""
    return "k-" + hashlib.sha256(public_key).hexdigest()[:16]


@dataclass(frozen=True)
class NodeKey:
    signing_key: SigningKey

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def verify_key(self) -> VerifyKey:
        return self.signing_key.verify_key

    @property
    def key_id(self) -> str:
        return key_id_for(self.public_key)

    @property
    def seed(self) -> bytes:
        return bytes(self.signing_key)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte detached Ed25519 signature of ``message``."""
        return self.signing_key.sign(message).signature

    @classmethod
    def generate(cls) -> NodeKey:
        return cls(SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> NodeKey:
        if len(seed) != 32:
            raise ConfigError("an Ed25519 seed is 32 bytes", field="seed")
        return cls(SigningKey(seed))


def save_key(key: NodeKey, path: Path) -> None:
    """Write the key file atomically with mode 0600; never overwrite an existing key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(KEY_FILE_PREFIX + key.seed.hex() + "\n")


def load_key(path: Path) -> NodeKey:
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as e:
        raise ConfigError(f"cannot read key file {path}: {e.strerror}", field="key_file") from e
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"key file {path} is readable by others; chmod 600 it", field="key_file")
    if not text.startswith(KEY_FILE_PREFIX):
        raise ConfigError(f"key file {path} does not start with {KEY_FILE_PREFIX!r}", field="key_file")
    try:
        seed = bytes.fromhex(text[len(KEY_FILE_PREFIX) :])
    except ValueError as e:
        raise ConfigError(f"key file {path} is not hex", field="key_file") from e
    return NodeKey.from_seed(seed)
