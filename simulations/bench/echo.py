"""The bare grpc.aio unary round trip of this machine: the yardstick ``bench route`` divides by.

The server runs in its own process (``python -m simulations.bench.echo PORT``), as a
node would, so the client's event loop and the server's do not share a core by
construction. The method takes and returns raw bytes: no protobuf, no work, only gRPC.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import grpc

METHOD = "/yrd.bench.Echo/Echo"
PAYLOAD = b"x" * 256


async def _echo(request: bytes, _context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def serve(port: int) -> None:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "yrd.bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


def start_server(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "simulations.bench.echo", str(port)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != b"ready":
        process.kill()
        raise RuntimeError("the echo server did not start")
    return process


async def round_trips(port: int, concurrency: int, seconds: float) -> float:
    """Unary calls per second with ``concurrency`` calls in flight on one channel."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(METHOD)
        await channel.channel_ready()
        for _ in range(50):
            await call(PAYLOAD)
        done = 0
        stop_at = time.monotonic() + seconds

        async def client() -> None:
            nonlocal done
            while time.monotonic() < stop_at:
                await call(PAYLOAD)
                done += 1

        start = time.monotonic()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return done / (time.monotonic() - start)


async def measure(concurrency: int, seconds: float, port: int) -> float:
    process = start_server(port)
    try:
        return await round_trips(port, concurrency, seconds)
    finally:
        process.terminate()
        process.wait()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
