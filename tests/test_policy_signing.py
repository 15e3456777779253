"""Signed bundles and hot reload: unsigned or altered bundles are refused, the old one stays."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from core.clock import FakeClock
from core.errors import ConfigError
from core.keys import NodeKey
from policies.holder import PolicyHolder
from policies.model import PolicyInput
from policies.signing import read_signed, sig_path_for, sign_bundle, signing_message

GOOD = b'node: shanghai\nrevision: "1"\nrules:\n  - {id: r1, effect: allow, when: {direction: inbound}}\n'
NEXT = b'node: shanghai\nrevision: "2"\nrules:\n  - {id: r2, effect: deny, when: {direction: inbound}}\n'


def write(path: Path, data: bytes) -> None:
    """Write and give the file a fresh mtime, so the holder's change check never depends
    on the filesystem's timestamp granularity."""
    path.write_bytes(data)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def signed(tmp_path: Path, key: NodeKey, data: bytes = GOOD, name: str = "sh.yaml") -> Path:
    path = tmp_path / name
    write(path, data)
    sign_bundle(path, key)
    return path


def metric(name: str, bundle: str) -> float:
    return REGISTRY.get_sample_value(name, {"bundle": bundle}) or 0.0


def test_the_signature_covers_domain_length_and_exact_bytes(tmp_path: Path) -> None:
    key = NodeKey.generate()
    path = signed(tmp_path, key)
    body = json.loads(sig_path_for(path).read_text())
    assert body["key_id"] == key.key_id and body["alg"] == "ed25519"
    expected = b"yrd-policy-bundle-v1\x00" + len(GOOD).to_bytes(4, "big") + GOOD
    assert signing_message(GOOD) == expected
    key.verify_key.verify(expected, base64.b64decode(body["signature"]))
    assert read_signed(path, key.public_key) == GOOD


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        (lambda p: write(p, GOOD + b"# one more byte\n"), "bundle_bad_signature"),
        (lambda p: sig_path_for(p).unlink(), "bundle_unsigned"),
        (lambda p: sig_path_for(p).write_text("{not json"), "bundle_sig_malformed"),
        (lambda p: sign_bundle(p, NodeKey.generate()), "bundle_wrong_key"),
    ],
)
def test_altered_unsigned_or_foreign_bundles_are_refused(tmp_path: Path, tamper: object, code: str) -> None:
    key = NodeKey.generate()
    path = signed(tmp_path, key)
    tamper(path)  # type: ignore[operator]
    with pytest.raises(ConfigError) as err:
        read_signed(path, key.public_key)
    assert err.value.code == code


def test_holder_refuses_to_start_on_an_unsigned_bundle(tmp_path: Path) -> None:
    path = tmp_path / "unsigned.yaml"
    write(path, GOOD)
    with pytest.raises(ConfigError) as err:
        PolicyHolder(path, NodeKey.generate().public_key, FakeClock())
    assert err.value.code == "bundle_unsigned"
    assert metric("yrd_policy_bundle_ok", "unsigned.yaml") == 0


def test_holder_reloads_a_new_signed_bundle(tmp_path: Path) -> None:
    key = NodeKey.generate()
    path = signed(tmp_path, key, name="reload-ok.yaml")
    holder = PolicyHolder(path, key.public_key, FakeClock())
    assert holder.current().bundle.revision == "1"
    assert holder.maybe_reload() is False  # nothing changed
    signed(tmp_path, key, NEXT, name="reload-ok.yaml")
    assert holder.maybe_reload() is True
    assert holder.current().bundle.revision == "2"
    assert metric("yrd_policy_bundle_ok", "reload-ok.yaml") == 1


def test_a_bad_reload_keeps_the_old_bundle_and_raises_the_alert(tmp_path: Path) -> None:
    key = NodeKey.generate()
    path = signed(tmp_path, key, name="reload-bad.yaml")
    holder = PolicyHolder(path, key.public_key, FakeClock())
    before = metric("yrd_policy_bundle_reload_failures_total", "reload-bad.yaml")

    write(path, NEXT)  # edited but not re-signed
    assert holder.maybe_reload() is False
    assert holder.current().bundle.revision == "1"
    assert metric("yrd_policy_bundle_ok", "reload-bad.yaml") == 0
    assert metric("yrd_policy_bundle_reload_failures_total", "reload-bad.yaml") == before + 1
    assert holder.last_error is not None and "bundle_bad_signature" in holder.last_error
    assert holder.maybe_reload() is False  # the same broken version is not counted again
    assert metric("yrd_policy_bundle_reload_failures_total", "reload-bad.yaml") == before + 1

    signed(tmp_path, key, b"node: shanghai\nrevision: 3\nrules: [oops]\n", name="reload-bad.yaml")
    assert holder.maybe_reload() is False  # signed but invalid: still refused
    assert holder.current().bundle.revision == "1"
    assert metric("yrd_policy_bundle_reload_failures_total", "reload-bad.yaml") == before + 2

    signed(tmp_path, key, NEXT, name="reload-bad.yaml")
    assert holder.maybe_reload() is True
    assert holder.current().bundle.revision == "2" and holder.last_error is None
    assert metric("yrd_policy_bundle_ok", "reload-bad.yaml") == 1


async def test_watch_polls_with_the_injected_clock(tmp_path: Path) -> None:
    key = NodeKey.generate()
    path = signed(tmp_path, key, name="watched.yaml")
    holder = PolicyHolder(path, key.public_key, FakeClock())
    signed(tmp_path, key, NEXT, name="watched.yaml")
    task = asyncio.create_task(holder.watch(interval_s=5.0))
    for _ in range(3):
        await asyncio.sleep(0)
    task.cancel()
    assert holder.current().bundle.revision == "2"


def test_quota_state_survives_a_reload(tmp_path: Path) -> None:
    key = NodeKey.generate()
    quota = b"quotas:\n  - {id: q, per: peer, per_minute: 1, burst: 1}\n"
    path = signed(tmp_path, key, GOOD + quota, name="quota.yaml")
    holder = PolicyHolder(path, key.public_key, FakeClock())
    request = PolicyInput(
        "inbound", "jiangsu", "32", "sh.a", "310000", "d", "p", "clerk", frozenset(), True, 0
    )
    assert holder.current().decide(request).allowed
    signed(tmp_path, key, GOOD.replace(b'"1"', b'"9"') + quota, name="quota.yaml")
    assert holder.maybe_reload()
    assert holder.current().decide(request).code == "quota"  # no fresh burst after a reload


def test_a_signed_bundle_of_another_node_is_refused(tmp_path: Path) -> None:
    key = NodeKey.generate()
    path = signed(tmp_path, key, name="copied.yaml")  # node: shanghai
    with pytest.raises(ConfigError) as err:
        PolicyHolder(path, key.public_key, FakeClock(), node_id="jiangsu")
    assert err.value.code == "bundle_wrong_node"
    holder = PolicyHolder(path, key.public_key, FakeClock(), node_id="shanghai")
    assert metric("yrd_policy_bundle_ok", "shanghai") == 1
    assert holder.current().bundle.node == "shanghai"
