"""``yrd bench http``: the counter's submit path alone, over real HTTP.

An in-process node serves its aiohttp front (bearer session check, body parsing, form
checks, outbound policy, sealing, one transaction) while its delivery is not started, so
the rate is what the counter accepts, with no federation traffic competing for the core.
The clients share that process and its event loop, so they submit through the benchmark's
lean client (submitter.py) with bodies encoded beforehand: aiohttp's client and a
``json.dumps`` per request were charged to the counter's rate.

The same client then posts the same bodies to a bare aiohttp handler that reads each body and
answers as the counter does, nothing else: what aiohttp and the client cost per request on
this machine. The counter's CPU per submit beside it places a slowdown in our code or
theirs, as ``bench route`` places the nodes beside a bare gRPC echo.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import secrets
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
from aiohttp import web

from simulations.bench.inproc import origin_and_owner
from simulations.bench.submitter import Submitter
from simulations.sample_applications import application_body
from simulations.traffic import percentile


@dataclass(frozen=True)
class HttpResult:
    submits: int
    errors: int
    concurrency: int
    per_s: float
    p50_ms: float
    p99_ms: float
    # CPU of this process per submit (the counter and the clients, which share it), and the
    # same for the bare handler with the same client, bodies and concurrency.
    cpu_ms_per_submit: float
    bare_per_s: float
    bare_cpu_ms_per_request: float
    bare_errors: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class _Driven:
    errors: int
    latencies_ms: list[float]
    seconds: float
    cpu_seconds: float


# The counter's answer to a submit is about this long; the bare handler answers as much.
_BARE_ANSWER = orjson.dumps({"id": "0" * 28, "status": "submitted", "owner_node": "jiangsu"})


async def _bare_accept(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=_BARE_ANSWER, status=201, content_type="application/json")


@asynccontextmanager
async def _served(app: web.Application) -> AsyncIterator[int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def _drive(port: int, token: str, bodies: list[bytes], count: int, concurrency: int) -> _Driven:
    """``count`` submits of ``bodies`` in turn from ``concurrency`` clients; a submit answered
    other than 201, or not answered whole, is an error."""
    submitter = Submitter("127.0.0.1", port, token, concurrency)
    issued = itertools.count()
    latencies: list[float] = []
    errors = 0

    async def client() -> None:
        nonlocal errors
        while (i := next(issued)) < count:
            t0 = time.perf_counter()
            try:
                status, _doc, _sent = await submitter.submit(bodies[i % len(bodies)], f"h{i}")
            except OSError:  # SubmitFailed: no whole answer; counted, as a refusal is
                status = 0
            if status != 201:
                errors += 1
            latencies.append((time.perf_counter() - t0) * 1000)

    try:
        cpu, start = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        submitter.close()
    latencies.sort()
    return _Driven(errors, latencies, elapsed, cpu)


async def run(count: int = 1000, concurrency: int = 32, work_dir: Path | None = None) -> HttpResult:
    with tempfile.TemporaryDirectory(prefix="yrd-bench-http-", dir=work_dir) as tmp:
        async with origin_and_owner(Path(tmp)) as (origin, _owner):
            password = secrets.token_urlsafe(16)
            await origin.users.add_user("clerk", password, "clerk")
            token, _ = await origin.users.login("clerk", password)
            rng = random.Random(5)
            services = [
                d for d in origin.index.all() if d.handler == "auto" and d.service_id.startswith("js.")
            ]
            bodies = [
                orjson.dumps(application_body(rng.choice(services), rng)) for _ in range(min(count, 500))
            ]
            async with _served(origin.http_app) as port:
                counter = await _drive(port, token, bodies, count, concurrency)
    bare_app = web.Application()
    bare_app.router.add_post("/api/v1/applications", _bare_accept)
    async with _served(bare_app) as port:
        bare = await _drive(port, "bare", bodies, count, concurrency)
    return HttpResult(
        submits=count,
        errors=counter.errors,
        concurrency=concurrency,
        per_s=round(count / counter.seconds, 1),
        p50_ms=round(percentile(counter.latencies_ms, 0.5), 1),
        p99_ms=round(percentile(counter.latencies_ms, 0.99), 1),
        cpu_ms_per_submit=round(counter.cpu_seconds * 1000 / count, 3),
        bare_per_s=round(count / bare.seconds, 1),
        bare_cpu_ms_per_request=round(bare.cpu_seconds * 1000 / count, 3),
        bare_errors=bare.errors,
    )
