"""The benchmark's HTTP client for submits: kept connections, request bytes made per origin, and
responses parsed by llhttp (httptools, the parser uvicorn serves with).

The harness shares the machine's two cores with the four nodes it measures, so each
microsecond it spends per request is taken from them. aiohttp's client builds a request, a
response, a timer and a connector look-up per call, and the benchmark added a trace hook for
the send time: 126-130 µs of CPU per request beside a bare server, against 32-62 µs here
(docs/performance.md, "Twelfth round"). What the benchmark needs is narrow: a POST with a JSON
body on a kept connection to a counter, and the status and JSON document of its answer.
Everything else (catalogue checks, metrics) still goes through aiohttp.

Each submit is stamped when its bytes are handed to the socket, which is what the latency
counts from (route.py). A connection whose answer does not come back whole is closed, never
reused: the next submit to that origin opens a new one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import httptools
import orjson

# The longest a submit waits for its answer before it counts as an error (as aiohttp's total
# timeout did for the benchmark).
ANSWER_TIMEOUT_S = 60.0


class SubmitFailed(ConnectionError):
    """The exchange did not complete: the connection closed, timed out or answered what is
    not HTTP. Its message says which."""


class _Connection(asyncio.Protocol):
    """One kept connection, one exchange at a time."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._body: list[bytes] = []
        self.reusable = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport: uvloop's, which the nodes run on, is not an asyncio.Transport
        # subclass, though it has the same methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(SubmitFailed(f"the counter answered what is not HTTP: {e}"))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        body, self._body = b"".join(self._body), []
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():  # an answer nobody asked for
            self._fail(SubmitFailed("an HTTP answer came with no request waiting"))
            return
        waiter.set_result((self._parser.get_status_code(), body))
        if not self._parser.should_keep_alive():
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(SubmitFailed(f"the counter closed the connection ({exc or 'at its end'})"))

    def _fail(self, error: SubmitFailed) -> None:
        self.reusable = False
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        if self._transport is not None:
            self._transport.close()

    async def exchange(self, request: bytes) -> tuple[int, bytes, float]:
        """Send ``request`` and wait for its answer: (status, body, when it was handed to the socket)."""
        if self._transport is None or not self.reusable:
            raise SubmitFailed("the connection is closed")
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        sent = time.monotonic()
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                status, body = await waiter
        except TimeoutError:
            error = SubmitFailed(f"no answer within {ANSWER_TIMEOUT_S:.0f} s")
            self._fail(error)
            raise error from None
        except asyncio.CancelledError:
            self.close()  # its answer may still come: the connection is not used again
            raise
        return status, body, sent

    def close(self) -> None:
        self.reusable = False
        if self._transport is not None:
            self._transport.close()


class Submitter:
    """Submits applications to one counter over at most ``connections`` kept connections."""

    def __init__(self, host: str, port: int, token: str, connections: int) -> None:
        self._host, self._port = host, port
        self._head = (
            f"POST /api/v1/applications HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        ).encode("ascii")
        self._gate = asyncio.Semaphore(connections)
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()

    @classmethod
    def for_url(cls, url: str, token: str, connections: int) -> Submitter:
        """For a counter at ``http://host:port`` (the cluster's ``http_url``; the benchmark's
        counters serve plain HTTP on 127.0.0.1)."""
        if not url.startswith("http://"):
            raise ValueError(f"the benchmark's submitter speaks plain HTTP only, not {url}")
        host, _, port = url.removeprefix("http://").rpartition(":")
        return cls(host, int(port), token, connections)

    async def submit(self, body: bytes, key: str) -> tuple[int, dict[str, Any], float]:
        """POST ``body`` (JSON) with Idempotency-Key ``key``: the status, the answer's JSON
        object ({} when it is none) and when the request was handed to the socket.
        SubmitFailed or OSError when there was no whole answer."""
        request = b"%sIdempotency-Key: %s\r\nContent-Length: %d\r\n\r\n%s" % (
            self._head,
            key.encode("ascii"),
            len(body),
            body,
        )
        async with self._gate:
            conn = self._take_idle() or await self._connect()
            try:
                status, raw, sent = await conn.exchange(request)
            finally:
                if conn.reusable:
                    self._idle.append(conn)
                else:
                    self._open.discard(conn)
        try:
            doc = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            doc = {}
        return status, doc if isinstance(doc, dict) else {}, sent

    def _take_idle(self) -> _Connection | None:
        """A kept connection still open; those the counter closed while they idled (its
        keep-alive timeout, a restart) are dropped here rather than fail a submit never sent."""
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable:
                return conn
            self._open.discard(conn)
        return None

    async def _connect(self) -> _Connection:
        _transport, conn = await asyncio.get_running_loop().create_connection(
            _Connection, self._host, self._port
        )
        self._open.add(conn)
        return conn

    def close(self) -> None:
        for conn in self._open:
            conn.close()
        self._open.clear()
        self._idle.clear()
