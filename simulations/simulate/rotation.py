"""A key rotation in the middle of a run, done as docs/deploy.md tells an operator to.

The simulation plays every operator at once: it makes the node's next key, writes the
successor manifest (the new key ``active`` from the switch time ``T``, the old one kept
``active`` until ``T`` + 1 hour), has a quorum of the current members sign it and hands it
to the rotating node alone, restarted still signing with its old key but opening with the
next one too (from ``T`` peers holding the successor seal to it); gossip carries it to the
others. Once ``T`` has come and every member holds it, the node is restarted on its new
key, keeping the old one for opening what peers sealed before (``opening_key_files``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from yrd.federation.v1 import manifest_pb2

from core.errors import ConfigError
from core.keys import NodeKey, load_key, save_key
from node.app import CURRENT_MANIFEST, load_trusted_manifest
from node.config import NodeConfig
from policies.signing import sign_bundle
from registry.manifest import save_signed_manifest, sign_manifest

OVERLAP_MS = 3_600_000  # deploy.md step 2: the old key stays valid one hour past the switch


def successor_with_key(
    current: manifest_pb2.Manifest, node_id: str, new_key: NodeKey, switch_ms: int, issued_at_ms: int
) -> manifest_pb2.Manifest:
    """Version n+1: ``node_id`` gains ``new_key`` from ``switch_ms``; its keys valid then
    close one hour after it. Everything else is carried over unchanged."""
    nxt = manifest_pb2.Manifest()
    nxt.CopyFrom(current)
    nxt.version = current.version + 1
    nxt.issued_at_ms = issued_at_ms
    member = next((m for m in nxt.members if m.node_id == node_id), None)
    if member is None:
        raise ConfigError(f"{node_id!r} is not a member", field="node")
    until = max(k.not_after_ms for k in member.keys)
    for k in member.keys:
        if k.status == manifest_pb2.KEY_STATUS_ACTIVE and k.not_before_ms <= switch_ms < k.not_after_ms:
            k.not_after_ms = min(k.not_after_ms, switch_ms + OVERLAP_MS)
    member.keys.append(
        manifest_pb2.MemberKey(
            key_id=new_key.key_id,
            public_key=new_key.public_key,
            not_before_ms=switch_ms,
            not_after_ms=max(until, switch_ms + OVERLAP_MS + 1),
            status=manifest_pb2.KEY_STATUS_ACTIVE,
        )
    )
    return nxt


def signed_by(
    manifest: manifest_pb2.Manifest, signers: Sequence[tuple[str, NodeKey]]
) -> manifest_pb2.SignedManifest:
    signed = manifest_pb2.SignedManifest(manifest=manifest.SerializeToString())
    for node_id, key in signers:
        signed = sign_manifest(signed, node_id, key)
    return signed


@dataclass(frozen=True)
class Rotation:
    node_id: str
    old_key_id: str
    new_key_id: str
    switch_ms: int
    signed: manifest_pb2.SignedManifest
    signers: tuple[str, ...]

    @property
    def version(self) -> int:
        return manifest_pb2.Manifest.FromString(self.signed.manifest).version


def manifest_version(config: NodeConfig) -> int:
    """The version a node holds on disk (what gossip saved; files are replaced atomically)."""
    return load_trusted_manifest(config).manifest.version


def prepare(configs: Mapping[str, NodeConfig], node_id: str, switch_ms: int, now_ms: int) -> Rotation:
    """Steps 1-3: the next key written beside the node's key, the successor naming it from
    ``switch_ms``, signed by a quorum of the current members (the rotating one, with its
    old key, first). The simulation holds every member's key file, as their operators would."""
    config = configs[node_id]
    current = load_trusted_manifest(config)
    old_key = load_key(config.key_file)
    new_key = NodeKey.generate()
    save_key(new_key, next_key_file(config))
    order = [node_id, *(m.node_id for m in current.members if m.node_id != node_id)]
    signers = [(i, load_key(configs[i].key_file)) for i in order[: current.manifest.threshold]]
    signed = signed_by(successor_with_key(current.manifest, node_id, new_key, switch_ms, now_ms), signers)
    return Rotation(node_id, old_key.key_id, new_key.key_id, switch_ms, signed, tuple(i for i, _ in signers))


def publish(config: NodeConfig, rotation: Rotation) -> None:
    """Step 4: the successor given to one node (it takes it at its next start); gossip does the rest."""
    save_signed_manifest(config.data_dir / CURRENT_MANIFEST, rotation.signed)


def switch(config: NodeConfig, rotation: Rotation) -> Path:
    """Step 5, with the node stopped: the old key moved aside (kept: the returned path, for
    ``opening_key_files``), the next key into its place, and the policy bundle and dispatch
    rules signed again with it, since the node verifies them with its own key."""
    retired = config.data_dir / f"retired-{rotation.old_key_id}.key"
    config.key_file.rename(retired)
    next_key_file(config).rename(config.key_file)
    new_key = load_key(config.key_file)
    for signed_file in (config.policy_bundle, config.dispatch_rules):
        if signed_file is not None:
            sign_bundle(signed_file, new_key)
    return retired


def next_key_file(config: NodeConfig) -> Path:
    return config.key_file.with_name(config.key_file.name + ".next")
