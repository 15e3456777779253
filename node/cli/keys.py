"""``yrd keys``: create and inspect node signing keys.

Only the key id and the public key are ever printed; the seed stays in the 0600 file, so
terminal scrollback and shell logs never hold anything that can speak for the node. A
passphrase is read from YRD_KEY_PASSPHRASE (or the file named by YRD_KEY_PASSPHRASE_FILE), or
asked for on the terminal, never taken as an argument: arguments show in ``ps`` and history.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from core.errors import ConfigError, Conflict
from core.keys import NodeKey, is_encrypted, load_key, save_key
from node.config import PASSPHRASE_ENV, key_passphrase


def register(subparsers: Any) -> None:
    keys = subparsers.add_parser("keys", help="create and inspect node signing keys")
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="SUBCOMMAND")

    generate = sub.add_parser("generate", help="write a new Ed25519 key file (mode 0600)")
    generate.add_argument("--out", type=Path, required=True, help="key file to create; never overwritten")
    generate.add_argument(
        "--encrypt",
        action="store_true",
        help=f"encrypt the key with a passphrase (from {PASSPHRASE_ENV} or asked)",
    )
    generate.set_defaults(handler=generate_command)

    encrypt = sub.add_parser("encrypt", help="encrypt an existing key file in place with a passphrase")
    encrypt.add_argument("file", type=Path)
    encrypt.set_defaults(handler=encrypt_command)

    show = sub.add_parser("show", help="print the key id and public key of a key file")
    show.add_argument("file", type=Path)
    show.set_defaults(handler=show_command)


def generate_key_file(path: Path, passphrase: bytes | None = None) -> NodeKey:
    """Create a new key at ``path``; an existing file is a Conflict, never replaced."""
    key = NodeKey.generate()
    try:
        save_key(key, path, passphrase)
    except FileExistsError as e:
        raise Conflict(
            f"{path} already exists; refusing to overwrite a key", code="key_exists", field="--out"
        ) from e
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror}", field="--out") from e
    return key


def describe_key(key: NodeKey) -> str:
    return f"key_id: {key.key_id}\npublic_key: {key.public_key.hex()}"


def new_passphrase(field: str) -> bytes:
    """The passphrase to encrypt with: from the environment, else asked twice on a terminal."""
    if (given := key_passphrase(os.environ)) is not None:
        return given
    if not sys.stdin.isatty():
        raise ConfigError(f"no passphrase: set {PASSPHRASE_ENV} or run on a terminal", field=field)
    first = getpass.getpass("passphrase: ")
    if len(first) < 12:
        raise ConfigError("a key passphrase needs at least 12 characters", field=field)
    if getpass.getpass("again: ") != first:
        raise ConfigError("the two passphrases differ", field=field)
    return first.encode()


def generate_command(args: argparse.Namespace) -> int:
    key = generate_key_file(args.out, new_passphrase("--encrypt") if args.encrypt else None)
    print(f"wrote {args.out}")
    print(describe_key(key))
    return 0


def show_command(args: argparse.Namespace) -> int:
    print(describe_key(load_key(args.file, key_passphrase(os.environ))))
    return 0


def encrypt_command(args: argparse.Namespace) -> int:
    """Replace a plaintext key file by its encrypted form atomically: a crash leaves either."""
    path: Path = args.file
    if is_encrypted(path):
        raise Conflict(f"{path} is already encrypted", code="key_encrypted", field="file")
    key = load_key(path)
    tmp = path.with_name(path.name + ".encrypting")
    tmp.unlink(missing_ok=True)
    save_key(key, tmp, new_passphrase("file"))
    os.replace(tmp, path)
    print(f"encrypted {path} (key {key.key_id})")
    return 0
