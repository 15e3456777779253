"""Node signing keys: Ed25519 seeds on disk, key ids derived from public keys.

A key file holds one line, ``ed25519:<64 hex chars of the seed>``; it is written with
mode 0600 and refused when other users can read it, because whoever reads it can
speak for the node. The key id is derived from the public key so that two operators
can never disagree about which key an id names.

A key may also be kept encrypted at rest with a passphrase, for disks that are backed up or
shared: ``ed25519-sealed:argon2id:<opslimit>:<memlimit>:<salt hex>:<box hex>``, the seed in a
libsodium secret box whose key argon2id derives from the passphrase. The cost parameters
travel in the file so that stronger settings later still open older files.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from nacl import pwhash, secret, utils
from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

from core.errors import ConfigError

KEY_FILE_PREFIX = "ed25519:"
SEALED_PREFIX = "ed25519-sealed:argon2id:"
# libsodium's "moderate" argon2id cost: about a second and 256 MiB, paid once per start.
DEFAULT_OPSLIMIT = pwhash.argon2id.OPSLIMIT_MODERATE
DEFAULT_MEMLIMIT = pwhash.argon2id.MEMLIMIT_MODERATE


def key_id_for(public_key: bytes) -> str:
    """``k-`` and the first 16 hex characters of SHA-256 of the raw public key."""
    return "k-" + hashlib.sha256(public_key).hexdigest()[:16]


@dataclass(frozen=True)
class NodeKey:
    signing_key: SigningKey

    # Kept once computed (the key never changes): every envelope a node signs names its key id,
    # which a SHA-256 of the public key gave afresh each time.
    @functools.cached_property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def verify_key(self) -> VerifyKey:
        return self.signing_key.verify_key

    @functools.cached_property
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


def save_key(
    key: NodeKey,
    path: Path,
    passphrase: bytes | None = None,
    *,
    opslimit: int = DEFAULT_OPSLIMIT,
    memlimit: int = DEFAULT_MEMLIMIT,
) -> None:
    """Write the key file with mode 0600, encrypted when a passphrase is given; never
    overwrite an existing key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        _sealed_text(key, passphrase, opslimit, memlimit) if passphrase else KEY_FILE_PREFIX + key.seed.hex()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


def _sealed_text(key: NodeKey, passphrase: bytes, opslimit: int, memlimit: int) -> str:
    salt = utils.random(pwhash.argon2id.SALTBYTES)
    box = secret.SecretBox(_derive(passphrase, salt, opslimit, memlimit))
    sealed = bytes(box.encrypt(key.seed))
    return f"{SEALED_PREFIX}{opslimit}:{memlimit}:{salt.hex()}:{sealed.hex()}"


def _derive(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    return pwhash.argon2id.kdf(
        secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit=opslimit, memlimit=memlimit
    )


def is_encrypted(path: Path) -> bool:
    try:
        return path.read_text().startswith(SEALED_PREFIX)
    except OSError:
        return False


def load_key(path: Path, passphrase: bytes | None = None) -> NodeKey:
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as e:
        raise ConfigError(f"cannot read key file {path}: {e.strerror}", field="key_file") from e
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"key file {path} is readable by others; chmod 600 it", field="key_file")
    if text.startswith(SEALED_PREFIX):
        return _open_sealed(path, text[len(SEALED_PREFIX) :], passphrase)
    if not text.startswith(KEY_FILE_PREFIX):
        raise ConfigError(f"key file {path} does not start with {KEY_FILE_PREFIX!r}", field="key_file")
    try:
        seed = bytes.fromhex(text[len(KEY_FILE_PREFIX) :])
    except ValueError as e:
        raise ConfigError(f"key file {path} is not hex", field="key_file") from e
    return NodeKey.from_seed(seed)


def _open_sealed(path: Path, rest: str, passphrase: bytes | None) -> NodeKey:
    if not passphrase:
        raise ConfigError(
            f"key file {path} is encrypted; give its passphrase (YRD_KEY_PASSPHRASE)",
            code="key_encrypted",
            field="key_file",
        )
    try:
        ops, mem, salt_hex, box_hex = rest.split(":")
        opslimit, memlimit, salt, sealed = int(ops), int(mem), bytes.fromhex(salt_hex), bytes.fromhex(box_hex)
    except ValueError as e:
        raise ConfigError(f"encrypted key file {path} is malformed", field="key_file") from e
    if not (len(salt) == pwhash.argon2id.SALTBYTES and 0 < opslimit <= 2**20 and 0 < memlimit <= 2**33):
        raise ConfigError(f"encrypted key file {path} has out-of-range parameters", field="key_file")
    try:
        seed = secret.SecretBox(_derive(passphrase, salt, opslimit, memlimit)).decrypt(sealed)
    except CryptoError as e:
        raise ConfigError(
            f"wrong passphrase for key file {path}", code="key_passphrase_wrong", field="key_file"
        ) from e
    return NodeKey.from_seed(seed)
