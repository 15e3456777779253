"""Sections 3 to 5 of docs/protocol.md: envelopes, responses and sealed payloads.

Every rule cites the section it comes from, so a disagreement with the vectors points at a sentence
of the document. Where the document leaves a choice open, the choice is named in a comment.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace

from nacl import bindings
from nacl.exceptions import CryptoError

from tests.independent import wire
from tests.independent.primitives import (
    SIGNATURE_BYTES,
    Rejected,
    ed25519_sign,
    ed25519_verify,
    i64,
    key_id_for,
    lp,
    public_key_for,
)
from tests.independent.ref_manifest import REVOKED, Manifest, MemberKey

ENVELOPE_DOMAIN = b"yrd-envelope-v1\x00"
NONCE_BYTES = 16
SEAL_OVERHEAD = 48
SEAL_EPK_BYTES = 32
# The reason codes 3.3 can give; section 7 maps them to no gRPC status, the item's receipt carries them.
FORWARDED_CODES = frozenset((
    "malformed_envelope", "unknown_sender", "unknown_key", "key_revoked", "key_not_valid",
    "wrong_destination", "method_mismatch", "bad_signature",
))  # fmt: skip


# Section 3: the envelope.


@dataclass(frozen=True)
class Envelope:
    sender: str
    key_id: str
    destination: str
    method: str
    created_at_ms: int
    nonce: bytes
    body: bytes
    in_reply_to: bytes
    signature: bytes


def envelope_signing_input(env: Envelope) -> bytes:
    return (
        ENVELOPE_DOMAIN
        + lp(env.sender.encode("utf-8"))
        + lp(env.key_id.encode("utf-8"))
        + lp(env.destination.encode("utf-8"))
        + lp(env.method.encode("utf-8"))
        + i64(env.created_at_ms)
        + lp(env.nonce)
        + lp(hashlib.sha256(env.body).digest())
        + lp(env.in_reply_to)
    )


def envelope_digest(env: Envelope) -> bytes:
    return hashlib.sha256(envelope_signing_input(env)).digest()


def sign_envelope(env: Envelope, seed: bytes) -> bytes:
    return ed25519_sign(seed, envelope_signing_input(env))


def signed_request(
    *,
    sender: str,
    seed: bytes,
    destination: str,
    method: str,
    body: bytes,
    at_ms: int,
    nonce: bytes | None = None,
    in_reply_to: bytes = b"",
) -> Envelope:
    """3.1: a request signed with `seed` and naming its key; a fresh random 16-byte nonce and an
    empty `in_reply_to` unless a case needs others."""
    unsigned = Envelope(
        sender=sender,
        key_id=key_id_for(public_key_for(seed)),
        destination=destination,
        method=method,
        created_at_ms=at_ms,
        nonce=os.urandom(NONCE_BYTES) if nonce is None else nonce,
        body=body,
        in_reply_to=in_reply_to,
        signature=b"",
    )
    return replace(unsigned, signature=sign_envelope(unsigned, seed))


class NonceStore:
    """The seen (sender, nonce) pairs of 3.2 step 10; in memory, which is all the vectors need."""

    def __init__(self, seen: Iterable[tuple[str, bytes]] = ()) -> None:
        self._seen = set(seen)

    def check_and_record(self, sender: str, nonce: bytes) -> bool:
        if (sender, nonce) in self._seen:
            return False
        self._seen.add((sender, nonce))
        return True


def _well_formed(env: Envelope) -> bool:
    lengths_ok = len(env.nonce) == NONCE_BYTES and len(env.signature) == SIGNATURE_BYTES
    return lengths_ok and all((env.sender, env.key_id, env.destination, env.method))


def _signer_key(env: Envelope, manifest: Manifest) -> MemberKey:
    """Steps 2 to 5 of 3.2, shared by requests and responses (section 4 steps 2-5)."""
    member = manifest.member(env.sender)
    if member is None:
        raise Rejected("unknown_sender", env.sender)
    key = member.key(env.key_id)
    if key is None:
        raise Rejected("unknown_key", env.key_id)
    if key.status == REVOKED:
        raise Rejected("key_revoked", env.key_id)
    if not key.not_before_ms <= env.created_at_ms < key.not_after_ms:
        raise Rejected("key_not_valid", env.key_id)
    return key


def _check_skew(env: Envelope, now_ms: int, max_skew_ms: int) -> None:
    if abs(now_ms - env.created_at_ms) > max_skew_ms:
        raise Rejected("clock_skew", f"{now_ms - env.created_at_ms} ms")


def _check_signature(env: Envelope, key: MemberKey) -> None:
    if not ed25519_verify(key.public_key, envelope_signing_input(env), env.signature):
        raise Rejected("bad_signature", env.key_id)


def verify_request(
    env: Envelope,
    *,
    manifest: Manifest,
    receiver: str,
    method_called: str,
    now_ms: int,
    max_skew_ms: int,
    nonces: NonceStore,
) -> None:
    """Section 3.2, the ten steps in their order; the first failure decides the code."""
    if not _well_formed(env) or env.in_reply_to:
        raise Rejected("malformed_envelope", "field lengths or empty fields")
    key = _signer_key(env, manifest)
    if env.destination != receiver:
        raise Rejected("wrong_destination", env.destination)
    if env.method != method_called:
        raise Rejected("method_mismatch", env.method)
    _check_skew(env, now_ms, max_skew_ms)
    _check_signature(env, key)
    if not nonces.check_and_record(env.sender, env.nonce):
        raise Rejected("nonce_replayed", env.sender)


def verify_response(
    resp: Envelope, *, request: Envelope, manifest: Manifest, receiver: str, now_ms: int, max_skew_ms: int
) -> None:
    """Section 4, the eleven steps in their order."""
    if not _well_formed(resp):
        raise Rejected("malformed_envelope", "field lengths or empty fields")
    key = _signer_key(resp, manifest)
    if resp.destination != receiver:
        raise Rejected("wrong_destination", resp.destination)
    if resp.sender != request.destination:
        raise Rejected("response_mismatch", "answered by another node")
    if resp.method != request.method:
        raise Rejected("method_mismatch", resp.method)
    if resp.in_reply_to != envelope_digest(request):
        raise Rejected("response_mismatch", "bound to another request")
    _check_skew(resp, now_ms, max_skew_ms)
    _check_signature(resp, key)


def verify_forwarded(inner: Envelope, *, manifest: Manifest, receiver: str, method_called: str) -> None:
    """Section 3.3: no skew step and no nonce step, the inner envelope may have waited for days.

    The role comes from the manifest: destination when addressed here, relay when the manifest
    names the receiver as the relay of the destination, and `wrong_destination` otherwise.
    """
    if not _well_formed(inner) or inner.in_reply_to:
        raise Rejected("malformed_envelope", "field lengths or empty fields")
    key = _signer_key(inner, manifest)
    if inner.destination != receiver:
        destination = manifest.member(inner.destination)
        if destination is None or destination.relay != receiver:
            raise Rejected("wrong_destination", inner.destination)
    if inner.method != method_called:
        raise Rejected("method_mismatch", inner.method)
    _check_signature(inner, key)


def relay_item_id(inner: Envelope) -> str:
    """3.3: a relay's receipt names the forwarded envelope by "fwd:" and the hex of its digest."""
    return "fwd:" + envelope_digest(inner).hex()


def read_envelope(raw: bytes) -> Envelope:
    """An Envelope message by the field numbers of the section 3 table; absent fields read as defaults."""
    strings: dict[int, bytes] = dict.fromkeys((1, 2, 3, 4), b"")
    blobs: dict[int, bytes] = dict.fromkeys((6, 7, 8, 9), b"")
    created_at_ms = 0
    schema = dict.fromkeys((*strings, *blobs), wire.LENGTH_DELIMITED) | {5: wire.VARINT}
    for number, value in wire.known_fields(raw, schema):
        if isinstance(value, int):
            created_at_ms = wire.as_int64(value)
        elif number in strings:
            strings[number] = value
        else:
            blobs[number] = value
    sender, key_id, destination, method = (wire.as_string(strings[n]) for n in (1, 2, 3, 4))
    nonce, body, in_reply_to, signature = (blobs[n] for n in (6, 7, 8, 9))
    return Envelope(sender, key_id, destination, method, created_at_ms, nonce, body, in_reply_to, signature)


def read_forwarded_item(item: bytes) -> Envelope:
    """The `forward` field (2) of a DeliverItem or StatusItem, the two share its number (3.3)."""
    forwarded = [value for _, value in wire.known_fields(item, {2: wire.LENGTH_DELIMITED})]
    if not forwarded:
        raise wire.WireError("the item carries no forward field")
    last = forwarded[-1]
    assert isinstance(last, bytes)
    return read_envelope(last)


# Section 5: sealed payloads.


def x25519_secret_from_seed(seed: bytes) -> bytes:
    h = bytearray(hashlib.sha512(seed).digest()[:32])
    h[0] &= 248
    h[31] &= 127
    h[31] |= 64
    return bytes(h)


def box_nonce(ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    return hashlib.blake2b(ephemeral_public + recipient_public, digest_size=24).digest()


def _shared_key(secret: bytes, public: bytes) -> bytes:
    """X25519 then HSalsa20 (crypto_box_beforenm); libsodium fails on an all-zero X25519 result.

    5.2 asks for that refusal when sealing only; opening refuses it too (sealed_payload_invalid),
    as libsodium's crypto_box_seal_open does.
    """
    try:
        return bytes(bindings.crypto_box_beforenm(public, secret))
    except CryptoError as exc:
        raise Rejected("sealed_payload_invalid", "X25519 gave the all-zero secret") from exc


def seal_with_ephemeral(plaintext: bytes, recipient_public: bytes, ephemeral_secret: bytes) -> bytes:
    """5.2 with the ephemeral key given, so a fixed key reproduces the vector's bytes."""
    ephemeral_public = bytes(bindings.crypto_scalarmult_base(ephemeral_secret))
    key = _shared_key(ephemeral_secret, recipient_public)
    nonce = box_nonce(ephemeral_public, recipient_public)
    return ephemeral_public + bytes(bindings.crypto_secretbox(plaintext, nonce, key))


def open_sealed(sealed: bytes, recipient_seed: bytes) -> bytes:
    secret = x25519_secret_from_seed(recipient_seed)
    if len(sealed) < SEAL_OVERHEAD:
        raise Rejected("sealed_payload_invalid", "shorter than the overhead")
    ephemeral_public = sealed[:SEAL_EPK_BYTES]
    recipient_public = bytes(bindings.crypto_scalarmult_base(secret))
    key = _shared_key(secret, ephemeral_public)
    try:
        nonce = box_nonce(ephemeral_public, recipient_public)
        return bytes(bindings.crypto_secretbox_open(sealed[SEAL_EPK_BYTES:], nonce, key))
    except CryptoError as exc:
        raise Rejected("sealed_payload_invalid", "tag does not verify") from exc
