"""Nodes built in this process through the real composition root, not started.

``bench store`` and ``bench http`` time one layer at a time: the nodes here have their
databases, trust, policy and cases wired as in production, but no delivery loop, so
what is measured is the layer alone and not the federation behind it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from core.clock import SystemClock
from node.app import Node, build_node
from registry.catalogue import load_catalogue_file
from simulations.local_federation import LOAD_LIMITS, PROVINCES, prepare
from simulations.traffic import open_specs

ORIGIN = "shanghai"
OWNER = "jiangsu"


def _no_wake(_hop: str) -> None:
    return None


@asynccontextmanager
async def origin_and_owner(root: Path) -> AsyncIterator[tuple[Node, Node]]:
    """Shanghai as origin (knowing Jiangsu's catalogue) and Jiangsu as owner."""
    specs = open_specs(root, PROVINCES)
    clock = SystemClock()
    laid_out = prepare(root / "nodes", specs, now_ms=clock.now_ms(), extra={"limits": LOAD_LIMITS})
    configs = {c.node_id: c for c in laid_out}
    origin = build_node(configs[ORIGIN], clock)
    owner = build_node(configs[OWNER], clock)
    spec = next(s for s in specs if s.node_id == OWNER)
    origin.index.replace_node(OWNER, load_catalogue_file(spec.catalogue)[1])
    for node in (origin, owner):
        # No delivery loop: new outbox rows stay put instead of waking a sender, and the
        # outbox has no bound (0), since nothing drains it: the default bound of 2,000 waiting
        # entries refused every submission past it, and a bench of more timed its refusals.
        node.backend.origin.wake = _no_wake
        node.backend.owner.wake = _no_wake
        node.backend.origin.max_outbox_depth = 0
    try:
        yield origin, owner
    finally:
        for node in (origin, owner):
            await node.delivery.channels.close()
            node.db.close()
