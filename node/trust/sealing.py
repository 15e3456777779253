"""Sealed payloads: personal data encrypted to the destination node alone.

A relay forwarding an application sees the routing metadata of the transfer but not the
applicant. Nodes have only Ed25519 identity keys, so the X25519 keys for the sealed box
are derived from them (docs/protocol.md, section 5); the manifest stays the one place a
node's key is published.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519, crypto_sign_ed25519_sk_to_curve25519
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from core.errors import InvalidInput
from core.keys import NodeKey

# 32-byte ephemeral public key plus the 16-byte Poly1305 tag.
SEAL_OVERHEAD = 48

# Distinct recipient keys a node seals to: each member's current and next key. A bound well
# above a federation's size keeps every one of them converted once.
_CONVERTED_KEYS = 256
# A node's own keys: the current one and those of a rotation under way.
_OWN_KEYS = 8


@functools.lru_cache(maxsize=_CONVERTED_KEYS)
def x25519_public_key(ed25519_public_key: bytes) -> bytes:
    """The recipient's X25519 key, converted once per key: the conversion (a field inversion)
    costs as much as the seal itself, and every application to an owner seals to the same key.
    Public keys only, so the cache holds nothing secret; a key that is refused is not cached."""
    if len(ed25519_public_key) != 32:
        raise InvalidInput("an Ed25519 public key is 32 bytes", code="recipient_key_invalid")
    try:
        return bytes(crypto_sign_ed25519_pk_to_curve25519(ed25519_public_key))
    except CryptoError as e:  # not a point on the curve
        raise InvalidInput("not a usable Ed25519 public key", code="recipient_key_invalid") from e


def x25519_secret_key(key: NodeKey) -> bytes:
    return bytes(crypto_sign_ed25519_sk_to_curve25519(key.seed + key.public_key))


def seal(recipient_public_key: bytes, plaintext: bytes) -> bytes:
    """``ephemeral_pk || ciphertext`` for the holder of ``recipient_public_key`` (Ed25519)."""
    box = SealedBox(PublicKey(x25519_public_key(recipient_public_key)))
    return bytes(box.encrypt(plaintext))


@functools.lru_cache(maxsize=_OWN_KEYS)
def _opener(key: NodeKey) -> SealedBox[PrivateKey]:
    """The box that opens payloads sealed to ``key``, made once per key: deriving the X25519
    secret and its public half (a scalar multiplication) cost more than the opening itself,
    once per payload. It holds no more than the node's key, which the process holds anyway."""
    return SealedBox(PrivateKey(x25519_secret_key(key)))


def unseal(keys: NodeKey | Sequence[NodeKey], sealed: bytes) -> bytes:
    """Open with the first of ``keys`` that fits. A node passes its current key first and
    then its other ones (node/trust/keyring.py), because an origin seals to the key the
    manifest it holds names, which differs from ours around a rotation; a wrong key fails
    on the tag, at once."""
    if len(sealed) < SEAL_OVERHEAD:
        raise InvalidInput(
            "sealed payload is too short", code="sealed_payload_invalid", field="sealed_payload"
        )
    for key in [keys] if isinstance(keys, NodeKey) else keys:
        try:
            return bytes(_opener(key).decrypt(sealed))
        except CryptoError:
            continue
    raise InvalidInput(
        "sealed payload does not open with this node's keys",
        code="sealed_payload_invalid",
        field="sealed_payload",
    )
