"""Every benchmark still runs end to end (tiny counts; figures are not judged here: the
machine is shared and noisy, so a threshold would only test the neighbours)."""

from __future__ import annotations

import json
import os
import random
import threading
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web

from node.cases.requests import Principal
from node.cli.main import main
from node.config import LimitsConfig
from node.counter.contract import CounterLimits, parse_submit, request_digest
from node.delivery.outbox import enqueue
from node.delivery.relaying import DELIVER
from simulations.bench import crypto, http, pipeline, route, store
from simulations.bench.inproc import OWNER, origin_and_owner
from simulations.local_federation import free_port
from simulations.sample_applications import application_body
from tests.support.web_server import served


def test_bench_crypto_measures_all_four_operations() -> None:
    result = crypto.run(seconds=0.02)
    assert min(result.sign_per_s, result.verify_per_s, result.seal_per_s, result.unseal_per_s) > 0


async def test_bench_store_runs_the_real_transactions(tmp_path: Path) -> None:
    result = await store.run(count=12, concurrency=3, work_dir=tmp_path)
    assert result.submits == 12
    assert (
        result.origin_submit_per_s > 0
        and result.owner_accept_per_s > 0
        and result.owner_accept_batched_per_s > 0
    )


async def test_bench_http_submits_through_the_counter(tmp_path: Path) -> None:
    result = await http.run(count=12, concurrency=3, work_dir=tmp_path)
    assert result.errors == 0 and result.per_s > 0 and result.cpu_ms_per_submit > 0
    # Beside it, the same client against a bare handler: what aiohttp itself costs.
    assert result.bare_errors == 0 and result.bare_per_s > 0 and result.bare_cpu_ms_per_request > 0


async def test_the_layer_benches_nodes_take_submissions_past_the_outbox_bound(tmp_path: Path) -> None:
    """Nothing drains their outbox, so the production bound (2,000 waiting entries) would have
    refused every submission past it: a bench of 3,000 timed 1,000 refusals as submissions."""
    async with origin_and_owner(tmp_path) as (origin, _owner):
        waiting = LimitsConfig().max_outbox_depth
        origin.db.transact(
            lambda s: [
                enqueue(s, next_hop=OWNER, destination=OWNER, method=DELIVER, item_id=i, body=b"x", now_ms=1)
                for i in map(str, range(waiting))
            ]
        )
        services = [d for d in origin.index.all() if d.handler == "auto" and d.service_id.startswith("js.")]
        body = application_body(services[0], random.Random(1))
        req = parse_submit(body, CounterLimits(), request_digest(body))
        stored = await origin.backend.origin.submit(Principal("clerk", "clerk"), "past-the-bound", req)
        assert stored["owner_node"] == OWNER


async def test_bench_pipeline_carries_every_application_to_completed(tmp_path: Path) -> None:
    """The run itself refuses a repetition in which not every application completed."""
    result = await pipeline.run(count=pipeline.ROUND, repeats=1, work_dir=tmp_path)
    assert result.applications == pipeline.ROUND
    assert len(result.cpu_ms_per_app) == 1 and result.best_cpu_ms_per_app > 0


def test_bench_cli_refuses_a_bad_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "http", "--count", "0"]) == 2
    assert "--count" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--sweep", "60,fast"], "--sweep"),
        (["--sweep", "0"], "--sweep"),
        (["--sweep", "nan"], "--sweep"),
        (["--sweep", "inf"], "--sweep"),
        (["--sweep", "1e9"], "--sweep"),
        (["--half-rate", "1e9"], "--half-rate"),
    ],
)
def test_bench_route_refuses_a_rate_it_cannot_offer(
    argv: list[str], field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused before any node starts: an open loop schedules a task per slot, so a rate of
    millions would fill memory, and nan or inf none at all."""
    assert main(["bench", "route", *argv]) == 2
    assert field in capsys.readouterr().err


def test_bench_crypto_cli_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "crypto", "--seconds", "0.02", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["crypto_bound_apps_per_s"] > 0


@pytest.mark.slow
async def test_bench_route_routes_through_four_node_processes(tmp_path: Path) -> None:
    result = await route.run(
        concurrency=4,
        count=24,
        half_rate_seconds=1.0,
        echo_seconds=0.3,
        warmup=4,
        sweep=[8.0],
        work_dir=tmp_path,
    )
    closed = result.closed_loop
    assert closed.submitted + closed.errors == 24 and closed.submitted > 0
    assert closed.completed == closed.submitted  # every accepted one reached `completed`
    assert closed.p50_ms <= closed.p99_ms
    # Where the open loop's applications spent their time, stage by stage (stages.py).
    assert set(result.half_rate.stages) >= {"counter", "to_owner", "owner_to_origin", "at_origin"}
    # Every phase says how full the nodes' calls were, read from their metrics.
    (swept,) = result.sweep
    assert swept.offered_rate == 8.0 and swept.completed == swept.submitted > 0
    for phase in (closed, result.half_rate, swept):
        assert phase.envelopes_per_call >= 1
        # What the phase cost, the nodes' CPU and context switches and the harness's apart.
        assert phase.cpu_ms_per_app > 0 and phase.harness_cpu_ms_per_app > 0
        assert phase.switches_per_app > 0 and phase.harness_switches_per_app > 0
    assert result.grpc_echo_rate > 0 and result.ratio > 0
    assert set(result.rss_mb) == {"shanghai", "jiangsu", "zhejiang", "anhui"}
    assert all(v > 0 for v in result.rss_mb.values())


async def test_envelopes_per_call_count_only_the_nodes_whose_metrics_read() -> None:
    """A node down, or one whose /metrics does not parse, counts nothing; the others' batch
    histogram gives the calls and the envelopes they carried."""
    exposition = (
        "# HELP yrd_delivery_batch_size_envelopes Envelopes per outbound call\n"
        "# TYPE yrd_delivery_batch_size_envelopes histogram\n"
        'yrd_delivery_batch_size_envelopes_bucket{le="1.0"} 3.0\n'
        'yrd_delivery_batch_size_envelopes_bucket{le="+Inf"} 4.0\n'
        "yrd_delivery_batch_size_envelopes_count 4.0\n"
        "yrd_delivery_batch_size_envelopes_sum 9.0\n"
    )
    garbled = 'yrd_delivery_batch_size_envelopes_count{le="1" 4\n'

    async def good(_request: web.Request) -> web.Response:
        return web.Response(text=exposition)

    async def bad(_request: web.Request) -> web.Response:
        return web.Response(text=garbled)

    app = web.Application()
    app.router.add_get("/good/metrics", good)
    app.router.add_get("/garbled/metrics", bad)
    async with served(app) as base, aiohttp.ClientSession() as session:
        nodes = {
            "good": SimpleNamespace(http_url=f"{base}/good"),
            "garbled": SimpleNamespace(http_url=f"{base}/garbled"),
            "down": SimpleNamespace(http_url=f"http://127.0.0.1:{free_port()}"),
        }
        cluster = SimpleNamespace(nodes=nodes)
        assert await route.calls_and_envelopes(cluster, session) == (4.0, 9.0)  # type: ignore[arg-type]


def test_context_switches_count_every_thread_of_a_process() -> None:
    """A thread that waits switches out each time: its process's count grows by its switches,
    not only by the main thread's (which /proc/PID/status alone would give)."""
    woken, done, release = threading.Event(), threading.Event(), threading.Event()

    def wait_in_turns() -> None:
        for _ in range(50):
            woken.wait(0.001)
        done.set()
        release.wait(10)  # alive when counted: an ended thread's switches leave with it

    before = route.context_switches(os.getpid())
    worker = threading.Thread(target=wait_in_turns)
    worker.start()
    done.wait(10)
    after = route.context_switches(os.getpid())
    release.set()
    worker.join()
    assert after - before >= 50
    assert route.context_switches(2**22 + 1) == 0  # no such process: nothing, not an error
