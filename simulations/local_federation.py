"""Lay out a federation on one machine: keys, a manifest signed by every member, the
sample catalogues, signed policy bundles and a node.toml per node.

The demo, the multi-node tests and the simulations all start from this, so they run
the same node code and configuration an operator would, only on 127.0.0.1.
"""

from __future__ import annotations

import datetime
import itertools
import os
import random
import shutil
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tomli_w
from yrd.federation.v1 import manifest_pb2

from core.keys import NodeKey, load_key, save_key
from node.app import create_node_database
from node.cli.data import load_records
from node.config import NodeConfig, load_config
from node.trust.tls import create_tls_identity, pem_to_der
from policies.signing import sign_bundle
from registry.manifest import save_signed_manifest, sign_manifest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "registry" / "samples"
BUNDLES = ROOT / "policies" / "bundles"
DAY_MS = 86_400_000
# Load generators (yrd bench, yrd simulate) submit as one account standing for every clerk
# of a province, so the per-account limit meant for one person is lifted for them.
LOAD_LIMITS: dict[str, object] = {"clerk_requests_per_s": 1_000_000, "clerk_burst": 1_000_000}


@dataclass(frozen=True)
class NodeSpec:
    node_id: str
    name: str
    jurisdiction: str  # 6-digit GB/T 2260 code of the node's own government
    prefixes: tuple[str, ...]
    catalogue: Path
    bundle: Path | None
    relay: str = ""
    dispatch: Path | None = None  # clue dispatch rules, signed with the node key like the bundle
    records: Path | None = None  # held records of its data resources (docs/sharing.md), loaded once


def province(node_id: str, name: str, code: str) -> NodeSpec:
    return NodeSpec(
        node_id,
        name,
        code,
        (code[:2],),
        SAMPLES / f"{node_id}.toml",
        BUNDLES / f"{node_id}.yaml",
        dispatch=SAMPLES / "dispatch" / f"{node_id}.toml",
        records=SAMPLES / "data_records" / f"{node_id}.json",
    )


PROVINCES = (
    province("shanghai", "上海 Shanghai", "310000"),
    province("jiangsu", "江苏 Jiangsu", "320000"),
    province("zhejiang", "浙江 Zhejiang", "330000"),
    province("anhui", "安徽 Anhui", "340000"),
)


# Below Linux's ephemeral range (32768-60999): a port the kernel hands out for an outgoing
# connection can be taken between our check and the node's bind, one of ours cannot. Ports are
# handed out in turn from a random start, so one process never hands out a port twice (two
# nodes of one federation, checked free one after the other, would otherwise often get the
# same port) and two processes rarely start near each other. Processes that run side by side
# for long (parallel test workers and the nodes they start) can be given shares that never
# meet: ``YRD_PORTS=low-high`` (inclusive) narrows the range for a process and its children.
def _port_range() -> range:
    low, _, high = os.environ.get("YRD_PORTS", "20000-32767").partition("-")
    return range(int(low), int(high) + 1)


_PORTS = _port_range()
_turn = itertools.count(random.SystemRandom().randrange(len(_PORTS)))
_turn_lock = threading.Lock()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now, for a node laid out before it starts."""
    for _ in range(200):
        with _turn_lock:
            port = _PORTS[next(_turn) % len(_PORTS)]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError("no free port on 127.0.0.1 between 20000 and 32767")


def _key(directory: Path) -> NodeKey:
    path = directory / "node.key"
    if path.exists():
        return load_key(path)
    key = NodeKey.generate()
    save_key(key, path)
    return key


def _tls_certificate(directory: Path, node_id: str, now_ms: int, valid_days: int) -> bytes:
    """The node's TLS certificate (DER), created with its key on first use, as `yrd node init` does."""
    cert, key = directory / "tls.crt", directory / "tls.key"
    if cert.exists():
        return pem_to_der(cert.read_bytes(), str(cert))
    # TLS checks validity against the machine's real clock, whatever clock the federation runs
    # on (tests shift it by hours or start it in the past), so the window covers both.
    laid_out = datetime.datetime.fromtimestamp(now_ms / 1000, datetime.UTC)
    real = datetime.datetime.now(datetime.UTC)
    start = min(laid_out, real) - datetime.timedelta(days=1)
    days = (max(laid_out, real) - start).days + valid_days
    return create_tls_identity(node_id, cert, key, start, valid_days=days)


def prepare(
    root: Path,
    specs: Sequence[NodeSpec],
    *,
    now_ms: int,
    grpc_ports: list[int] | None = None,
    http_ports: list[int] | None = None,
    threshold: int | None = None,
    valid_days: int = 365,
    extra: dict[str, object] | None = None,
) -> list[NodeConfig]:
    """Write every node's directory under ``root`` and return their configs. Keys that
    exist are kept, so a restarted demo keeps its identities and databases."""
    grpc_ports = grpc_ports or [free_port() for _ in specs]
    http_ports = http_ports or [free_port() for _ in specs]
    keys = {}
    certs = {}
    new_nodes = set()
    for spec in specs:
        (root / spec.node_id).mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(root / spec.node_id, 0o700)  # keys, database and logs live here
        new_nodes.update([spec.node_id] if not (root / spec.node_id / "node.key").exists() else [])
        keys[spec.node_id] = _key(root / spec.node_id)
        certs[spec.node_id] = _tls_certificate(root / spec.node_id, spec.node_id, now_ms, valid_days)
    members = []
    for spec, gport, hport in zip(specs, grpc_ports, http_ports, strict=True):
        key = keys[spec.node_id]
        members.append(
            manifest_pb2.Member(
                node_id=spec.node_id,
                display_name=spec.name,
                jurisdictions=list(spec.prefixes),
                grpc_endpoint=f"127.0.0.1:{gport}",
                http_endpoint=f"http://127.0.0.1:{hport}",
                relay=spec.relay,
                tls_certificates=[certs[spec.node_id]],
                keys=[
                    manifest_pb2.MemberKey(
                        key_id=key.key_id,
                        public_key=key.public_key,
                        not_before_ms=now_ms - DAY_MS,
                        not_after_ms=now_ms + valid_days * DAY_MS,
                        status=manifest_pb2.KEY_STATUS_ACTIVE,
                    )
                ],
            )
        )
    manifest = manifest_pb2.Manifest(
        federation_id="yrd-local",
        version=1,
        threshold=threshold or max(1, (len(specs) // 2) + 1),
        issued_at_ms=now_ms,
        expires_at_ms=now_ms + valid_days * DAY_MS,
        members=members,
    )
    signed = manifest_pb2.SignedManifest(manifest=manifest.SerializeToString())
    for spec in specs:
        signed = sign_manifest(signed, spec.node_id, keys[spec.node_id])
    configs = []
    for spec, gport, hport in zip(specs, grpc_ports, http_ports, strict=True):
        d = root / spec.node_id
        save_signed_manifest(d / "anchor.manifest", signed)
        shutil.copyfile(spec.catalogue, d / "catalogue.toml")
        doc: dict[str, object] = {
            "node_id": spec.node_id,
            "name": spec.name,
            "jurisdiction": spec.jurisdiction,
            "data_dir": ".",
            "grpc_listen": f"127.0.0.1:{gport}",
            "http_listen": f"127.0.0.1:{hport}",
            "anchor_manifest": "anchor.manifest",
            "catalogue": "catalogue.toml",
        }
        if spec.bundle is not None:
            shutil.copyfile(spec.bundle, d / "policy.yaml")
            sign_bundle(d / "policy.yaml", keys[spec.node_id])
            doc["policy_bundle"] = "policy.yaml"
        if spec.dispatch is not None:
            shutil.copyfile(spec.dispatch, d / "dispatch.toml")
            sign_bundle(d / "dispatch.toml", keys[spec.node_id])
            doc["dispatch_rules"] = "dispatch.toml"
        doc.update(extra or {})
        (d / "node.toml").write_text(tomli_w.dumps(doc))
        config = load_config(d / "node.toml")
        if spec.node_id in new_nodes:  # as `yrd node init` does; a kept node keeps its database
            create_node_database(config).close()
            if spec.records is not None:  # as an operator does with `yrd data load`
                load_records(config, spec.records)
        configs.append(config)
    return configs
