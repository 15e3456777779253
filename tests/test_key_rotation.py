"""A rotated node opens what peers sealed to its old key until the federation closes that
key's window (drops or revokes it), and nothing else opens it with one key too few."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from yrd.federation.v1 import manifest_pb2

from core.clock import FakeClock
from core.errors import ConfigError, InvalidInput
from core.keys import load_key
from node.app import Node, build_node, opening_keys
from node.trust.sealing import seal, unseal
from simulations.cluster import edit_config
from simulations.local_federation import PROVINCES, prepare
from simulations.simulate import rotation

PAYLOAD = b"personal data sealed before the switch"


@pytest.fixture
async def rotated(tmp_path: Path) -> AsyncIterator[tuple[Node, bytes, FakeClock]]:
    """Jiangsu after deploy.md's steps: successor published, key switched, old key retired.
    Also the payload a peer sealed to its old key, as its manifest still said to."""
    clock = FakeClock()
    configs = {c.node_id: c for c in prepare(tmp_path, PROVINCES, now_ms=clock.now_ms())}
    old_public = load_key(configs["jiangsu"].key_file).public_key
    sealed = seal(old_public, PAYLOAD)
    plan = rotation.prepare(configs, "jiangsu", clock.now_ms() + 60_000, clock.now_ms())
    rotation.publish(configs["jiangsu"], plan)
    clock.advance(61)
    retired = rotation.switch(configs["jiangsu"], plan)
    config = edit_config(configs["jiangsu"], {"opening_key_files": [retired.name]})
    node = build_node(config, clock)
    yield node, sealed, clock
    node.db.close()
    node.users.close()


async def test_a_payload_sealed_to_the_retired_key_opens(rotated: tuple[Node, bytes, FakeClock]) -> None:
    node, sealed, _clock = rotated
    assert node.trust.manifest.manifest.version == 2
    assert node.trust.key.key_id != node.trust.others[0].key_id
    assert unseal(node.trust.opening_keys(), sealed) == PAYLOAD
    with pytest.raises(InvalidInput) as e:
        unseal(node.trust.key, sealed)  # what the owner did before it kept retired keys
    assert e.value.code == "sealed_payload_invalid"


async def test_the_retired_key_opens_nothing_once_a_successor_revokes_it(
    rotated: tuple[Node, bytes, FakeClock], tmp_path: Path
) -> None:
    node, sealed, clock = rotated
    v3 = manifest_pb2.Manifest()
    v3.CopyFrom(node.trust.manifest.manifest)
    v3.version, v3.issued_at_ms = 3, clock.now_ms()
    member = next(m for m in v3.members if m.node_id == "jiangsu")
    old = next(k for k in member.keys if k.key_id == node.trust.others[0].key_id)
    old.status = manifest_pb2.KEY_STATUS_REVOKED
    signers = [(i, load_key(tmp_path / i / "node.key")) for i in ("jiangsu", "shanghai", "zhejiang")]
    assert node.trust.accept_successor(rotation.signed_by(v3, signers), clock.now_ms())
    assert node.trust.opening_keys() == [node.trust.key]
    with pytest.raises(InvalidInput, match="sealed_payload_invalid"):
        unseal(node.trust.opening_keys(), sealed)


def test_the_successor_keeps_the_old_key_an_hour_past_the_switch(tmp_path: Path) -> None:
    clock = FakeClock()
    configs = {c.node_id: c for c in prepare(tmp_path, PROVINCES, now_ms=clock.now_ms())}
    switch_ms = clock.now_ms() + 10_000
    plan = rotation.prepare(configs, "anhui", switch_ms, clock.now_ms())
    manifest = manifest_pb2.Manifest.FromString(plan.signed.manifest)
    keys = {k.key_id: k for m in manifest.members if m.node_id == "anhui" for k in m.keys}
    assert keys[plan.old_key_id].not_after_ms == switch_ms + rotation.OVERLAP_MS
    assert keys[plan.new_key_id].not_before_ms == switch_ms
    assert len(plan.signers) == manifest.threshold == 3 and plan.signers[0] == "anhui"


async def test_before_its_switch_a_node_opens_what_is_sealed_to_its_next_key(tmp_path: Path) -> None:
    """Published but not yet switched: peers holding the successor seal to the next key from
    the switch time on, while the node still signs with the old one."""
    clock = FakeClock()
    configs = {c.node_id: c for c in prepare(tmp_path, PROVINCES, now_ms=clock.now_ms())}
    plan = rotation.prepare(configs, "jiangsu", clock.now_ms() + 60_000, clock.now_ms())
    rotation.publish(configs["jiangsu"], plan)
    following = rotation.next_key_file(configs["jiangsu"])
    config = edit_config(configs["jiangsu"], {"opening_key_files": [following.name]})
    clock.advance(61)
    node = build_node(config, clock)
    try:
        assert node.trust.key.key_id == plan.old_key_id
        sealed = seal(node.trust.public_key_of("jiangsu", clock.now_ms()), PAYLOAD)
        assert node.trust.manifest.signing_key_id("jiangsu", clock.now_ms()) == plan.new_key_id
        assert unseal(node.trust.opening_keys(), sealed) == PAYLOAD
    finally:
        node.db.close()
        node.users.close()


def test_an_opening_key_that_cannot_be_read_names_its_setting(tmp_path: Path) -> None:
    clock = FakeClock()
    (config,) = prepare(tmp_path, PROVINCES[:1], now_ms=clock.now_ms())
    config = edit_config(config, {"opening_key_files": ["gone.key"]})
    with pytest.raises(ConfigError) as e:
        opening_keys(config)
    assert e.value.field == "opening_key_files" and "gone.key" in e.value.reason


async def test_a_check_code_printed_before_a_rotation_still_tracks(tmp_path: Path) -> None:
    """A citizen's receipt outlives the node's key: the code comes from the node's own secret.
    A code printed before the secret existed (derived from the signing key) verifies while
    the node still keeps that key."""
    clock = FakeClock()
    configs = {c.node_id: c for c in prepare(tmp_path, PROVINCES, now_ms=clock.now_ms())}
    before = build_node(configs["jiangsu"], clock)
    code = before.backend.check_code_of("app-1")
    mac_key = hashlib.sha256(b"yrd-check-code\0" + before.trust.key.seed).digest()
    raw = base64.b32encode(hmac.new(mac_key, b"app-1", hashlib.sha256).digest()[:5]).decode()
    legacy = f"{raw[:4]}-{raw[4:]}"
    before.db.close()
    before.users.close()
    plan = rotation.prepare(configs, "jiangsu", clock.now_ms() + 60_000, clock.now_ms())
    rotation.publish(configs["jiangsu"], plan)
    clock.advance(61)
    retired = rotation.switch(configs["jiangsu"], plan)
    after = build_node(edit_config(configs["jiangsu"], {"opening_key_files": [retired.name]}), clock)
    try:
        assert after.trust.key.key_id != before.trust.key.key_id
        assert after.backend.check_code_of("app-1") == code
        assert after.backend.check_code_fits("app-1", code.replace("-", "").lower())
        assert after.backend.check_code_fits("app-1", legacy)
        assert not after.backend.check_code_fits("app-2", code)
    finally:
        after.db.close()
        after.users.close()
