"""Manifest loader and verifier: damaged manifests are refused with ManifestRejected (or a
ConfigError for an unreadable file), and only a manifest whose signed bytes are untouched is
trusted.

Run long: ``python -m tests.fuzz.manifest -atheris_runs=100000``.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path

from yrd.federation.v1 import manifest_pb2 as mpb

from core.errors import ManifestRejected
from core.keys import NodeKey
from registry.manifest import (
    TrustedManifest,
    load_signed_manifest,
    sign_manifest,
    verify_anchor,
    verify_successor,
)
from tests.fuzz import MODES, mutate, run

NOW = 1_767_225_600_000
DAY = 86_400_000
KEYS = {n: NodeKey.from_seed(hashlib.sha256(f"manifest-{n}".encode()).digest()) for n in ("a", "b", "c")}


def member(name: str, prefix: str, relay: str = "") -> mpb.Member:
    k = KEYS[name]
    key = mpb.MemberKey(
        key_id=k.key_id,
        public_key=k.public_key,
        not_before_ms=NOW - DAY,
        not_after_ms=NOW + 30 * DAY,
        status=mpb.KEY_STATUS_ACTIVE,
    )
    return mpb.Member(node_id=f"node-{name}", jurisdictions=[prefix], keys=[key], relay=relay)


def signed(version: int, members: list[mpb.Member], threshold: int, signers: str) -> mpb.SignedManifest:
    body = mpb.Manifest(
        federation_id="yrd",
        version=version,
        threshold=threshold,
        issued_at_ms=NOW,
        expires_at_ms=NOW + 10 * DAY,
        members=members,
    ).SerializeToString()
    out = mpb.SignedManifest(manifest=body)
    for name in signers:
        out = sign_manifest(out, f"node-{name}", KEYS[name])
    return out


ANCHOR = signed(1, [member("a", "31"), member("b", "32"), member("c", "33")], 2, "abc")
CURRENT = verify_anchor(ANCHOR)
# node-c removed; a quorum of version 1 (a, b) and of version 2 (a, b) signs.
SUCCESSOR = signed(2, [member("a", "31"), member("b", "32")], 2, "ab")

Verify = Callable[[mpb.SignedManifest], TrustedManifest]
SEEDS: list[tuple[Verify, mpb.SignedManifest]] = [
    (verify_anchor, ANCHOR),
    (lambda s: verify_successor(CURRENT, s, NOW), SUCCESSOR),
]
_DIR = Path(tempfile.mkdtemp(prefix="yrd-fuzz-manifest-"))


def intact(candidate: mpb.SignedManifest, seed: mpb.SignedManifest) -> bool:
    """The signed bytes are the seed's and every one of the seed's signatures is still there."""
    return candidate.manifest == seed.manifest and all(s in candidate.signatures for s in seed.signatures)


def fuzz_one(data: bytes) -> None:
    if not data:
        return
    verify, seed = SEEDS[(data[0] // MODES) % len(SEEDS)]
    path = _DIR / "manifest.bin"
    path.write_bytes(mutate(seed.SerializeToString(), data[0] % MODES, data[1:]))
    try:
        candidate = load_signed_manifest(path)
    except ManifestRejected as e:
        assert e.code == "malformed_manifest" and e.field == "manifest_file", e
        return
    try:
        verify(candidate)
    except ManifestRejected as e:
        assert e.code and e.reason, e
        assert not intact(candidate, seed), f"an intact manifest refused: {e}"
        return
    assert candidate.manifest == seed.manifest, "a manifest with altered bytes was trusted"


if __name__ == "__main__":
    run(fuzz_one)
