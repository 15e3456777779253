"""The faults that change a node's own settings: its clock (``skew``) and its key
(``rotate``). Both restart the node gracefully, as an operator would, with a changed
node.toml or key files; what the run saw of them goes into ``Fault.observed``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from collections.abc import Callable

from simulations.cluster import Cluster
from simulations.simulate import rotation
from simulations.simulate.faults import Fault
from simulations.simulate.invariants import Check, fail

log = logging.getLogger(__name__)

REFUSED = re.compile(rb"refused envelope from '([^']*)': clock_skew")
SPREAD_POLL_S = 0.5
# How long past the switch time a rotation waits for every member to hold the successor.
SPREAD_TIMEOUT_S = 60.0
# How often members ask each other for a newer manifest during a run with a rotation.
GOSSIP_INTERVAL_S = 2.0


def log_offsets(cluster: Cluster) -> dict[str, int]:
    """Where each node's log ends now: what it writes from here on is the window's."""
    return {i: n.log_path.stat().st_size if n.log_path.exists() else 0 for i, n in cluster.nodes.items()}


def skew_refusals(cluster: Cluster, since: dict[str, int]) -> Counter[tuple[str, str]]:
    """(refusing node, sender) of every envelope refused for ``clock_skew`` since ``since``,
    from the nodes' own log lines (node/delivery/peer_server.py), which name the sender."""
    pairs: Counter[tuple[str, str]] = Counter()
    for node_id, node in cluster.nodes.items():
        with node.log_path.open("rb") as f:
            f.seek(since.get(node_id, 0))
            for match in REFUSED.finditer(f.read()):
                pairs[node_id, match.group(1).decode(errors="replace")] += 1
    return pairs


async def skew(cluster: Cluster, fault: Fault, now: Callable[[], float]) -> None:
    """Restart the node with ``[clock] offset_ms``, keep it so for the window, restart it on
    the host's clock. The window is the skewed process's life; the refusals counted are the
    ones it took part in, either way.

    The skewed node serves for the fault's whole duration, counted from when it is ready: a
    graceful stop can wait seconds for a call to a paused peer, and a window that the stop
    and the start had eaten would see no traffic, so no refusal to judge either way."""
    fault.applied_at_s = round(now(), 2)
    await cluster.stop_node(fault.node)
    cluster.configure(fault.node, {"clock": {"offset_ms": fault.offset_ms}})
    since = log_offsets(cluster)
    await cluster.restart(fault.node)
    await asyncio.sleep(fault.duration_s)
    await cluster.stop_node(fault.node)
    fault.reverted_at_s = round(now(), 2)
    pairs = {f"{a}<-{b}": n for (a, b), n in skew_refusals(cluster, since).items() if fault.node in (a, b)}
    fault.observed = {"clock_skew_refusals": sum(pairs.values()), "refused": pairs}
    cluster.configure(fault.node, {"clock": None})
    await cluster.restart(fault.node)


def _versions(cluster: Cluster) -> dict[str, int]:
    return {i: rotation.manifest_version(n.config) for i, n in cluster.nodes.items()}


async def _spread(cluster: Cluster, version: int, deadline: float) -> bool:
    """Until every member holds ``version`` (saved by its gossip) or the monotonic deadline."""
    while True:
        if min(_versions(cluster).values()) >= version:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(SPREAD_POLL_S)


async def rotate(cluster: Cluster, fault: Fault, now: Callable[[], float]) -> None:
    """Publish the successor at the window's start; switch the node's key at its end (``T``)
    or, when gossip is slower, as soon as every member holds the successor. Switching earlier
    would strand it: no member without it can verify the new key's signature, the signed
    answer that would carry the successor included."""
    node_id = fault.node
    configs = {i: n.config for i, n in cluster.nodes.items()}
    switch_ms = int(time.time() * 1000 + fault.duration_s * 1000)
    plan = rotation.prepare(configs, node_id, switch_ms, int(time.time() * 1000))
    await cluster.stop_node(node_id)
    config = cluster.nodes[node_id].config
    rotation.publish(config, plan)
    others = [p.name for p in config.opening_key_files]
    cluster.configure(node_id, {"opening_key_files": [*others, rotation.next_key_file(config).name]})
    fault.applied_at_s = published = round(now(), 2)
    await cluster.restart(node_id)
    switch_at = time.monotonic() + (switch_ms / 1000 - time.time())
    spread = await _spread(cluster, plan.version, max(switch_at, time.monotonic()) + SPREAD_TIMEOUT_S)
    spread_s = round(now() - published, 2) if spread else None
    await asyncio.sleep(max(0.0, switch_at - time.monotonic()))
    versions = _versions(cluster)
    fault.observed = {
        "manifest_version": plan.version,
        "signed_by": list(plan.signers),
        "old_key": plan.old_key_id,
        "new_key": plan.new_key_id,
        "switch_ms": plan.switch_ms,
        "spread_s": spread_s,
        "versions": versions,
    }
    if sum(v >= plan.version for v in versions.values()) < 2:
        log.error("%s: no other member took manifest %d; the key is not switched", fault.label, plan.version)
        fault.reverted_at_s = round(now(), 2)
        return
    await cluster.stop_node(node_id)
    retired = rotation.switch(config, plan)
    cluster.configure(node_id, {"opening_key_files": [*others, retired.name]})
    await cluster.restart(node_id)
    fault.observed["switched_at_s"] = fault.reverted_at_s = round(now(), 2)


def _unjudged(fault: Fault, skews: list[Fault]) -> set[str]:
    """The nodes whose own skew overlapped this one's window: two clocks each within the
    limit may still differ by more, so refusals between them say nothing about this skew."""
    start, end = fault.applied_at_s or 0.0, fault.reverted_at_s or float("inf")
    return {
        g.node
        for g in skews
        if g is not fault and (g.applied_at_s or 0.0) < end and start < (g.reverted_at_s or float("inf"))
    }


def fault_checks(faults: list[Fault], max_skew_ms: int) -> list[Check]:
    """What the skew and rotate faults promise beyond the database invariants, read from what
    the run observed: a skew within ``max_skew_ms`` costs no refusal and one beyond it is
    refused (``clock_skew``, counted from the nodes' logs); a rotated key's manifest
    reaches every member by gossip and the node comes back on the new key."""
    checks = []
    skews = [f for f in faults if f.kind == "skew"]
    if skews:
        check = Check(
            "a skew within the allowed one refuses nothing, one beyond it is refused", True, len(skews)
        )
        for f in skews:
            refused = f.observed.get("clock_skew_refusals")
            if refused is None:
                fail(check, f"{f.label}: never applied")
            elif abs(f.offset_ms) > max_skew_ms and not refused:
                fail(check, f"{f.label}: beyond the allowed {max_skew_ms} ms, yet nothing was refused")
            elif abs(f.offset_ms) <= max_skew_ms:
                others = _unjudged(f, skews)
                pairs = f.observed.get("refused", {})
                counted = sum(n for pair, n in pairs.items() if not set(pair.split("<-")) & others)
                if counted:
                    fail(check, f"{f.label}: {counted} envelopes refused within the allowed {max_skew_ms} ms")
        checks.append(check)
    rotations = [f for f in faults if f.kind == "rotate"]
    if rotations:
        check = Check("a rotated key's manifest reached every member by gossip", True, len(rotations))
        for f in rotations:
            if f.observed.get("switched_at_s") is None:
                fail(check, f"{f.label}: the node did not come back on its new key")
            elif f.observed.get("spread_s") is None:
                fail(check, f"{f.label}: members still on older versions: {f.observed.get('versions')}")
        checks.append(check)
    return checks
