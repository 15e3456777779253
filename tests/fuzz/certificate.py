"""E-certificate verification (docs/protocol.md, 15): damaged certificates, in their file
form or their QR text, are refused with a reason code and never raise; one that passes says
exactly what the issuer signed.

Run long: ``python -m tests.fuzz.certificate -atheris_runs=100000``.
"""

from __future__ import annotations

import hashlib

from yrd.certificate.v1.certificate_pb2 import (
    HOLDER_KIND_PERSON,
    Certificate,
    CertifiedField,
    Holder,
    SignedCertificate,
)
from yrd.federation.v1 import manifest_pb2 as mpb

from core.errors import CERTIFICATE_REASONS
from core.keys import NodeKey
from registry.certificates import decode, describe, sign_certificate, to_text, verify
from registry.manifest import sign_manifest, verify_anchor
from tests.fuzz import MODES, mutate, run

NOW = 1_767_225_600_000
DAY = 86_400_000
KEYS = {n: NodeKey.from_seed(hashlib.sha256(f"certificate-{n}".encode()).digest()) for n in ("a", "b")}


def _manifest() -> mpb.SignedManifest:
    members = [
        mpb.Member(
            node_id=f"node-{n}",
            jurisdictions=[prefix],
            keys=[
                mpb.MemberKey(
                    key_id=k.key_id,
                    public_key=k.public_key,
                    not_before_ms=NOW - DAY,
                    not_after_ms=NOW + 30 * DAY,
                    status=mpb.KEY_STATUS_ACTIVE,
                )
            ],
        )
        for (n, k), prefix in zip(KEYS.items(), ("33", "34"), strict=True)
    ]
    body = mpb.Manifest(
        federation_id="yrd",
        version=1,
        threshold=2,
        issued_at_ms=NOW,
        expires_at_ms=NOW + 10 * DAY,
        members=members,
    ).SerializeToString()
    out = mpb.SignedManifest(manifest=body)
    for n, k in KEYS.items():
        out = sign_manifest(out, f"node-{n}", k)
    return out


MANIFEST = verify_anchor(_manifest())
SEED: SignedCertificate = sign_certificate(
    Certificate(
        certificate_id="node-a/0193a1b2c3d4e5f60718293a4b5c",
        name="出生医学证明",
        name_en="Birth certificate",
        holder=Holder(kind=HOLDER_KIND_PERSON, display_name="王*明", display_id="330106********123X"),
        fields=[CertifiedField(name="birth_certificate_number", label="证明编号", value="Q330100123")],
        issued_at_ms=NOW,
        valid_until_ms=NOW + 365 * DAY,
        issuer="node-a",
        department="杭州市卫生健康委员会",
        service_id="zj.hangzhou.birth-certificate",
        application_id="0193a1b2c3d4e5f60718293a4b5c",
    ),
    KEYS["a"],
)
SEED_BYTES = SEED.SerializeToString()
SEED_TEXT = to_text(SEED).encode()


def fuzz_one(data: bytes) -> None:
    """Mode byte: the low part picks the edit of :func:`tests.fuzz.mutate`, the rest whether
    the file form or the QR text is damaged."""
    if not data:
        return
    seed = SEED_TEXT if (data[0] // MODES) % 2 else SEED_BYTES
    candidate = mutate(seed, data[0] % MODES, data[1:])
    verdict = verify(candidate, MANIFEST, NOW + DAY)
    assert verdict.reason in ("valid", *CERTIFICATE_REASONS), verdict
    assert verdict.valid == (verdict.reason == "valid"), verdict
    if verdict.valid:
        # Re-encoded, padded with unknown fields, re-cased: any of that may pass, but only
        # if every signed field and the signature are the seed's.
        assert decode(candidate).signature == SEED.signature
        assert verdict.certificate == describe(SEED), "an altered certificate was accepted"


if __name__ == "__main__":
    run(fuzz_one)
