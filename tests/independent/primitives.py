"""The building blocks every section of docs/protocol.md uses: encodings, key ids, Ed25519, codes."""

from __future__ import annotations

import hashlib
import struct

from nacl import bindings
from nacl.exceptions import BadSignatureError

SIGNATURE_BYTES = 64

# Section 7.
GRPC_STATUS = {
    **dict.fromkeys(
        [
            "malformed_envelope",
            "unknown_sender",
            "unknown_key",
            "key_revoked",
            "key_not_valid",
            "wrong_destination",
            "method_mismatch",
            "clock_skew",
            "bad_signature",
            "nonce_replayed",
            "response_mismatch",
        ],
        "UNAUTHENTICATED",
    ),
    # 5.2, 7 and 10.3: what refuses one item only is carried in that item's receipt.
    **dict.fromkeys(
        [
            "sealed_payload_invalid",
            "origin_mismatch",
            "invalid_application_id",
            "id_taken",
            "unknown_service",
            "unknown_version",
            "bad_time",
            "stamped_ahead",
            "fields_present_mismatch",
            "malformed_body",
            "nested_forward",
            "malformed_status",
            "unknown_application",
        ],
        "RECEIPT",
    ),
    **dict.fromkeys(
        [
            "malformed_manifest",
            "no_quorum",
            "federation_mismatch",
            "rollback",
            "expired",
            "no_quorum_of_previous",
        ],
        "FAILED_PRECONDITION",
    ),
}


class Rejected(Exception):
    """A refusal with the stable reason code of section 7."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


# Section 1 and 2.


def lp(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def i64(value: int) -> bytes:
    return struct.pack(">q", value)


def key_id_for(public_key: bytes) -> str:
    return "k-" + hashlib.sha256(public_key).hexdigest()[:16]


def public_key_for(seed: bytes) -> bytes:
    public_key, _ = bindings.crypto_sign_seed_keypair(seed)
    return bytes(public_key)


def ed25519_sign(seed: bytes, message: bytes) -> bytes:
    _, secret_key = bindings.crypto_sign_seed_keypair(seed)
    return bytes(bindings.crypto_sign(message, secret_key)[:SIGNATURE_BYTES])


def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    if len(public_key) != 32 or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        bindings.crypto_sign_open(signature + message, public_key)
    except (BadSignatureError, ValueError):
        return False
    return True
