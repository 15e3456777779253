"""The benchmark's lean submit client: what it sends, what it reads back, when it stamps a
submit, and that a counter's bad or missing answer is an error for that submit, never a hang
or a connection used again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import uvloop
from aiohttp import web

from simulations.bench.submitter import SubmitFailed, Submitter
from tests.support.web_server import served

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1 that answers whatever ``handler`` writes; yields its port."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


async def test_a_submit_sends_the_counters_request_and_reads_its_json_answer_on_one_kept_connection() -> None:
    seen: list[tuple[str | None, str | None, str | None, bytes]] = []
    peers: set[object] = set()

    async def answer(request: web.Request) -> web.Response:
        seen.append(
            (
                request.headers.get("Authorization"),
                request.headers.get("Idempotency-Key"),
                request.content_type,
                await request.read(),
            )
        )
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        return web.json_response({"id": f"app-{len(seen)}"}, status=201)

    app = web.Application()
    app.router.add_post("/api/v1/applications", answer)
    async with served(app) as base:
        submitter = Submitter.for_url(base, "tok", connections=4)
        try:
            before = time.monotonic()
            status, doc, sent = await submitter.submit(b'{"a": 1}', "k1")
            after = time.monotonic()
            second = await submitter.submit('{"名": 2}'.encode(), "k2")
        finally:
            submitter.close()

    assert (status, doc) == (201, {"id": "app-1"})
    assert before <= sent <= after  # stamped when handed to the socket, not when answered
    assert second[:2] == (201, {"id": "app-2"})
    assert seen == [
        ("Bearer tok", "k1", "application/json", b'{"a": 1}'),
        ("Bearer tok", "k2", "application/json", '{"名": 2}'.encode()),
    ]
    assert len(peers) == 1  # the second submit reused the first one's connection


def test_submits_go_through_on_uvloop_whose_transports_are_not_asyncio_transports() -> None:
    """The nodes run on uvloop, and a tool built on this client may too: a connection made on
    it failed before its first byte was sent."""

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"id": (await request.json())["n"]}, status=201)

    async def scenario() -> list[tuple[int, dict[str, object]]]:
        app = web.Application()
        app.router.add_post("/api/v1/applications", answer)
        async with served(app) as base:
            submitter = Submitter.for_url(base, "tok", connections=2)
            try:
                answers = await asyncio.gather(
                    *(submitter.submit(b'{"n": %d}' % i, f"k{i}") for i in range(4))
                )
            finally:
                submitter.close()
        return [(status, doc) for status, doc, _sent in answers]

    assert uvloop.run(scenario()) == [(201, {"id": i}) for i in range(4)]


async def test_an_answer_that_is_not_a_json_object_reads_as_an_empty_document() -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=502, text="<html>bad gateway</html>")

    app = web.Application()
    app.router.add_post("/api/v1/applications", answer)
    async with served(app) as base:
        submitter = Submitter.for_url(base, "tok", connections=1)
        try:
            status, doc, _sent = await submitter.submit(b"{}", "k")
        finally:
            submitter.close()
    assert (status, doc) == (502, {})


async def test_a_counter_that_closes_after_answering_gets_a_new_connection_for_the_next_submit() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await _read_request(reader)
        body = b'{"id": "x"}'
        head = b"HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
        writer.write(head + body)
        await writer.drain()
        writer.close()

    async with raw_server(handler) as port:
        submitter = Submitter("127.0.0.1", port, "tok", connections=1)
        try:
            results = [await submitter.submit(b"{}", f"k{i}") for i in range(3)]
        finally:
            submitter.close()
    assert [r[:2] for r in results] == [(201, {"id": "x"})] * 3
    assert connections == 3


@pytest.mark.parametrize(
    "reply",
    [
        b"",  # closed with no answer
        b"SMTP ready\r\n\r\n",  # not HTTP
        b'HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\n{"id"',  # cut short, then closed
    ],
    ids=["closed", "not-http", "cut-short"],
)
async def test_a_counter_that_does_not_answer_whole_fails_that_submit_and_its_connection_is_not_reused(
    reply: bytes,
) -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await _read_request(reader)
        if connections == 1:
            writer.write(reply)
        else:
            writer.write(b'HTTP/1.1 201 Created\r\nContent-Length: 11\r\n\r\n{"id": "y"}')
        await writer.drain()
        if connections == 1:
            writer.close()
        else:
            await reader.read()  # keep it open until the client closes

    async with raw_server(handler) as port:
        submitter = Submitter("127.0.0.1", port, "tok", connections=1)
        try:
            with pytest.raises(SubmitFailed):
                await asyncio.wait_for(submitter.submit(b"{}", "k1"), timeout=10)
            after = await asyncio.wait_for(submitter.submit(b"{}", "k2"), timeout=10)
        finally:
            submitter.close()
    assert after[:2] == (201, {"id": "y"})
    assert connections == 2


async def test_a_kept_connection_the_counter_closed_while_idle_is_dropped_not_failed() -> None:
    connections = 0
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await _read_request(reader)
        writer.write(b'HTTP/1.1 201 Created\r\nContent-Length: 11\r\n\r\n{"id": "z"}')
        await writer.drain()
        writer.close()  # as a keep-alive timeout would, with no Connection: close said
        closed.set()

    async with raw_server(handler) as port:
        submitter = Submitter("127.0.0.1", port, "tok", connections=1)
        try:
            first = await submitter.submit(b"{}", "k1")
            await closed.wait()
            for _ in range(1000):  # until the close reaches the kept connection (at most 10 s)
                if not submitter._idle[0].reusable:
                    break
                await asyncio.sleep(0.01)
            second = await asyncio.wait_for(submitter.submit(b"{}", "k2"), timeout=10)
        finally:
            submitter.close()
    assert first[:2] == second[:2] == (201, {"id": "z"})
    assert connections == 2
