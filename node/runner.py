"""Run one node in the foreground until SIGINT or SIGTERM, then stop it gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvloop

from node.app import build_node
from node.config import NodeConfig

log = logging.getLogger(__name__)


def run(config: NodeConfig) -> None:
    """Serve on uvloop: its event loop (libuv, in C) costs less per callback, socket event and
    cross-thread wake-up than asyncio's own, and a busy node makes tens of thousands of each a
    second (docs/performance.md)."""
    uvloop.run(serve(config))


async def serve(config: NodeConfig) -> None:
    node = build_node(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    # One line a supervisor (or an operator) can wait for.
    print(f"ready {node.trust.node_id} grpc={node.grpc_address} http={node.http_url}", flush=True)
    try:
        await stop.wait()
    finally:
        log.info("stopping node %s", node.trust.node_id)
        await node.stop()
