"""Run one node in the foreground until SIGINT or SIGTERM, then stop it gracefully."""

from __future__ import annotations

import asyncio
import gc
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
    freeze_start_up_heap()
    # One line a supervisor (or an operator) can wait for.
    print(f"ready {node.trust.node_id} grpc={node.grpc_address} http={node.http_url}", flush=True)
    try:
        await stop.wait()
    finally:
        log.info("stopping node %s", node.trust.node_id)
        await node.stop()


def freeze_start_up_heap() -> None:
    """Move every object alive once the node has started (modules, protobuf descriptors,
    SQLAlchemy mappers, catalogues, keys: most of a node's heap, and it lives as long as the
    process) out of the cyclic garbage collector's reach.

    A full collection traverses every tracked object, and while it runs the whole process
    stands still, event loop and database work alike: on a started node under load one cost
    about 100 ms of CPU (230-790 ms of wall time on the shared development machine) and came
    every 10-30 s, holding every application passing through the node for that long. Frozen
    objects are not traversed again, so a full collection sees only what was allocated since
    (3-5 ms of CPU; docs/performance.md, "the tail at half rate"). Garbage left by start-up is
    collected first, so none of it is frozen with the rest."""
    gc.collect()
    gc.freeze()
