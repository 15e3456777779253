"""Fuzzing the manifest loader, check_form and the quorum checks (oracle in tests/fuzz/manifest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from yrd.federation.v1 import manifest_pb2 as mpb

from core.errors import ConfigError, ManifestRejected
from registry.manifest import check_form, load_signed_manifest, sign_manifest, verify_anchor
from tests.fuzz import FUZZ
from tests.fuzz.manifest import ANCHOR, KEYS, SEEDS, fuzz_one

INT64 = st.integers(-(2**63), 2**63 - 1)
UINT64 = st.integers(0, 2**64 - 1)
IDS = st.sampled_from(["node-a", "node-b", ""]) | st.text(max_size=20)
PREFIXES = st.sampled_from(["31", "3101", "310101", "32", "99", "3", "", "３１", "310"]) | st.text(max_size=8)

KEY = st.builds(
    mpb.MemberKey,
    key_id=st.sampled_from([k.key_id for k in KEYS.values()]) | st.text(max_size=20),
    public_key=st.sampled_from([k.public_key for k in KEYS.values()]) | st.binary(max_size=40),
    not_before_ms=INT64,
    not_after_ms=INT64,
    status=st.integers(0, 5),
)
MEMBER = st.builds(
    mpb.Member,
    node_id=IDS,
    jurisdictions=st.lists(PREFIXES, max_size=3),
    keys=st.lists(KEY, max_size=3),
    relay=IDS,
    grpc_endpoint=st.text(max_size=20),
)
MANIFEST = st.builds(
    mpb.Manifest,
    federation_id=st.text(max_size=10),
    version=UINT64,
    threshold=st.integers(0, 2**32 - 1) | st.integers(0, 4),
    issued_at_ms=INT64,
    expires_at_ms=INT64,
    members=st.lists(MEMBER, max_size=4),
)


@FUZZ
@given(st.binary(max_size=800))
@example(b"")
@example(bytes([0]) + b"\x0a\xff\xff\xff\xff\x0f")  # a length prefix far past the end
@example(bytes([6]) + b"\x00\x10\x00\x00\x20\x00")  # the successor's signed bytes overwritten
def test_damaged_manifests_are_refused_and_intact_ones_trusted(data: bytes) -> None:
    fuzz_one(data)


def test_every_seed_is_trusted_untouched() -> None:
    for verify, seed in SEEDS:
        assert verify(seed).manifest.SerializeToString() == seed.manifest


@FUZZ
@given(MANIFEST)
def test_check_form_refuses_with_a_field_or_passes(manifest: mpb.Manifest) -> None:
    try:
        check_form(manifest)
    except ManifestRejected as e:
        assert e.code == "malformed_manifest" and e.field, e
        return
    # What passed must be usable as a key directory without surprises.
    assert 1 <= manifest.threshold <= len(manifest.members)
    assert all(len(k.public_key) == 32 for m in manifest.members for k in m.keys)


@FUZZ
@given(MANIFEST, st.lists(st.sampled_from(sorted(KEYS)), max_size=3))
def test_invented_manifests_never_win_trust_without_a_quorum(
    manifest: mpb.Manifest, signers: list[str]
) -> None:
    """Arbitrary manifests signed by whoever: the anchor check refuses or counts real signatures."""
    signed = mpb.SignedManifest(manifest=manifest.SerializeToString())
    for name in signers:
        signed = sign_manifest(signed, f"node-{name}", KEYS[name])
    try:
        trusted = verify_anchor(signed)
    except ManifestRejected as e:
        assert e.code in ("malformed_manifest", "no_quorum"), e
        return
    # Only keys the manifest itself lists under the signer's own node id may count.
    listed = {(m.node_id, k.key_id) for m in trusted.manifest.members for k in m.keys}
    counted = {s.node_id for s in signed.signatures if (s.node_id, s.key_id) in listed}
    assert len(counted) >= trusted.manifest.threshold


def test_an_unreadable_manifest_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_signed_manifest(tmp_path)  # a directory
    assert err.value.field == "manifest_file"
    (tmp_path / "m").write_bytes(ANCHOR.SerializeToString()[:-3])
    with pytest.raises(ManifestRejected):
        verify_anchor(load_signed_manifest(tmp_path / "m"))
