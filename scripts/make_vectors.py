"""Regenerate docs/protocol-vectors.json from fixed seeds, nonces and times.

Everything here is deterministic (Ed25519 signatures are; the one random input of a
sealed box, the ephemeral key, is fixed too), so running it twice gives the same file and
tests/test_protocol_vectors.py can insist the committed file is fresh. Usage:
``python scripts/make_vectors.py`` writes the file, ``--check`` only compares.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from nacl.bindings import crypto_box_easy, crypto_scalarmult_base
from yrd.certificate.v1.certificate_pb2 import (
    HOLDER_KIND_ORGANISATION,
    Certificate,
    CertifiedField,
    Holder,
    SignedCertificate,
)
from yrd.envelope.v1.envelope_pb2 import Envelope
from yrd.federation.v1 import manifest_pb2 as mpb
from yrd.peer.v1 import peer_pb2

from core.keys import NodeKey
from node.trust.envelope import request_digest, seal_envelope, signing_input
from node.trust.sealing import x25519_public_key, x25519_secret_key
from registry.certificates import MAX_CERTIFICATE_BYTES, MAX_FUTURE_SKEW_MS, sign_certificate, to_text
from registry.certificates import signing_input as certificate_signing_input
from registry.manifest import fingerprint, manifest_signing_input

OUT = Path(__file__).resolve().parent.parent / "docs" / "protocol-vectors.json"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY = 86_400_000
DELIVER = "/yrd.peer.v1.PeerService/Deliver"
NOTIFY = "/yrd.peer.v1.PeerService/NotifyStatus"
FEDERATION = "yrd-delta"
STATUS = {
    mpb.KEY_STATUS_ACTIVE: "active",
    mpb.KEY_STATUS_RETIRING: "retiring",
    mpb.KEY_STATUS_REVOKED: "revoked",
}


def seed_for(name: str) -> bytes:
    return hashlib.sha256(b"yrd-vector-seed:" + name.encode()).digest()


KEY_NAMES = ["sh-1", "sh-2", "js-0", "js-1", "zj-0", "zj-1", "zj-next", "ah-1", "sz-1", "outsider"]
KEYS = {name: NodeKey.from_seed(seed_for(name)) for name in KEY_NAMES}


def nonce(i: int) -> bytes:
    return bytes(range(i, i + 16))


def key_entry(key: str, nb: int, na: int, status: int = mpb.KEY_STATUS_ACTIVE) -> mpb.MemberKey:
    k = KEYS[key]
    return mpb.MemberKey(
        key_id=k.key_id, public_key=k.public_key, not_before_ms=nb, not_after_ms=na, status=status
    )


def member(node: str, name: str, juris: list[str], keys: list[mpb.MemberKey], relay: str = "") -> mpb.Member:
    short = node.removeprefix("node-")
    return mpb.Member(
        node_id=node,
        display_name=name,
        jurisdictions=juris,
        grpc_endpoint=f"{short}.yrd.example:7443",
        http_endpoint=f"https://{short}.yrd.example",
        keys=keys,
        relay=relay,
    )


def tls_certificate(name: str, dns_name: str, serial: int) -> bytes:
    """A pinned certificate (docs/protocol.md 6.8) that is the same bytes on every run: an
    Ed25519 key from a seed (Ed25519 signs deterministically), fixed serial, names and dates."""
    key = Ed25519PrivateKey.from_private_bytes(seed_for(f"tls:{name}"))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = datetime.datetime.fromtimestamp(T0 / 1000, datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=730))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
        .sign(key, None)
    )
    return cert.public_bytes(serialization.Encoding.DER)


YEAR = (T0 - DAY, T0 + 365 * DAY)
SH = member("node-sh", "上海", ["31"], [key_entry("sh-1", *YEAR)])
JS = member(
    "node-js",
    "江苏",
    ["32"],
    [key_entry("js-1", *YEAR), key_entry("js-0", T0 - 30 * DAY, T0 + 365 * DAY, mpb.KEY_STATUS_REVOKED)],
)
ZJ = member(
    "node-zj",
    "浙江",
    ["33"],
    [
        key_entry("zj-1", *YEAR),
        key_entry("zj-next", T0 + 10 * DAY, T0 + 365 * DAY),
        key_entry("zj-0", T0 - 30 * DAY, T0, mpb.KEY_STATUS_RETIRING),
    ],
)
AH = member("node-ah", "安徽", ["34"], [key_entry("ah-1", *YEAR)])
SZ = member("node-sz", "苏州", ["3205"], [key_entry("sz-1", *YEAR)], relay="node-js")
SH_ROTATING = member(
    "node-sh", "上海", ["31"], [key_entry("sh-1", *YEAR, mpb.KEY_STATUS_RETIRING), key_entry("sh-2", *YEAR)]
)
SH_ROTATED = member("node-sh", "上海", ["31"], [key_entry("sh-2", *YEAR)])


def manifest(version: int, threshold: int, members: list[mpb.Member], **over: Any) -> bytes:
    fields: dict[str, Any] = {
        "federation_id": FEDERATION,
        "version": version,
        "threshold": threshold,
        "issued_at_ms": T0 + (version - 1) * DAY,
        "expires_at_ms": T0 + 90 * DAY,
        "members": members,
    }
    fields.update(over)
    return mpb.Manifest(**fields).SerializeToString()


def signed(name: str, body: bytes, signers: list[tuple[str, str]], tamper: str = "") -> dict[str, Any]:
    """``signers`` are (node id, key name); ``tamper`` names a key whose signature is spoilt."""
    sm = mpb.SignedManifest(manifest=body)
    for node, key in signers:
        sig = KEYS[key].sign(manifest_signing_input(body + b"x" if key == tamper else body))
        sm.signatures.append(mpb.ManifestSignature(node_id=node, key_id=KEYS[key].key_id, signature=sig))
    return {
        "name": name,
        "manifest": body.hex(),
        "summary": summary(body),
        "signing_input": manifest_signing_input(body).hex(),
        "fingerprint": fingerprint(body),
        "signatures": [
            {"node_id": s.node_id, "key_id": s.key_id, "signature": s.signature.hex()} for s in sm.signatures
        ],
        "signed_manifest": sm.SerializeToString().hex(),
    }


def summary(body: bytes) -> dict[str, Any] | str:
    m = mpb.Manifest()
    try:
        m.ParseFromString(body)
    except Exception:
        return "not a Manifest message"
    return {
        "federation_id": m.federation_id,
        "version": m.version,
        "threshold": m.threshold,
        "issued_at_ms": m.issued_at_ms,
        "expires_at_ms": m.expires_at_ms,
        "members": [
            {
                "node_id": x.node_id,
                "jurisdictions": list(x.jurisdictions),
                "relay": x.relay,
                "keys": [
                    {
                        "key_id": k.key_id,
                        "public_key": k.public_key.hex(),
                        "not_before_ms": k.not_before_ms,
                        "not_after_ms": k.not_after_ms,
                        "status": STATUS.get(k.status, f"unspecified({k.status})"),
                    }
                    for k in x.keys
                ],
            }
            for x in m.members
        ],
    }


def manifests() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    v1 = manifest(1, 2, [SH, JS, ZJ])
    v2 = manifest(2, 3, [SH, JS, ZJ, AH, SZ])
    v3 = manifest(3, 3, [SH_ROTATING, JS, ZJ, AH, SZ])
    v4 = manifest(4, 2, [SH_ROTATED, JS, AH, SZ])
    v5 = manifest(5, 2, [SH_ROTATED, JS, AH, SZ], expires_at_ms=T0 + 5 * DAY)
    bad_key = mpb.Member()
    bad_key.CopyFrom(AH)
    bad_key.keys[0].key_id = KEYS["sh-1"].key_id
    bad_window = mpb.Member()
    bad_window.CopyFrom(AH)
    bad_window.keys[0].not_after_ms = bad_window.keys[0].not_before_ms
    no_status = mpb.Member()
    no_status.CopyFrom(AH)
    no_status.keys[0].status = mpb.KEY_STATUS_UNSPECIFIED
    short_key = mpb.Member()
    short_key.CopyFrom(AH)
    short_key.keys[0].public_key = short_key.keys[0].public_key[:31]
    odd_status = mpb.Member()
    odd_status.CopyFrom(AH)
    odd_status.keys[0].status = 7  # type: ignore[assignment]  # proto3 enums are open: 7 parses
    shared_key = member("node-x", "x", ["34"], [key_entry("sh-1", *YEAR)])
    no_id = member("", "x", ["34"], [])
    twice = member("node-x", "x", ["34", "34"], [])
    self_relay = member("node-x", "x", ["3205"], [], relay="node-x")
    relay_chain = member("node-y", "y", ["3206"], [], relay="node-x")
    relayed_relay = member("node-x", "x", ["3205"], [], relay="node-js")
    # Pinned TLS certificates (6.3 rule 10, 6.8): two during a rotation, each naming the member.
    sh_tls = mpb.Member()
    sh_tls.CopyFrom(SH)
    sh_tls.tls_certificates.extend(
        [tls_certificate("node-sh", "node-sh", 1), tls_certificate("node-sh 2", "node-sh", 2)]
    )

    def pinned(*certs: bytes) -> mpb.Member:
        out = mpb.Member()
        out.CopyFrom(SH)
        out.tls_certificates.extend(certs)
        return out

    # Unknown fields (a later version's additions) are skipped by readers and stay signed.
    v1_unknown_fields = manifest(1, 2, [SH, JS, ZJ]) + b"\xa0\x06\x01" + b"\xaa\x06\x03new"
    pair = [("node-sh", "sh-1"), ("node-js", "js-1")]
    malformed = {
        "federation-id-empty": manifest(1, 2, [SH, JS, ZJ], federation_id=""),
        "node-id-empty": manifest(1, 2, [SH, JS, no_id]),
        "public-key-31-bytes": manifest(1, 2, [SH, JS, short_key]),
        "key-status-out-of-range": manifest(1, 2, [SH, JS, odd_status]),
        "key-listed-by-two-members": manifest(1, 2, [SH, JS, shared_key]),
        "jurisdiction-twice-by-one-member": manifest(1, 2, [SH, JS, twice]),
        "relay-is-itself": manifest(1, 2, [SH, JS, self_relay]),
        "relay-is-itself-relayed": manifest(1, 2, [SH, JS, relayed_relay, relay_chain]),
        "threshold-zero": manifest(1, 0, [SH, JS, ZJ]),
        "threshold-above-members": manifest(1, 4, [SH, JS, ZJ]),
        "issued-not-before-expiry": manifest(1, 2, [SH, JS, ZJ], expires_at_ms=T0),
        "duplicate-node-id": manifest(1, 2, [SH, JS, ZJ, SH]),
        "jurisdiction-not-a-province": manifest(1, 2, [SH, JS, member("node-x", "x", ["99"], [])]),
        "jurisdiction-odd-length": manifest(1, 2, [SH, JS, member("node-x", "x", ["320"], [])]),
        "jurisdiction-claimed-twice": manifest(1, 2, [SH, JS, member("node-x", "x", ["31"], [])]),
        "key-id-mismatch": manifest(1, 2, [SH, JS, bad_key]),
        "key-window-empty": manifest(1, 2, [SH, JS, bad_window]),
        "key-status-unspecified": manifest(1, 2, [SH, JS, no_status]),
        "relay-not-a-member": manifest(1, 2, [SH, JS, member("node-x", "x", ["3205"], [], relay="node-zz")]),
        "tls-certificate-names-another-member": manifest(
            1, 2, [pinned(tls_certificate("node-sh", "node-js", 3)), JS, ZJ]
        ),
        "tls-certificate-not-der": manifest(1, 2, [pinned(b"\x30\x03abc"), JS, ZJ]),
        "tls-certificate-twice": manifest(
            1, 2, [pinned(*[tls_certificate("node-sh", "node-sh", 1)] * 2), JS, ZJ]
        ),
        "tls-certificates-same-subject": manifest(
            1,
            2,
            [
                pinned(tls_certificate("node-sh", "node-sh", 1), tls_certificate("node-sh", "node-sh", 4)),
                JS,
                ZJ,
            ],
        ),
        "tls-three-certificates": manifest(
            1, 2, [pinned(*(tls_certificate(f"node-sh {i}", "node-sh", i) for i in range(1, 4))), JS, ZJ]
        ),
    }
    table = [
        signed("v1", v1, pair),
        signed("v1-one-signature", v1, pair[:1]),
        signed("v1-same-node-twice", v1, [pair[0], pair[0]]),
        signed("v1-revoked-signer", v1, [pair[0], ("node-js", "js-0")]),
        signed("v1-expired-signer-key", v1, [pair[0], ("node-zj", "zj-0")]),
        signed("v1-signature-spoilt", v1, pair, tamper="js-1"),
        signed("v1-outsider-signature", v1, [pair[0], ("node-xx", "outsider")]),
        signed("v2", v2, [*pair, ("node-ah", "ah-1")]),
        signed("v2-newcomers-only", v2, [("node-sh", "sh-1"), ("node-ah", "ah-1"), ("node-sz", "sz-1")]),
        signed("v2-below-own-threshold", v2, pair),
        signed("v3", v3, [*pair, ("node-zj", "zj-1")]),
        signed("v4", v4, [("node-sh", "sh-2"), ("node-js", "js-1"), ("node-ah", "ah-1")]),
        signed("v4-below-previous-threshold", v4, [("node-sh", "sh-2"), ("node-ah", "ah-1")]),
        signed("v5-expired", v5, [("node-sh", "sh-2"), ("node-js", "js-1"), ("node-ah", "ah-1")]),
        signed("other-federation", manifest(2, 2, [SH, JS, ZJ], federation_id="yrd-other"), pair),
        signed("not-a-manifest", b"\xff\xff\xff", pair),
        signed("v1-unknown-fields", v1_unknown_fields, pair),
        signed("v1-tls-pinned", manifest(1, 2, [sh_tls, JS, ZJ]), pair),
        signed("v5-expired-rollback", manifest(1, 2, [SH, JS, ZJ], expires_at_ms=T0 + DAY), pair),
        signed(
            "other-federation-malformed",
            manifest(2, 0, [SH, JS, ZJ], federation_id="yrd-other"),
            pair,
        ),
        signed("other-federation-rollback", manifest(1, 2, [SH, JS, ZJ], federation_id="yrd-other"), pair),
        signed("v2-expired-no-quorum", manifest(2, 2, [SH, JS, ZJ], expires_at_ms=T0 + 2 * DAY), pair[:1]),
        *(signed(f"malformed-{name}", body, pair) for name, body in malformed.items()),
    ]
    anchors = [
        {"signed_manifest": "v1", "expect": "valid"},
        {"signed_manifest": "v1-one-signature", "expect": "no_quorum"},
        {"signed_manifest": "v1-same-node-twice", "expect": "no_quorum"},
        {"signed_manifest": "v1-revoked-signer", "expect": "no_quorum"},
        {"signed_manifest": "v1-expired-signer-key", "expect": "no_quorum"},
        {"signed_manifest": "v1-signature-spoilt", "expect": "no_quorum"},
        {"signed_manifest": "v1-outsider-signature", "expect": "no_quorum"},
        {"signed_manifest": "v5-expired", "expect": "valid"},
        {"signed_manifest": "v1-unknown-fields", "expect": "valid"},
        {"signed_manifest": "v1-tls-pinned", "expect": "valid"},
        {"signed_manifest": "not-a-manifest", "expect": "malformed_manifest"},
        *({"signed_manifest": f"malformed-{name}", "expect": "malformed_manifest"} for name in malformed),
    ]
    now = T0 + 4 * DAY
    successors = [
        {"current": "v1", "candidate": "v2", "now_ms": now, "expect": "valid"},
        {"current": "v2", "candidate": "v3", "now_ms": now, "expect": "valid"},
        {"current": "v3", "candidate": "v4", "now_ms": now, "expect": "valid"},
        {"current": "v1", "candidate": "v4", "now_ms": now, "expect": "no_quorum_of_previous"},
        {"current": "v1", "candidate": "v2-newcomers-only", "now_ms": now, "expect": "no_quorum_of_previous"},
        {"current": "v1", "candidate": "v2-below-own-threshold", "now_ms": now, "expect": "no_quorum"},
        {
            "current": "v3",
            "candidate": "v4-below-previous-threshold",
            "now_ms": now,
            "expect": "no_quorum_of_previous",
        },
        {"current": "v2", "candidate": "v1", "now_ms": now, "expect": "rollback"},
        {"current": "v2", "candidate": "v2", "now_ms": now, "expect": "rollback"},
        {"current": "v4", "candidate": "v5-expired", "now_ms": T0 + 5 * DAY, "expect": "expired"},
        {"current": "v4", "candidate": "v5-expired", "now_ms": T0 + 5 * DAY - 1, "expect": "valid"},
        {"current": "v1", "candidate": "other-federation", "now_ms": now, "expect": "federation_mismatch"},
        {
            "current": "v1",
            "candidate": "malformed-threshold-zero",
            "now_ms": now,
            "expect": "malformed_manifest",
        },
        # Check order (6.5): the first failing step decides.
        {
            "current": "v1",
            "candidate": "other-federation-malformed",
            "now_ms": now,
            "expect": "malformed_manifest",
        },
        {
            "current": "v2",
            "candidate": "other-federation-rollback",
            "now_ms": now,
            "expect": "federation_mismatch",
        },
        {"current": "v2", "candidate": "v5-expired-rollback", "now_ms": now, "expect": "rollback"},
        {"current": "v1", "candidate": "v2-expired-no-quorum", "now_ms": now, "expect": "expired"},
        {"current": "v1", "candidate": "v1-unknown-fields", "now_ms": now, "expect": "rollback"},
    ]
    return table, anchors, successors


def env_json(env: Envelope) -> dict[str, Any]:
    return {
        "sender": env.sender,
        "key_id": env.key_id,
        "destination": env.destination,
        "method": env.method,
        "created_at_ms": env.created_at_ms,
        "nonce": env.nonce.hex(),
        "body": env.body.hex(),
        "in_reply_to": env.in_reply_to.hex(),
        "signature": env.signature.hex(),
    }


def case(name: str, env: Envelope, expect: str, **context: Any) -> dict[str, Any]:
    return {
        "name": name,
        "envelope": env_json(env),
        "signing_input": signing_input(env).hex(),
        "digest": request_digest(env).hex(),
        **context,
        "expect": expect,
    }


def changed(env: Envelope, resign: str | None = None, **fields: Any) -> Envelope:
    """A copy with ``fields`` replaced, re-signed by key ``resign`` (else the old signature stays)."""
    out = Envelope()
    out.CopyFrom(env)
    for k, v in fields.items():
        setattr(out, k, v)
    if resign is not None:
        out.signature = KEYS[resign].sign(signing_input(out))
    return out


def sealed_vectors() -> tuple[list[dict[str, Any]], list[dict[str, Any]], bytes]:
    payload = peer_pb2.ApplicationPayload(
        applicant_name="张三",
        applicant_id_number="110101190001010000",
        form_json=b'{"purpose":"vector"}',
        attachments=[
            peer_pb2.Attachment(
                material="id-card", filename="id.png", content_type="image/png", data=b"\x89PNG"
            )
        ],
    )
    valid = []
    for i, (recipient, pt) in enumerate([("sh-1", payload.SerializeToString()), ("js-1", b"")]):
        esk = seed_for(f"ephemeral-{i}")
        epk = crypto_scalarmult_base(esk)
        rpk = x25519_public_key(KEYS[recipient].public_key)
        box_nonce = hashlib.blake2b(epk + rpk, digest_size=24).digest()
        sealed = epk + crypto_box_easy(pt, box_nonce, rpk, esk)
        valid.append(
            {
                "name": f"sealed-to-{recipient}",
                "recipient_seed": KEYS[recipient].seed.hex(),
                "recipient_x25519_public_key": rpk.hex(),
                "ephemeral_secret_key": esk.hex(),
                "ephemeral_public_key": epk.hex(),
                "box_nonce": box_nonce.hex(),
                "plaintext": pt.hex(),
                "sealed": sealed.hex(),
            }
        )
    good = bytes.fromhex(valid[0]["sealed"])
    flip = lambda b, i: b[:i] + bytes([b[i] ^ 1]) + b[i + 1 :]  # noqa: E731
    invalid = [
        {"name": "ciphertext-byte-flipped", "recipient": "sh-1", "sealed": flip(good, len(good) - 1)},
        {"name": "tag-byte-flipped", "recipient": "sh-1", "sealed": flip(good, 40)},
        {"name": "ephemeral-key-byte-flipped", "recipient": "sh-1", "sealed": flip(good, 0)},
        {"name": "wrong-recipient", "recipient": "js-1", "sealed": good},
        {"name": "shorter-than-overhead", "recipient": "sh-1", "sealed": good[:47]},
    ]
    return (
        valid,
        [
            {
                "name": v["name"],
                "recipient_seed": KEYS[v["recipient"]].seed.hex(),
                "sealed": v["sealed"].hex(),
                "expect": "sealed_payload_invalid",
            }
            for v in invalid
        ],
        good,
    )


def envelope_vectors(sealed: bytes) -> dict[str, Any]:
    now = T0 + 5_000
    transfer = peer_pb2.ApplicationTransfer(
        application_id="app-0001",
        origin_node="node-js",
        service_id="sh-residence-permit",
        service_version=1,
        submitted_at_ms=T0 - 60_000,
        purpose="vector",
        consent=True,
        sealed_payload=sealed,
        fields_present=["purpose"],
    )
    body = peer_pb2.DeliverItem(application=transfer).SerializeToString()
    e1 = seal_envelope(
        KEYS["js-1"],
        sender="node-js",
        destination="node-sh",
        method=DELIVER,
        body=body,
        now_ms=T0,
        nonce=nonce(0),
    )
    e2 = seal_envelope(
        KEYS["zj-1"],
        sender="node-zj",
        destination="node-sh",
        method=DELIVER,
        body=b"",
        now_ms=now - 30_000,
        nonce=nonce(16),
    )
    e3 = seal_envelope(
        KEYS["js-1"],
        sender="node-js",
        destination="node-sh",
        method=DELIVER,
        body=b"\x00",
        now_ms=now + 30_000,
        nonce=nonce(32),
    )
    zj0_last = changed(e2, "zj-0", key_id=KEYS["zj-0"].key_id, created_at_ms=T0 - 1, nonce=nonce(96))
    zj_next_first = changed(e2, "zj-next", key_id=KEYS["zj-next"].key_id, created_at_ms=T0 + 10 * DAY)
    wrong_key = changed(e1, key_id=KEYS["js-1"].key_id)
    wrong_key.signature = KEYS["zj-1"].sign(signing_input(wrong_key))
    cases: list[tuple[str, Envelope, str, list[Envelope]]] = [
        ("deliver-from-js", e1, "valid", []),
        ("empty-body-at-past-skew-limit", e2, "valid", []),
        ("at-future-skew-limit", e3, "valid", []),
        ("nonce-15-bytes", changed(e1, "js-1", nonce=nonce(0)[:15]), "malformed_envelope", []),
        ("signature-63-bytes", changed(e1, signature=e1.signature[:63]), "malformed_envelope", []),
        ("empty-method", changed(e1, "js-1", method=""), "malformed_envelope", []),
        ("request-with-in-reply-to", changed(e1, "js-1", in_reply_to=bytes(32)), "malformed_envelope", []),
        (
            "not-a-member",
            changed(e1, "outsider", sender="node-xx", key_id=KEYS["outsider"].key_id),
            "unknown_sender",
            [],
        ),
        ("key-not-listed", changed(e1, "outsider", key_id=KEYS["outsider"].key_id), "unknown_key", []),
        ("key-listed-for-another-member", changed(e1, "zj-1", key_id=KEYS["zj-1"].key_id), "unknown_key", []),
        ("revoked-key", changed(e1, "js-0", key_id=KEYS["js-0"].key_id), "key_revoked", []),
        (
            "key-not-yet-valid",
            changed(e2, "zj-next", key_id=KEYS["zj-next"].key_id, created_at_ms=now),
            "key_not_valid",
            [],
        ),
        (
            "key-expired",
            changed(e2, "zj-0", key_id=KEYS["zj-0"].key_id, created_at_ms=now),
            "key_not_valid",
            [],
        ),
        ("wrong-destination", changed(e1, "js-1", destination="node-zj"), "wrong_destination", []),
        ("wrong-destination-and-bad-signature", changed(e1, destination="node-zj"), "wrong_destination", []),
        ("method-mismatch", changed(e1, "js-1", method=NOTIFY), "method_mismatch", []),
        ("too-old", changed(e1, "js-1", created_at_ms=now - 30_001), "clock_skew", []),
        ("too-new", changed(e1, "js-1", created_at_ms=now + 30_001), "clock_skew", []),
        ("body-byte-flipped", changed(e1, body=body[:-1] + bytes([body[-1] ^ 1])), "bad_signature", []),
        ("created-at-changed", changed(e1, created_at_ms=T0 + 1), "bad_signature", []),
        ("nonce-changed", changed(e1, nonce=nonce(1)), "bad_signature", []),
        ("signed-by-another-key", wrong_key, "bad_signature", []),
        ("replayed", e1, "nonce_replayed", [e1]),
        ("forgery-with-seen-nonce", changed(e1, body=b"forged"), "bad_signature", [e1]),
        ("same-nonce-other-sender", changed(e2, "zj-1", nonce=e1.nonce), "valid", [e1]),
        # Key windows are half-open, [not_before_ms, not_after_ms); a retiring key is accepted.
        ("retiring-key", zj0_last, "valid", []),
        ("retiring-key-at-not-after", changed(zj0_last, "zj-0", created_at_ms=T0), "key_not_valid", []),
        ("key-at-not-before", zj_next_first, "valid", []),
        (
            "key-just-before-not-before",
            changed(zj_next_first, "zj-next", created_at_ms=T0 + 10 * DAY - 1),
            "key_not_valid",
            [],
        ),
        # One node, two valid keys: either verifies (6.6, during a rotation).
        (
            "same-node-older-key-during-rotation",
            changed(zj_next_first, "zj-1", key_id=KEYS["zj-1"].key_id),
            "valid",
            [],
        ),
        # Check order: the first failing step decides.
        (
            "revoked-and-out-of-window",
            changed(e1, "js-0", key_id=KEYS["js-0"].key_id, created_at_ms=T0 - 31 * DAY),
            "key_revoked",
            [],
        ),
        (
            "out-of-window-and-wrong-destination",
            changed(e2, "zj-0", key_id=KEYS["zj-0"].key_id, destination="node-zj", created_at_ms=now),
            "key_not_valid",
            [],
        ),
        (
            "wrong-method-and-stale",
            changed(e1, "js-1", method=NOTIFY, created_at_ms=now - 30_001),
            "method_mismatch",
            [],
        ),
        ("stale-and-bad-signature", changed(e1, created_at_ms=now - 30_001), "clock_skew", []),
        ("seen-nonce-on-stale-envelope", changed(e1, "js-1", created_at_ms=now - 30_001), "clock_skew", [e1]),
        ("unknown-sender-and-malformed", changed(e1, sender="node-xx", nonce=b""), "malformed_envelope", []),
        # i64 of a negative time is two's complement; no key window contains it.
        ("negative-created-at", changed(e1, "js-1", created_at_ms=-1), "key_not_valid", []),
        # utf8() and lp() count bytes, not characters.
        ("non-ascii-destination", changed(e1, "js-1", destination="上海节点"), "wrong_destination", []),
        (
            "non-ascii-method",
            changed(e1, "js-1", method="/yrd.peer.v1.PeerService/Délivrer"),
            "method_mismatch",
            [],
        ),
        ("in-reply-to-31-bytes", changed(e1, "js-1", in_reply_to=bytes(31)), "malformed_envelope", []),
    ]
    own_now = {
        "retiring-key": T0 + 1_000,
        "retiring-key-at-not-after": T0 + 1_000,
        "key-at-not-before": T0 + 10 * DAY,
        "key-just-before-not-before": T0 + 10 * DAY,
        "same-node-older-key-during-rotation": T0 + 10 * DAY,
        "revoked-and-out-of-window": T0 - 31 * DAY,
    }
    requests = [
        case(
            name,
            env,
            expect,
            method_called=DELIVER,
            now_ms=own_now.get(name, now),
            seen_nonces=[{"sender": s.sender, "nonce": s.nonce.hex()} for s in seen],
        )
        for name, env, expect, seen in cases
    ]
    request_now = T0 + 5_300
    receipt = peer_pb2.Receipt(
        item_id="app-0001", outcome=peer_pb2.RECEIPT_OUTCOME_ACCEPTED, received_at_ms=T0 + 5_100
    ).SerializeToString()
    r1 = seal_envelope(
        KEYS["sh-1"],
        sender="node-sh",
        destination="node-js",
        method=DELIVER,
        body=receipt,
        now_ms=T0 + 5_200,
        in_reply_to=request_digest(e1),
        nonce=nonce(48),
    )
    response_cases = [
        ("receipt-from-sh", r1, "valid"),
        (
            "bound-to-another-request",
            changed(r1, "sh-1", in_reply_to=request_digest(e3)),
            "response_mismatch",
        ),
        ("no-in-reply-to", changed(r1, "sh-1", in_reply_to=b""), "response_mismatch"),
        (
            "answered-by-another-member",
            changed(r1, "zj-1", sender="node-zj", key_id=KEYS["zj-1"].key_id),
            "response_mismatch",
        ),
        ("addressed-elsewhere", changed(r1, "sh-1", destination="node-zj"), "wrong_destination"),
        ("method-changed", changed(r1, "sh-1", method=NOTIFY), "method_mismatch"),
        ("stale", changed(r1, "sh-1", created_at_ms=request_now - 30_001), "clock_skew"),
        ("body-byte-flipped", changed(r1, body=receipt[:-1] + bytes([receipt[-1] ^ 1])), "bad_signature"),
        ("at-past-skew-limit", changed(r1, "sh-1", created_at_ms=request_now - 30_000), "valid"),
        ("at-future-skew-limit", changed(r1, "sh-1", created_at_ms=request_now + 30_000), "valid"),
        (
            "in-reply-to-31-bytes",
            changed(r1, "sh-1", in_reply_to=request_digest(e1)[:31]),
            "response_mismatch",
        ),
        ("nonce-15-bytes", changed(r1, "sh-1", nonce=nonce(48)[:15]), "malformed_envelope"),
        (
            "unknown-sender",
            changed(r1, "outsider", sender="node-xx", key_id=KEYS["outsider"].key_id),
            "unknown_sender",
        ),
        ("unknown-key", changed(r1, "outsider", key_id=KEYS["outsider"].key_id), "unknown_key"),
        (
            "revoked-key",
            changed(r1, "js-0", sender="node-js", key_id=KEYS["js-0"].key_id, destination="node-js"),
            "key_revoked",
        ),
        ("key-not-valid", changed(r1, "sh-1", created_at_ms=T0 - DAY - 1), "key_not_valid"),
        # A response needs no nonce store: the same response verifies twice.
        ("with-a-request-nonce", changed(r1, "sh-1", nonce=e1.nonce), "valid"),
    ]
    return {
        "manifest": "v1",
        "max_skew_ms": 30_000,
        "requests": {"receiver": "node-sh", "cases": requests},
        "responses": {
            "receiver": "node-js",
            "request": "deliver-from-js",
            "now_ms": request_now,
            "cases": [case(n, e, x) for n, e, x in response_cases],
        },
    }


def wrapped(inner: Envelope, method: str) -> bytes:
    """The outer body that carries ``inner``: DeliverItem or StatusItem field 2, ``forward``."""
    if method == DELIVER:
        return peer_pb2.DeliverItem(forward=inner).SerializeToString()
    return peer_pb2.StatusItem(forward=inner).SerializeToString()


def forwarded_vectors() -> dict[str, Any]:
    """node-sz is reached through its relay node-js (manifest v2). The inner envelopes are hours
    old at ``now``: section 3.3 applies no skew to them, only the key windows at creation."""
    created, now = T0 + 2 * DAY, T0 + 2 * DAY + 6 * 3_600_000
    transfer = peer_pb2.ApplicationTransfer(
        application_id="app-0002",
        origin_node="node-sh",
        service_id="sz-residence-registration",
        service_version=1,
        submitted_at_ms=created,
        purpose="vector",
        consent=True,
        fields_present=["purpose"],
    )
    body = peer_pb2.DeliverItem(application=transfer).SerializeToString()
    to_sz = seal_envelope(
        KEYS["sh-1"],
        sender="node-sh",
        destination="node-sz",
        method=DELIVER,
        body=body,
        now_ms=created,
        nonce=nonce(64),
    )
    update = peer_pb2.StatusUpdate(
        application_id="app-0003",
        status=peer_pb2.APPLICATION_STATUS_APPROVED,
        changed_at_ms=created,
        sequence=3,
    )
    status = seal_envelope(
        KEYS["ah-1"],
        sender="node-ah",
        destination="node-sz",
        method=NOTIFY,
        body=peer_pb2.StatusItem(status=update).SerializeToString(),
        now_ms=created,
        nonce=nonce(80),
    )
    run = peer_pb2.StatusRun(
        updates=[
            peer_pb2.StatusUpdate(application_id="app-0003", status=s, changed_at_ms=created, sequence=n)
            for n, s in enumerate(AUTO_RUN, start=1)
        ]
    )
    status_run = seal_envelope(
        KEYS["ah-1"],
        sender="node-ah",
        destination="node-sz",
        method=NOTIFY,
        body=peer_pb2.StatusItem(run=run).SerializeToString(),
        now_ms=created,
        nonce=nonce(81),
    )
    answer_body = peer_pb2.Receipt(item_id="app-0002", outcome=peer_pb2.RECEIPT_OUTCOME_ACCEPTED)
    smuggled = changed(to_sz, "sh-1", body=answer_body.SerializeToString(), in_reply_to=request_digest(to_sz))
    flipped = body[:-1] + bytes([body[-1] ^ 1])
    to_ah = changed(to_sz, "sh-1", destination="node-ah")
    outsider = changed(to_sz, "outsider", sender="node-xx", key_id=KEYS["outsider"].key_id)
    revoked = changed(to_sz, "js-0", sender="node-js", key_id=KEYS["js-0"].key_id)
    # Signed at the very first millisecond of sh-1's window, two days before it is carried.
    back_dated = changed(to_sz, "sh-1", created_at_ms=T0 - DAY)
    # A retiring key (zj-0, window [T0 - 30 days, T0)) still vouches for what it signed in time.
    retiring = changed(to_sz, "zj-0", sender="node-zj", key_id=KEYS["zj-0"].key_id, created_at_ms=T0 - 1)
    at_not_after = changed(retiring, "zj-0", created_at_ms=T0)
    js, sz, zj = "node-js", "node-sz", "node-zj"
    cases: list[tuple[str, Envelope, str, str, str]] = [
        ("application-at-relay", to_sz, js, DELIVER, "valid"),
        ("application-at-destination", to_sz, sz, DELIVER, "valid"),
        ("status-at-relay", status, js, NOTIFY, "valid"),
        ("status-at-destination", status, sz, NOTIFY, "valid"),
        ("run-at-relay", status_run, js, NOTIFY, "valid"),
        ("run-at-destination", status_run, sz, NOTIFY, "valid"),
        ("back-dated-to-key-not-before", back_dated, sz, DELIVER, "valid"),
        ("retiring-key-before-not-after", retiring, js, DELIVER, "valid"),
        ("retiring-key-at-not-after", at_not_after, js, DELIVER, "key_not_valid"),
        ("response-smuggled-as-request", smuggled, js, DELIVER, "malformed_envelope"),
        ("not-a-member", outsider, js, DELIVER, "unknown_sender"),
        ("key-of-another-member", changed(to_sz, key_id=KEYS["js-1"].key_id), js, DELIVER, "unknown_key"),
        ("revoked-key", revoked, sz, DELIVER, "key_revoked"),
        (
            "created-before-key-window",
            changed(to_sz, "sh-1", created_at_ms=T0 - 2 * DAY),
            js,
            DELIVER,
            "key_not_valid",
        ),
        # 3.3 step 6: a relayed member (node-sz) relays for nobody.
        ("wrong-destination", to_ah, sz, DELIVER, "wrong_destination"),
        ("relay-of-another-member", to_sz, zj, DELIVER, "wrong_destination"),
        ("destination-has-no-relay", to_ah, js, DELIVER, "wrong_destination"),
        (
            "destination-not-a-member",
            changed(to_sz, "sh-1", destination="node-zz"),
            js,
            DELIVER,
            "wrong_destination",
        ),
        (
            "wrong-destination-and-bad-signature",
            changed(to_sz, body=flipped),
            zj,
            DELIVER,
            "wrong_destination",
        ),
        (
            "addressed-to-its-relay-by-its-signer",
            changed(to_sz, "sh-1", destination=js),
            js,
            DELIVER,
            "valid",
        ),
        ("carried-on-another-method", to_sz, js, NOTIFY, "method_mismatch"),
        ("body-byte-flipped", changed(to_sz, body=flipped), js, DELIVER, "bad_signature"),
        ("readdressed-to-the-relay", changed(to_sz, destination=js), js, DELIVER, "bad_signature"),
        (
            "key-window-and-destination",
            changed(to_ah, "sh-1", created_at_ms=T0 - 2 * DAY),
            sz,
            DELIVER,
            "key_not_valid",
        ),
        ("destination-and-method", to_ah, sz, NOTIFY, "wrong_destination"),
    ]
    out = [
        case(
            name,
            env,
            expect,
            receiver=receiver,
            method_called=method,
            wrapped_body=wrapped(env, method).hex(),
            relay_item_id="fwd:" + request_digest(env).hex(),
        )
        for name, env, receiver, method, expect in cases
    ]
    # 8: a relay may re-encode the Envelope message it carries: fields in another order and an
    # unknown field. The signature covers the fields, so the inner envelope still verifies.
    reencoded = case(
        "re-encoded-by-the-relay",
        to_sz,
        "valid",
        receiver=sz,
        method_called=DELIVER,
        wrapped_body=reencode_wrapped(to_sz).hex(),
        relay_item_id="fwd:" + request_digest(to_sz).hex(),
    )
    return {"manifest": "v2", "now_ms": now, "cases": [*out, reencoded]}


def reencode_wrapped(inner: Envelope) -> bytes:
    """DeliverItem{forward = inner}, written by hand: inner's fields last to first, plus field 15."""

    def field(number: int, wire_type: int, payload: bytes) -> bytes:
        return _varint(number << 3 | wire_type) + payload

    def ld(number: int, data: bytes) -> bytes:
        return field(number, 2, _varint(len(data)) + data)

    fields = [
        ld(9, inner.signature), ld(8, inner.in_reply_to) if inner.in_reply_to else b"", ld(7, inner.body),
        ld(6, inner.nonce), field(5, 0, _varint(inner.created_at_ms % (1 << 64))),
        ld(4, inner.method.encode()), ld(3, inner.destination.encode()), ld(2, inner.key_id.encode()),
        ld(1, inner.sender.encode()), ld(15, b"relay-note"),
    ]  # fmt: skip
    return ld(2, b"".join(fields))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def routing_vectors() -> dict[str, Any]:
    """6.7: longest prefix wins (node-sz's 3205 inside node-js's 32)."""
    cases = [
        ("city-inside-province", "320505", "node-sz"),
        ("province-outside-city", "320102", "node-js"),
        ("city-prefix-not-matched-by-other-province", "330106", "node-zj"),
        ("shanghai", "310104", "node-sh"),
        ("no-member", "440300", "no_route"),
    ]
    return {
        "manifest": "v2",
        "cases": [{"name": n, "division_code": code, "expect": want} for n, code, want in cases],
    }


def signing_key_vectors() -> dict[str, Any]:
    """6.6: the active key valid now with the latest not_before_ms, ties to the larger key id."""
    cases = [
        ("rotating-member-signs-with-new-key", "node-sh", T0 + 5_000, KEYS["sh-2"].key_id),
        ("revoked-key-never-chosen", "node-js", T0 + 5_000, KEYS["js-1"].key_id),
        ("before-successor-window", "node-zj", T0 + 10 * DAY - 1, KEYS["zj-1"].key_id),
        ("successor-from-its-not-before", "node-zj", T0 + 10 * DAY, KEYS["zj-next"].key_id),
        ("retiring-key-never-chosen", "node-zj", T0 - 1, KEYS["zj-1"].key_id),
        ("no-key-valid", "node-zj", T0 + 365 * DAY, "no_signing_key"),
        ("not-a-member", "node-xx", T0, "no_signing_key"),
    ]
    return {
        "manifest": "v3",
        "cases": [{"name": n, "node_id": node, "at_ms": at, "expect": want} for n, node, at, want in cases],
    }


APP_NOW = T0 + 3 * DAY
APP_SKEW = 30_000
APP_MAX_AGE = 30 * DAY
APP_MAX_AHEAD = 3_600_000
APP_SERVICES = {"sh-residence-permit": 2}


def application_vectors() -> dict[str, Any]:
    """10.3: what an owner checks in a transfer from a member, before and after it opens it."""
    form = ["duration_months", "purpose_of_stay"]

    def transfer(**over: Any) -> peer_pb2.ApplicationTransfer:
        fields: dict[str, Any] = {
            "application_id": "0193a1b2c3d4e5f60718293a4b5c",
            "origin_node": "node-js",
            "service_id": "sh-residence-permit",
            "service_version": 2,
            "submitted_at_ms": APP_NOW - 60_000,
            "purpose": "service-delivery",
            "consent": True,
            "fields_present": form,
        }
        fields.update(over)
        return peer_pb2.ApplicationTransfer(**fields)

    cases: list[tuple[str, str, peer_pb2.ApplicationTransfer, str]] = [
        ("valid", "node-js", transfer(), "valid"),
        ("id-with-hyphens", "node-js", transfer(application_id="app-0004"), "valid"),
        ("id-of-64-characters", "node-js", transfer(application_id="a" * 64), "valid"),
        ("fields-present-in-another-order", "node-js", transfer(fields_present=form[::-1]), "valid"),
        ("status-on-receipt", "node-js", transfer(status_on_receipt=True), "valid"),
        ("origin-is-not-the-sender", "node-zj", transfer(), "origin_mismatch"),
        ("origin-mismatch-and-bad-id", "node-zj", transfer(application_id=""), "origin_mismatch"),
        ("id-empty", "node-js", transfer(application_id=""), "invalid_application_id"),
        ("id-of-65-characters", "node-js", transfer(application_id="a" * 65), "invalid_application_id"),
        ("id-of-4000-characters", "node-js", transfer(application_id="a" * 4000), "invalid_application_id"),
        (
            "id-with-path-and-newline",
            "node-js",
            transfer(application_id="x/../y\nz"),
            "invalid_application_id",
        ),
        ("id-upper-case", "node-js", transfer(application_id="APP-1"), "invalid_application_id"),
        ("id-starting-with-hyphen", "node-js", transfer(application_id="-app"), "invalid_application_id"),
        ("id-non-ascii", "node-js", transfer(application_id="申请1"), "invalid_application_id"),
        ("unknown-service", "node-js", transfer(service_id="sh-nothing"), "unknown_service"),
        (
            "unknown-service-and-version",
            "node-js",
            transfer(service_id="x", service_version=0),
            "unknown_service",
        ),
        ("version-0", "node-js", transfer(service_version=0), "unknown_version"),
        ("version-older", "node-js", transfer(service_version=1), "unknown_version"),
        ("version-99", "node-js", transfer(service_version=99), "unknown_version"),
        ("version-and-time", "node-js", transfer(service_version=3, submitted_at_ms=-1), "unknown_version"),
        ("at-future-tolerance", "node-js", transfer(submitted_at_ms=APP_NOW + APP_SKEW), "valid"),
        (
            "past-future-tolerance",
            "node-js",
            transfer(submitted_at_ms=APP_NOW + APP_SKEW + 1),
            "stamped_ahead",
        ),
        ("an-hour-ahead", "node-js", transfer(submitted_at_ms=APP_NOW + APP_MAX_AHEAD), "stamped_ahead"),
        ("past-an-hour-ahead", "node-js", transfer(submitted_at_ms=APP_NOW + APP_MAX_AHEAD + 1), "bad_time"),
        ("a-year-ahead", "node-js", transfer(submitted_at_ms=APP_NOW + 365 * DAY), "bad_time"),
        ("at-age-limit", "node-js", transfer(submitted_at_ms=APP_NOW - APP_MAX_AGE), "valid"),
        ("past-age-limit", "node-js", transfer(submitted_at_ms=APP_NOW - APP_MAX_AGE - 1), "bad_time"),
        ("negative-time", "node-js", transfer(submitted_at_ms=-1), "bad_time"),
        ("time-and-fields", "node-js", transfer(submitted_at_ms=0, fields_present=["bogus"]), "bad_time"),
        ("fields-present-lies", "node-js", transfer(fields_present=["bogus"]), "fields_present_mismatch"),
        ("fields-present-short", "node-js", transfer(fields_present=form[:1]), "fields_present_mismatch"),
        (
            "fields-present-repeats",
            "node-js",
            transfer(fields_present=[*form, form[0]]),
            "fields_present_mismatch",
        ),
    ]
    return {
        "owner": "node-sh",
        "services": APP_SERVICES,
        "now_ms": APP_NOW,
        "max_skew_ms": APP_SKEW,
        "max_age_ms": APP_MAX_AGE,
        "max_ahead_ms": APP_MAX_AHEAD,
        "cases": [
            {
                "name": name,
                "sender": sender,
                "transfer": t.SerializeToString().hex(),
                "form_fields": form,
                "expect": expect,
            }
            for name, sender, t, expect in cases
        ],
    }


# -- status changes and runs (docs/protocol.md 10.2) --------------------------------------------

STATUS_APP = "0193a1b2c3d4e5f60718293a4b5c"
# An automatic decision: the four changes its owner numbers in one transaction.
AUTO_RUN = [
    peer_pb2.APPLICATION_STATUS_DELIVERED,
    peer_pb2.APPLICATION_STATUS_IN_REVIEW,
    peer_pb2.APPLICATION_STATUS_APPROVED,
    peer_pb2.APPLICATION_STATUS_COMPLETED,
]


def _change(sequence: int, status: int = peer_pb2.APPLICATION_STATUS_IN_REVIEW, **over: Any) -> Any:
    """One change of STATUS_APP, made by its owner at APP_NOW."""
    fields: dict[str, Any] = {
        "application_id": STATUS_APP,
        "status": status,
        "reason": "",
        "changed_at_ms": APP_NOW,
        "sequence": sequence,
    }
    fields.update(over)
    return peer_pb2.StatusUpdate(**fields)


def _auto_changes() -> list[Any]:
    """An automatic approval's four changes of STATUS_APP, with a named result and a notice."""
    auto = [_change(n, s) for n, s in enumerate(AUTO_RUN, start=1)]
    auto[2].results["licence_no"] = "SH-2026-0001"
    auto[3].results["licence_no"] = "SH-2026-0001"
    auto[3].documents.add(name="notice.txt", content_type="text/plain", data="准予 approved".encode())
    return auto


def status_vectors() -> dict[str, Any]:
    """10.2: the origin node-js holds STATUS_APP, owned by node-sh, with the changes ``known``
    already recorded; each case's item is applied whole or refused whole."""
    change, auto = _change, _auto_changes()

    def run(*updates: Any) -> bytes:
        return peer_pb2.StatusItem(run=peer_pb2.StatusRun(updates=updates)).SerializeToString(
            deterministic=True
        )

    def single(update: Any) -> bytes:
        return peer_pb2.StatusItem(status=update).SerializeToString(deterministic=True)

    unknown = 99
    sh, zj = "node-sh", "node-zj"
    cases: list[tuple[str, str, list[int], bytes, str, list[int]]] = [
        ("single", sh, [], single(auto[0]), "accepted", [1]),
        ("single-again", sh, [1], single(auto[0]), "duplicate", []),
        ("single-below-the-highest", sh, [1, 3], single(change(2)), "accepted", [2]),
        ("single-sequence-0", sh, [], single(change(0)), "malformed_status", []),
        ("single-unknown-status", sh, [], single(change(1, unknown)), "malformed_status", []),
        ("single-status-0", sh, [], single(change(1, 0)), "malformed_status", []),
        ("single-from-another-member", zj, [], single(auto[0]), "unknown_application", []),
        (
            "single-unknown-application",
            sh,
            [],
            single(change(1, application_id="app-0009")),
            "unknown_application",
            [],
        ),
        ("run", sh, [], run(*auto), "accepted", [1, 2, 3, 4]),
        ("run-of-one", sh, [], run(auto[0]), "accepted", [1]),
        ("run-again", sh, [1, 2, 3, 4], run(*auto), "duplicate", []),
        ("run-overlapping", sh, [1, 2], run(*auto), "accepted", [3, 4]),
        ("run-with-a-hole-filled", sh, [2], run(*auto), "accepted", [1, 3, 4]),
        ("run-from-the-middle", sh, [1, 2], run(*auto[2:]), "accepted", [3, 4]),
        ("run-of-16", sh, [], run(*(change(n) for n in range(1, 17))), "accepted", list(range(1, 17))),
        ("run-of-17", sh, [], run(*(change(n) for n in range(1, 18))), "malformed_status", []),
        ("run-empty", sh, [], run(), "malformed_status", []),
        (
            "run-of-two-applications",
            sh,
            [],
            run(change(1), change(2, application_id="app-0009")),
            "malformed_status",
            [],
        ),
        ("run-with-a-gap", sh, [], run(change(1), change(2), change(4)), "malformed_status", []),
        ("run-decreasing", sh, [], run(change(2), change(1)), "malformed_status", []),
        ("run-repeating-a-sequence", sh, [], run(change(1), change(1)), "malformed_status", []),
        ("run-from-sequence-0", sh, [], run(change(0), change(1)), "malformed_status", []),
        (
            "run-with-an-unknown-status",
            sh,
            [],
            run(change(1), change(2, unknown), change(3)),
            "malformed_status",
            [],
        ),
        (
            "run-over-the-highest-sequence",
            sh,
            [],
            run(change(2**31 - 1), change(2**31)),
            "malformed_status",
            [],
        ),
        (
            "run-at-the-highest-sequence",
            sh,
            [],
            run(change(2**31 - 2), change(2**31 - 1)),
            "accepted",
            [2**31 - 2, 2**31 - 1],
        ),
        (
            "run-with-121-results",
            sh,
            [],
            run(change(1), change(2, results={f"r{i}": "v" for i in range(121)})),
            "malformed_status",
            [],
        ),
        (
            "run-with-an-empty-result-name",
            sh,
            [],
            run(change(1), change(2, results={"": "v"})),
            "malformed_status",
            [],
        ),
        (
            "run-with-a-long-result-name",
            sh,
            [],
            run(change(1, results={"n" * 101: "v"}), change(2)),
            "malformed_status",
            [],
        ),
        (
            "run-with-a-long-result-value",
            sh,
            [],
            run(change(1), change(2, results={"r": "v" * 2001})),
            "malformed_status",
            [],
        ),
        ("run-from-another-member", zj, [], run(*auto), "unknown_application", []),
        ("run-malformed-from-another-member", zj, [], run(change(1), change(3)), "malformed_status", []),
        (
            "run-of-an-unknown-application",
            sh,
            [],
            run(*(change(n, application_id="app-0009") for n in (1, 2))),
            "unknown_application",
            [],
        ),
    ]
    return {
        "origin": "node-js",
        "application_id": STATUS_APP,
        "owner": sh,
        "cases": [
            {
                "name": name,
                "sender": sender,
                "known": known,
                "item": item.hex(),
                "expect": expect,
                "item_id": _first_application_id(item),
                "applied": applied,
                "shows": max([0, *known, *applied]),
            }
            for name, sender, known, item, expect, applied in cases
        ],
    }


def receipt_run_vectors() -> dict[str, Any]:
    """10.6: the origin node-js delivered STATUS_APP to its owner node-sh, asking for its status
    on the receipt, and holds the changes ``known``; each case is the verified receipt of that
    Deliver envelope, signed by ``sender``: usable (its run recorded, each change once) or not
    (nothing of it recorded, the item sent again)."""
    change, auto = _change, _auto_changes()
    accepted = {"outcome": peer_pb2.RECEIPT_OUTCOME_ACCEPTED, "reason_code": "accepted", "reason": "stored"}
    duplicate = {"outcome": peer_pb2.RECEIPT_OUTCOME_DUPLICATE, "reason_code": "duplicate"}
    relayed = {"outcome": peer_pb2.RECEIPT_OUTCOME_ACCEPTED, "reason_code": "relayed"}
    denied = {
        "outcome": peer_pb2.RECEIPT_OUTCOME_REJECTED,
        "reason_code": "rule_deny",
        "reason": "not for this purpose",
        "rule_id": "deny-purpose",
    }
    refused = change(
        1, peer_pb2.APPLICATION_STATUS_REFUSED, reason="not for this purpose", rule_id="deny-purpose"
    )

    def receipt(answer: dict[str, Any], *updates: Any, present: bool = True) -> bytes:
        r = peer_pb2.Receipt(item_id=STATUS_APP, received_at_ms=APP_NOW, **answer)
        if present:
            r.status_run.SetInParent()  # field 7 set, even when the run is empty
            r.status_run.updates.extend(updates)
        return r.SerializeToString(deterministic=True)

    stale = {"outcome": peer_pb2.RECEIPT_OUTCOME_REJECTED, "reason_code": "unknown_version"}
    retry = {"outcome": peer_pb2.RECEIPT_OUTCOME_RETRY, "reason_code": "stamped_ahead"}
    sh, zj = "node-sh", "node-zj"
    other = [change(n, application_id="app-0009") for n in (1, 2)]
    # Field 7 twice: a second occurrence of it appended to the bytes, which protobuf merges
    # (section 8) into one run of the changes of both.
    in_two_parts = receipt(accepted, *auto[:2]) + peer_pb2.Receipt(
        status_run=peer_pb2.StatusRun(updates=auto[2:])
    ).SerializeToString(deterministic=True)
    cases: list[tuple[str, str, list[int], bytes, str, list[int]]] = [
        ("accepted-with-its-run", sh, [], receipt(accepted, *auto), "usable", [1, 2, 3, 4]),
        ("accepted-without-a-run", sh, [], receipt(accepted, present=False), "usable", []),
        ("rejected-without-a-run", sh, [], receipt(stale, present=False), "usable", []),
        ("duplicate-without-a-run", sh, [], receipt(duplicate, present=False), "usable", []),
        ("relayed-without-a-run", zj, [], receipt(relayed, present=False), "usable", []),
        ("run-in-two-parts", sh, [], in_two_parts, "usable", [1, 2, 3, 4]),
        ("run-starting-above-1", sh, [], receipt(accepted, *auto[1:]), "usable", [2, 3, 4]),
        ("retry-with-a-run", sh, [], receipt(retry, *auto), "not_settled", []),
        ("duplicate-after-a-lost-receipt", sh, [], receipt(duplicate, *auto), "usable", [1, 2, 3, 4]),
        ("duplicate-already-recorded", sh, [1, 2, 3, 4], receipt(duplicate, *auto), "usable", []),
        ("duplicate-overlapping", sh, [1, 2], receipt(duplicate, *auto), "usable", [3, 4]),
        ("refused-by-policy-with-its-change", sh, [], receipt(denied, refused), "usable", [1]),
        ("run-empty", sh, [], receipt(accepted), "malformed_status", []),
        ("run-of-17", sh, [], receipt(accepted, *(change(n) for n in range(1, 18))), "malformed_status", []),
        (
            "run-with-a-gap",
            sh,
            [],
            receipt(accepted, change(1), change(2), change(4)),
            "malformed_status",
            [],
        ),
        (
            "run-with-an-unknown-status",
            sh,
            [],
            receipt(accepted, change(1), change(2, 99)),
            "malformed_status",
            [],
        ),
        ("run-of-another-application", sh, [], receipt(accepted, *other), "malformed_status", []),
        ("run-on-a-relay-receipt", zj, [], receipt(relayed, *auto), "unknown_application", []),
    ]
    return {
        "origin": "node-js",
        "application_id": STATUS_APP,
        "owner": sh,
        "cases": [
            {
                "name": name,
                "sender": sender,
                "known": known,
                "receipt": r.hex(),
                "expect": expect,
                "applied": applied,
                # A usable receipt from the owner also records its first event (10.4): sequence 1.
                "shows": max([0, *known, *applied, *([1] if expect == "usable" and sender == sh else [])]),
            }
            for name, sender, known, r, expect, applied in cases
        ],
    }


def _first_application_id(item: bytes) -> str:
    """A receipt's ``item_id`` for a status item (10.4): its first change's application id."""
    parsed = peer_pb2.StatusItem.FromString(item)
    updates = list(parsed.run.updates) if parsed.HasField("run") else [parsed.status]
    return updates[0].application_id if updates else ""


# -- e-certificates (docs/protocol.md 15) ----------------------------------------------------

CERT_KEYS = {
    name: NodeKey.from_seed(seed_for(name))
    for name in ("certificate", "certificate-old", "certificate-revoked")
}
CERT_NOW = T0 + DAY
CERT_APP = "0193a1b2c3d4e5f60718293a4b5c"


def certificate_manifest() -> bytes:
    """node-zj lists the worked example's key for a year around it (15.5), a key whose window
    ended before the example was issued, and a revoked key; threshold 1, signed by node-zj."""
    zj = member(
        "node-zj",
        "浙江",
        ["33"],
        [
            _cert_key("certificate", *YEAR),
            _cert_key("certificate-old", T0 - 30 * DAY, T0 - DAY),
            _cert_key("certificate-revoked", *YEAR, mpb.KEY_STATUS_REVOKED),
        ],
    )
    body = manifest(1, 1, [SH, zj], expires_at_ms=T0 + 30 * DAY)
    sm = mpb.SignedManifest(manifest=body)
    key = CERT_KEYS["certificate"]
    sm.signatures.append(
        mpb.ManifestSignature(
            node_id="node-zj", key_id=key.key_id, signature=key.sign(manifest_signing_input(body))
        )
    )
    return sm.SerializeToString()


def _cert_key(name: str, nb: int, na: int, status: int = mpb.KEY_STATUS_ACTIVE) -> mpb.MemberKey:
    k = CERT_KEYS[name]
    return mpb.MemberKey(
        key_id=k.key_id, public_key=k.public_key, not_before_ms=nb, not_after_ms=na, status=status
    )


def example_certificate(**over: Any) -> Certificate:
    """The worked example of 15.5, with ``over`` changed."""
    fields: dict[str, Any] = {
        "certificate_id": f"node-zj/{CERT_APP}",
        "name": "营业执照",
        "name_en": "Business licence",
        "holder": Holder(
            kind=HOLDER_KIND_ORGANISATION,
            display_name="杭州示例科技有限公司",
            display_id="91330106MA2B3C4D5E",
        ),
        "fields": [CertifiedField(name="credit_code", label="统一社会信用代码", value="91330106MA2B3C4D5E")],
        "issued_at_ms": T0,
        "issuer": "node-zj",
        "department": "杭州市市场监督管理局",
        "service_id": "zj-business-licence",
        "application_id": CERT_APP,
    }
    fields.update(over)
    return Certificate(**fields)


def signed_anyway(cert: Certificate, key: str = "certificate") -> SignedCertificate:
    """Signed past :func:`sign_certificate`'s refusal, for the cases that step 1 must refuse."""
    signed = SignedCertificate(certificate=cert)
    signed.certificate.key_id = CERT_KEYS[key].key_id
    signed.signature = CERT_KEYS[key].sign(certificate_signing_input(signed.certificate))
    return signed


def _over_the_limit() -> SignedCertificate:
    """The smallest growth of the example past 1,536 bytes, so its text stays under 2,528."""
    values = ["值" * 100, "值" * 100, ""]
    while True:
        fields = [CertifiedField(name=f"f{i}", label="标签", value=v) for i, v in enumerate(values)]
        big = signed_anyway(example_certificate(fields=fields))
        if big.ByteSize() > MAX_CERTIFICATE_BYTES:
            return big
        values[-1] += "值"


def certificate_vectors() -> dict[str, Any]:
    """15.4: the worked example in both forms, what 15.3 lets a reader forgive, and one case
    for each refusal; every case against the one manifest, at its own ``now_ms``."""
    key = CERT_KEYS["certificate"]
    example = sign_certificate(example_certificate(), key)
    text = to_text(example)
    # The example is 375 bytes, a whole number of base32 blocks; one byte more needs padding.
    longer = to_text(sign_certificate(example_certificate(name_en="Business licence."), key))
    padded = longer + "=" * (-(len(longer) - 6) % 8)
    assert padded != longer
    forged = SignedCertificate()
    forged.CopyFrom(example)
    forged.certificate.department = "杭州市人民政府"
    short_signature = SignedCertificate()
    short_signature.CopyFrom(example)
    short_signature.signature = example.signature[:63]

    def signed_by(key_name: str, **over: Any) -> SignedCertificate:
        return sign_certificate(example_certificate(**over), CERT_KEYS.get(key_name) or KEYS[key_name])

    holder_201 = Holder(
        kind=HOLDER_KIND_ORGANISATION, display_name="长" * 201, display_id="91330106MA2B3C4D5E"
    )
    expired = signed_by("certificate", valid_until_ms=CERT_NOW)
    file_cases: list[tuple[str, SignedCertificate | bytes, str]] = [
        ("worked-example-file", example, "valid"),
        ("back-dated-with-a-lapsed-key", signed_by("certificate-old", issued_at_ms=T0 - 2 * DAY), "valid"),
        ("file-with-a-trailing-newline", example.SerializeToString() + b"\n", "malformed"),
        ("file-over-1536-bytes", _over_the_limit(), "malformed"),
        ("signature-63-bytes", short_signature, "malformed"),
        (
            "holder-display-name-201-characters",
            signed_anyway(example_certificate(holder=holder_201)),
            "malformed",
        ),
        ("manifest-expired", example, "manifest_expired"),
        (
            "unknown-issuer",
            signed_by("certificate", issuer="node-xx", certificate_id=f"node-xx/{CERT_APP}"),
            "unknown_issuer",
        ),
        ("unknown-key", signed_by("outsider"), "unknown_key"),
        ("key-revoked", signed_by("certificate-revoked"), "key_revoked"),
        ("issued-after-the-keys-window", signed_by("certificate-old"), "key_not_valid"),
        ("bad-signature", forged, "bad_signature"),
        (
            "issued-past-five-minutes-ahead",
            signed_by("certificate", issued_at_ms=CERT_NOW + MAX_FUTURE_SKEW_MS + 1),
            "not_yet_valid",
        ),
        (
            "issued-five-minutes-ahead",
            signed_by("certificate", issued_at_ms=CERT_NOW + MAX_FUTURE_SKEW_MS),
            "valid",
        ),
        ("expired-at-valid-until", expired, "expired"),
    ]
    wrapped = " " + padded[:40].lower() + "\r\n" + padded[40:].lower()
    text_cases: list[tuple[str, str, str]] = [
        ("worked-example-text", text, "valid"),
        ("text-lower-case-padded-and-wrapped", wrapped, "valid"),
        ("text-with-more-than-its-padding", padded + "=", "malformed"),
        ("text-with-a-split-prefix", "YR DC1:" + text[6:], "malformed"),
        ("text-with-an-ideographic-space", text[:20] + "\u3000" + text[20:], "malformed"),
        ("text-over-1536-bytes", to_text(_over_the_limit()), "malformed"),
        ("text-expired-at-valid-until", to_text(expired), "expired"),
    ]
    # Every case is checked a day after the example was issued, but for the manifest's own expiry.
    now = {"manifest-expired": T0 + 30 * DAY}
    cases = [
        {
            "name": name,
            "form": "file",
            "input": (c.SerializeToString() if isinstance(c, SignedCertificate) else c).hex(),
            "now_ms": now.get(name, CERT_NOW),
            "expect": expect,
        }
        for name, c, expect in file_cases
    ]
    cases += [
        {"name": name, "form": "text", "input": t, "now_ms": CERT_NOW, "expect": expect}
        for name, t, expect in text_cases
    ]
    return {
        "keys": [
            {"name": name, "seed": k.seed.hex(), "public_key": k.public_key.hex(), "key_id": k.key_id}
            for name, k in CERT_KEYS.items()
        ],
        "signed_manifest": certificate_manifest().hex(),
        "example": {
            "signing_input": certificate_signing_input(example.certificate).hex(),
            "signature": example.signature.hex(),
            "signed_certificate": example.SerializeToString().hex(),
            "text": text,
        },
        "cases": cases,
    }


def json_text_vectors() -> list[dict[str, str]]:
    """Section 1, JSON text: texts a receiver takes and texts it refuses, whatever field
    carries them. Each is what a careless encoder or a hostile member could send."""

    def nest(open_: str, close: str, depth: int) -> str:
        return open_ * depth + "1" + close * depth

    deep_objects = '{"a":' * 32 + "1" + "}" * 32
    cases: list[tuple[str, bytes, str]] = [
        ("object", '{"name": "张三", "n": 7, "ok": true, "none": null}'.encode(), "valid"),
        ("array-at-the-top", b"[1, 2, 3]", "valid"),
        ("arrays-32-deep", nest("[", "]", 32).encode(), "valid"),
        ("objects-32-deep", deep_objects.encode(), "valid"),
        ("surrogate-pair-escaped", b'{"smile": "\\ud83d\\ude00"}', "valid"),
        ("escaped-backslash-then-u-d800", b'{"text": "\\\\ud800"}', "valid"),
        ("large-integer", b'{"n": 123456789012345678901234567890}', "valid"),
        ("arrays-33-deep", nest("[", "]", 33).encode(), "invalid"),
        ("objects-33-deep", ('{"a":' * 33 + "1" + "}" * 33).encode(), "invalid"),
        ("repeated-name", b'{"consent": false, "consent": true}', "invalid"),
        ("repeated-name-nested", b'{"a": {"b": 1, "b": 1}}', "invalid"),
        ("repeated-name-by-escape", b'{"a": 1, "\\u0061": 2}', "invalid"),
        ("lone-high-surrogate-escaped", b'{"text": "\\ud800"}', "invalid"),
        ("lone-low-surrogate-escaped", b'{"text": "\\udc80"}', "invalid"),
        ("surrogates-in-the-wrong-order", b'{"text": "\\ude00\\ud83d"}', "invalid"),
        ("lone-surrogate-in-a-name", b'{"\\udbff": 1}', "invalid"),
        ("surrogate-encoded-in-utf-8", b'{"text": "\xed\xa0\x80"}', "invalid"),
        ("overlong-utf-8", b'{"text": "\xc0\xaf"}', "invalid"),
        ("utf-16", '{"name": "张三"}'.encode("utf-16"), "invalid"),
        ("byte-order-mark", "\ufeff{}".encode(), "invalid"),
        ("nan", b'{"n": NaN}', "invalid"),
        ("infinity", b'{"n": -Infinity}', "invalid"),
        ("number-beyond-binary64", b'{"n": 1e400}', "invalid"),
        ("trailing-comma", b'{"a": 1,}', "invalid"),
        # Settled after tests/independent/JSON_TEXT_GAPS.md:
        ("empty-arrays-32-deep", ("[" * 32 + "]" * 32).encode(), "valid"),
        ("empty-arrays-33-deep", ("[" * 33 + "]" * 33).encode(), "invalid"),
        ("integer-beyond-binary64", b'{"n": 1' + b"0" * 309 + b"}", "invalid"),
        ("largest-binary64", b'{"n": 1.7976931348623157e308}', "valid"),
        ("just-beyond-the-largest-binary64", b'{"n": 1.7976931348623159e308}', "invalid"),
        ("underflowing-to-zero", b'{"n": 1e-400, "m": -0}', "valid"),
        ("surrogates-apart", b'{"text": "\\ud83dx\\ude00"}', "invalid"),
        ("code-point-above-10ffff", b'{"text": "\xf4\x90\x80\x80"}', "invalid"),
        ("byte-order-mark-inside-a-string", '{"text": "\ufeff"}'.encode(), "valid"),
        ("escaped-nul", b'{"text": "\\u0000"}', "valid"),
        ("names-equal-only-when-normalised", '{"\u00e9": 1, "e\u0301": 2}'.encode(), "valid"),
    ]
    return [{"name": name, "text": text.hex(), "expect": expect} for name, text, expect in cases]


def build() -> dict[str, Any]:
    table, anchors, successors = manifests()
    sealed_valid, sealed_invalid, sealed = sealed_vectors()
    return {
        "about": "Vectors for docs/protocol.md, made by scripts/make_vectors.py; bytes in lowercase hex.",
        "keys": [
            {
                "name": name,
                "seed": key.seed.hex(),
                "public_key": key.public_key.hex(),
                "key_id": key.key_id,
                "x25519_public_key": x25519_public_key(key.public_key).hex(),
                "x25519_secret_key": x25519_secret_key(key).hex(),
            }
            for name, key in KEYS.items()
        ],
        "envelopes": envelope_vectors(sealed),
        "forwarded": forwarded_vectors(),
        "applications": application_vectors(),
        "status": status_vectors(),
        "receipt_runs": receipt_run_vectors(),
        "json_text": json_text_vectors(),
        "routing": routing_vectors(),
        "signing_keys": signing_key_vectors(),
        "certificates": certificate_vectors(),
        "sealed": {"valid": sealed_valid, "invalid": sealed_invalid},
        "manifests": {"signed": table, "anchors": anchors, "successors": successors},
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        if OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is stale; run scripts/make_vectors.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
