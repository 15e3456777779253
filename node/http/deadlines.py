"""A deadline for a connection's request headers, which aiohttp bounds in size but not in time.

A client that opens connections and sends its headers a byte at a time (slowloris) would hold
them open for as long as it likes. This protocol sits between asyncio and aiohttp's own request
handler and closes the connection when the first request's headers have not ended (a blank
line) within ``timeout_s``. Between requests on a kept-alive connection aiohttp's keep-alive
timeout closes an idle connection; a body that trickles is cut off by node/http/limits.py.
"""

from __future__ import annotations

import asyncio
import logging

from node import metrics

log = logging.getLogger(__name__)

_END_OF_HEADERS = b"\r\n\r\n"


class HeaderDeadline(asyncio.Protocol):
    def __init__(self, inner: asyncio.Protocol, timeout_s: float) -> None:
        self._inner, self._timeout_s = inner, timeout_s
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""  # the last bytes seen, so a terminator split across reads is found

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._timer = asyncio.get_running_loop().call_later(self._timeout_s, self._expired)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            seen = self._tail + data
            if _END_OF_HEADERS in seen:
                self._timer.cancel()
                self._timer = None
            self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def _expired(self) -> None:
        self._timer = None
        metrics.HTTP_SLOW_CLIENTS.inc()
        log.info("closed a connection whose request headers took over %.0f s", self._timeout_s)
        if self._transport is not None:
            self._transport.close()
