"""``yrd bench crypto``: the per-item cryptography of a routed application, in process.

Each routed application costs the origin one envelope signature and one sealed box, and
the owner one verification and one unseal (receipts and status updates add signatures
and verifications). These rates bound what the cryptography alone would allow.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from nacl.signing import VerifyKey
from yrd.envelope.v1.envelope_pb2 import Envelope

from core.keys import NodeKey
from node.trust.envelope import seal_envelope, signing_input
from node.trust.sealing import seal, unseal

PAYLOAD_BYTES = 2048  # about one sample application with its attachments


@dataclass(frozen=True)
class CryptoResult:
    sign_per_s: float
    verify_per_s: float
    seal_per_s: float
    unseal_per_s: float
    payload_bytes: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _rate(fn: Callable[[], object], seconds: float) -> float:
    done = 0
    start = time.perf_counter()
    stop_at = start + seconds
    while True:
        for _ in range(50):
            fn()
        done += 50
        now = time.perf_counter()
        if now >= stop_at:
            return round(done / (now - start), 1)


def run(seconds: float = 1.0) -> CryptoResult:
    key = NodeKey.generate()
    body = os.urandom(PAYLOAD_BYTES)

    def sign() -> Envelope:
        return seal_envelope(
            key, sender="shanghai", destination="jiangsu", method="/m", body=body, now_ms=1_700_000_000_000
        )

    env = sign()
    verify_key = VerifyKey(key.public_key)
    sealed = seal(key.public_key, body)
    return CryptoResult(
        # Verification as the peer service does it: rebuild the signing input, then check.
        sign_per_s=_rate(sign, seconds),
        verify_per_s=_rate(lambda: verify_key.verify(signing_input(env), env.signature), seconds),
        seal_per_s=_rate(lambda: seal(key.public_key, body), seconds),
        unseal_per_s=_rate(lambda: unseal(key, sealed), seconds),
        payload_bytes=PAYLOAD_BYTES,
    )
