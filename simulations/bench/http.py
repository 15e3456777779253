"""``yrd bench http``: the counter's submit path alone, over real HTTP.

An in-process node serves its aiohttp front (bearer session check, body parsing, form
checks, outbound policy, sealing, one transaction) while its delivery is not started, so
the rate is what the counter accepts, with no federation traffic competing for the core.
The clients share that process and its event loop, so they submit through the benchmark's
lean client (submitter.py) with bodies encoded beforehand: aiohttp's client and a
``json.dumps`` per request were charged to the counter's rate.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import secrets
import tempfile
import time
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

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


async def run(count: int = 1000, concurrency: int = 32, work_dir: Path | None = None) -> HttpResult:
    with tempfile.TemporaryDirectory(prefix="yrd-bench-http-", dir=work_dir) as tmp:
        async with origin_and_owner(Path(tmp)) as (origin, _owner):
            password = secrets.token_urlsafe(16)
            await origin.users.add_user("clerk", password, "clerk")
            token, _ = await origin.users.login("clerk", password)
            runner = web.AppRunner(origin.http_app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            rng = random.Random(5)
            services = [
                d for d in origin.index.all() if d.handler == "auto" and d.service_id.startswith("js.")
            ]
            bodies = [
                orjson.dumps(application_body(rng.choice(services), rng)) for _ in range(min(count, 500))
            ]
            submitter = Submitter("127.0.0.1", port, token, concurrency)
            issued = itertools.count()
            latencies: list[float] = []
            errors = 0
            try:

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

                start = time.perf_counter()
                await asyncio.gather(*(client() for _ in range(concurrency)))
                elapsed = time.perf_counter() - start
            finally:
                submitter.close()
                await runner.cleanup()
    latencies.sort()
    return HttpResult(
        submits=count,
        errors=errors,
        concurrency=concurrency,
        per_s=round(count / elapsed, 1),
        p50_ms=round(percentile(latencies, 0.5), 1),
        p99_ms=round(percentile(latencies, 0.99), 1),
    )
