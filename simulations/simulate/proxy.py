"""A fault-injecting TCP proxy in front of every node's gRPC port.

The manifest gives each member the proxy's address, so every peer connection passes
through here. One proxy serves one destination; the source of a connection is found the
way ``ss -p`` does it, from the kernel's socket table (/proc/net/tcp) and the node
processes' open descriptors, so a link (source, destination) can be cut one way, both
ways, or slowed, without any change to the nodes.

A link fault applies to the connections its source opens to its destination, in both
byte directions (requests and their answers). Latency delays every chunk forwarded;
"loss" on a byte stream has no packet to drop, so it is modelled as what a lossy link
ends in for TCP: the connection reset at the given probability per chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

Link = tuple[str, str]
CHUNK = 65536


@dataclass
class LinkFaults:
    """The link faults now in force, shared by all proxies."""

    cut: set[Link] = field(default_factory=set)
    slow: dict[Link, tuple[float, float]] = field(default_factory=dict)  # (delay s, loss per chunk)
    rng: random.Random = field(default_factory=lambda: random.Random(0))


def _socket_inode(local_port: int, remote_port: int) -> str | None:
    """The inode of the IPv4 loopback socket bound to ``local_port`` talking to ``remote_port``."""
    want_local, want_remote = f"0100007F:{local_port:04X}", f"0100007F:{remote_port:04X}"
    try:
        with open("/proc/net/tcp", encoding="ascii") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[1] == want_local and parts[2] == want_remote:
                    return parts[9]
    except OSError:
        return None
    return None


def owner_of_socket(local_port: int, remote_port: int, pids: dict[int, str]) -> str:
    """The node whose process holds the socket, or "" when none of ``pids`` does."""
    inode = _socket_inode(local_port, remote_port)
    if inode is None:
        return ""
    target = f"socket:[{inode}]"
    for pid, node_id in pids.items():
        fd_dir = f"/proc/{pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue
        for name in names:
            with contextlib.suppress(OSError):
                if os.readlink(f"{fd_dir}/{name}") == target:
                    return node_id
    return ""


class Proxy:
    def __init__(
        self,
        destination: str,
        listen_port: int,
        target_port: int,
        faults: LinkFaults,
        pids: Callable[[], dict[int, str]],
    ) -> None:
        self.destination, self.listen_port, self.target_port = destination, listen_port, target_port
        self.faults, self._pids = faults, pids
        self._server: asyncio.Server | None = None
        self._open: dict[Link, set[asyncio.StreamWriter]] = {}
        self.bytes: dict[str, int] = {}

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.listen_port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writers in self._open.values():
            for w in writers:
                w.close()

    def sever(self, link: Link) -> None:
        """Close the connections open on ``link`` now (a cut also refuses new ones)."""
        for w in self._open.pop(link, set()):
            w.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer_port = writer.get_extra_info("peername")[1]
        source = await asyncio.to_thread(owner_of_socket, peer_port, self.listen_port, self._pids())
        link = (source, self.destination)
        if link in self.faults.cut:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()  # the node is down: the peer sees a refused connection, as without us
            return
        held = self._open.setdefault(link, set())
        held.update((writer, up_writer))
        try:
            await asyncio.gather(self._pump(reader, up_writer, link), self._pump(up_reader, writer, link))
        finally:
            held.discard(writer)
            held.discard(up_writer)
            for w in (writer, up_writer):
                w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: Link) -> None:
        """Forward one direction. Delayed chunks wait in a delay line, not in the reader,
        so latency adds to each chunk's trip without capping the link's throughput."""
        faults = self.faults
        line: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        sender = asyncio.create_task(self._send(line, writer, link))
        severed = False
        try:
            while data := await reader.read(CHUNK):
                if link in faults.cut:
                    severed = True
                    break
                due = 0.0
                slow = faults.slow.get(link)
                if slow is not None:
                    delay, loss = slow
                    if loss and faults.rng.random() < loss:
                        severed = True
                        break
                    due = asyncio.get_running_loop().time() + delay
                line.put_nowait((due, data))
        except (ConnectionError, OSError):
            severed = True
        finally:
            if severed:
                sender.cancel()
            else:
                line.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await sender
            writer.close()

    async def _send(
        self, line: asyncio.Queue[tuple[float, bytes] | None], writer: asyncio.StreamWriter, link: Link
    ) -> None:
        loop = asyncio.get_running_loop()
        while (item := await line.get()) is not None:
            due, data = item
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            writer.write(data)
            await writer.drain()
            self.bytes[link[0]] = self.bytes.get(link[0], 0) + len(data)
