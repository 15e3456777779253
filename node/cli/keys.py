"""``yrd keys``: create and inspect node signing keys.

Only the key id and the public key are ever printed; the seed stays in the 0600 file, so
terminal scrollback and shell logs never hold anything that can speak for the node.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from core.errors import ConfigError, Conflict
from core.keys import NodeKey, load_key, save_key


def register(subparsers: Any) -> None:
    keys = subparsers.add_parser("keys", help="create and inspect node signing keys")
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="SUBCOMMAND")

    generate = sub.add_parser("generate", help="write a new Ed25519 key file (mode 0600)")
    generate.add_argument("--out", type=Path, required=True, help="key file to create; never overwritten")
    generate.set_defaults(handler=generate_command)

    show = sub.add_parser("show", help="print the key id and public key of a key file")
    show.add_argument("file", type=Path)
    show.set_defaults(handler=show_command)


def generate_key_file(path: Path) -> NodeKey:
    """Create a new key at ``path``; an existing file is a Conflict, never replaced."""
    key = NodeKey.generate()
    try:
        save_key(key, path)
    except FileExistsError as e:
        raise Conflict(
            f"{path} already exists; refusing to overwrite a key", code="key_exists", field="--out"
        ) from e
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror}", field="--out") from e
    return key


def describe_key(key: NodeKey) -> str:
    return f"key_id: {key.key_id}\npublic_key: {key.public_key.hex()}"


def generate_command(args: argparse.Namespace) -> int:
    key = generate_key_file(args.out)
    print(f"wrote {args.out}")
    print(describe_key(key))
    return 0


def show_command(args: argparse.Namespace) -> int:
    print(describe_key(load_key(args.file)))
    return 0
