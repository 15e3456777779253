"""Detached Ed25519 signatures over bundle files.

The signature covers the exact file bytes behind a domain-separation prefix and the
length, so a bundle signature can never be replayed as an envelope or manifest signature
and a truncated file cannot verify. The ``.sig`` file is a small JSON object naming the
key id, so rotating the node key gives a clear "signed by another key" error instead of
a bare "bad signature". OPA once accepted a bundle whose signature had been stripped:
here a missing ``.sig`` is a refusal, never a fallback to unsigned loading.
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from core.errors import ConfigError
from core.keys import NodeKey, key_id_for

DOMAIN = b"yrd-policy-bundle-v1\x00"


def signing_message(data: bytes) -> bytes:
    return DOMAIN + struct.pack(">I", len(data)) + data


def sig_path_for(bundle: Path) -> Path:
    return bundle.with_name(bundle.name + ".sig")


def sign_bundle_bytes(data: bytes, key: NodeKey) -> bytes:
    """The content of the ``.sig`` file for ``data``."""
    body = {
        "alg": "ed25519",
        "key_id": key.key_id,
        "signature": base64.b64encode(key.sign(signing_message(data))).decode("ascii"),
    }
    return (json.dumps(body, indent=2) + "\n").encode("utf-8")


def sign_bundle(bundle: Path, key: NodeKey) -> Path:
    """Write ``<bundle>.sig`` next to the bundle; returns its path."""
    try:
        data = bundle.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read bundle {bundle}: {e.strerror}", field="bundle") from e
    sig = sig_path_for(bundle)
    tmp = sig.with_name(sig.name + ".tmp")
    tmp.write_bytes(sign_bundle_bytes(data, key))
    tmp.replace(sig)  # atomic, so a reloading holder never reads half a signature
    return sig


def verify_bundle_bytes(data: bytes, sig: bytes, public_key: bytes, source: str) -> None:
    """Raise ConfigError unless ``sig`` is a valid signature of ``data`` by ``public_key``."""
    try:
        body = json.loads(sig.decode("utf-8"))
        alg, key_id, signature = (
            body["alg"],
            body["key_id"],
            base64.b64decode(body["signature"], validate=True),
        )
    # ValueError covers bad UTF-8, bad JSON, bad base64 and integers past Python's digit limit;
    # RecursionError is json's answer to deeply nested brackets.
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise ConfigError(
            f"{source}: signature file is malformed", code="bundle_sig_malformed", field="sig"
        ) from e
    if alg != "ed25519":
        raise ConfigError(f"{source}: unsupported signature algorithm {alg!r}", code="bundle_sig_malformed")
    expected = key_id_for(public_key)
    if key_id != expected:
        raise ConfigError(
            f"{source}: signed by key {key_id}, not by this node's key {expected}",
            code="bundle_wrong_key",
            field="sig",
        )
    try:
        VerifyKey(public_key).verify(signing_message(data), signature)
    except (BadSignatureError, ValueError) as e:
        raise ConfigError(
            f"{source}: signature does not match the bundle (altered after signing?)",
            code="bundle_bad_signature",
            field="sig",
        ) from e


def read_signed(bundle: Path, public_key: bytes) -> bytes:
    """The bundle's bytes, only after its detached signature verified against ``public_key``."""
    sig = sig_path_for(bundle)
    try:
        data = bundle.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read bundle {bundle}: {e.strerror}", code="bundle_unreadable") from e
    try:
        sig_bytes = sig.read_bytes()
    except FileNotFoundError as e:
        raise ConfigError(
            f"{bundle} is not signed (no {sig.name})", code="bundle_unsigned", field="sig"
        ) from e
    except OSError as e:
        raise ConfigError(f"cannot read {sig}: {e.strerror}", code="bundle_unreadable", field="sig") from e
    verify_bundle_bytes(data, sig_bytes, public_key, str(bundle))
    return data
