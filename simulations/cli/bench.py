"""``yrd bench``: measurements of the real code on this machine.

``yrd bench policy --rules 1000`` prints the median and p99 decision time of the policy
engine in microseconds (``--json`` for scripts and CI), against the target of a median
under 20 µs with 1,000 rules.

``route`` measures the whole federation (four node processes) against the bare gRPC
round trip of the same machine; ``crypto``, ``store`` and ``http`` time one layer each,
so a slowdown can be placed. Every benchmark prints its figures with the target each is
held to and the ratio; none fails on a miss, since this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from core.errors import InvalidInput

TARGET_MEDIAN_US = 20.0
# An open loop's rate at most: ten times the routing target. The loop schedules a task per
# slot, so a rate of millions would fill memory before the first answer.
MAX_RATE = 20_000.0


def register(subparsers: Any) -> None:
    bench = subparsers.add_parser("bench", help="benchmarks of the real code on this machine")
    sub = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCHMARK")
    policy = sub.add_parser("policy", help="policy decision time over a synthetic bundle")
    policy.add_argument(
        "--rules", type=int, default=1000, help="rules in the synthetic bundle (default 1000)"
    )
    policy.add_argument("--decisions", type=int, default=20_000, help="timed decisions (default 20000)")
    policy.add_argument("--seed", type=int, default=1, help="seed of the synthetic bundle and inputs")
    policy.add_argument("--json", action="store_true", help="print one JSON object")
    policy.set_defaults(handler=policy_command)
    register_layers(sub)


def policy_command(args: argparse.Namespace) -> int:
    from simulations.bench.policy import run

    if args.rules < 1:
        raise InvalidInput("need at least one rule", field="--rules")
    if args.decisions < 100:
        raise InvalidInput("need at least 100 decisions for a p99", field="--decisions")
    result = run(rules=args.rules, decisions=args.decisions, seed=args.seed)
    if args.json:
        print(json.dumps({**result.as_dict(), "target_median_us": TARGET_MEDIAN_US}))
        return 0
    verdict = "meets" if result.median_us < TARGET_MEDIAN_US else "MISSES"
    print(f"policy decisions: {result.decisions} over {result.rules} rules")
    print(f"median_us: {result.median_us}")
    print(f"p99_us:    {result.p99_us}")
    print(f"mean_us:   {result.mean_us}")
    print(
        f"allowed: {result.allowed_ratio:.1%}  mean candidate rules: {result.mean_candidates}  "
        f"largest index bucket: {result.largest_bucket}"
    )
    print(f"{verdict} the target median of {TARGET_MEDIAN_US:g} us")
    return 0


def _positive(name: str, value: float | None, minimum: float = 1) -> None:
    if value is not None and value < minimum:
        raise InvalidInput(f"must be at least {minimum:g}", field=name)


def _common(parser: Any, count: int) -> None:
    parser.add_argument("--count", type=int, default=count, help=f"submissions (default {count})")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def register_layers(sub: Any) -> None:
    route = sub.add_parser("route", help="routed applications per second on four node processes")
    _common(route, 2000)
    route.add_argument("--duration", type=float, help="submit for this many seconds instead of --count")
    route.add_argument(
        "--half-rate-seconds", type=float, default=10.0, help="open loop at half the rate (default 10 s)"
    )
    route.add_argument(
        "--half-rate",
        type=float,
        help="open-loop rate per second instead of half the closed loop's "
        "(to compare CPU per application at one load)",
    )
    route.add_argument("--echo-seconds", type=float, default=5.0, help="bare gRPC echo time (default 5 s)")
    route.add_argument(
        "--sweep",
        default="",
        metavar="RATES",
        help="comma-separated open-loop rates per second, each for --half-rate-seconds after the "
        "half rate: CPU per application, envelopes per call and latency at each load",
    )
    route.set_defaults(handler=route_command)
    crypto = sub.add_parser("crypto", help="sign, verify, seal and unseal per second")
    crypto.add_argument("--seconds", type=float, default=1.0, help="per operation (default 1 s)")
    crypto.add_argument("--json", action="store_true", help="print one JSON object")
    crypto.set_defaults(handler=crypto_command)
    store = sub.add_parser("store", help="origin submit and owner accept transactions per second")
    _common(store, 1000)
    store.set_defaults(handler=store_command)
    pipeline = sub.add_parser("pipeline", help="CPU per routed application in the node code, no network")
    pipeline.add_argument("--count", type=int, default=400, help="applications per repetition (default 400)")
    pipeline.add_argument("--repeats", type=int, default=3, help="repetitions after a warm-up (default 3)")
    pipeline.add_argument("--json", action="store_true", help="print one JSON object")
    pipeline.set_defaults(handler=pipeline_command)
    http = sub.add_parser("http", help="the counter's submit path alone over HTTP")
    _common(http, 1000)
    http.set_defaults(handler=http_command)


def _print(title: str, figures: dict[str, Any], as_json: bool, verdicts: list[str]) -> None:
    if as_json:
        print(json.dumps(figures, ensure_ascii=False))
        return
    print(title)
    for key, value in figures.items():
        print(f"  {key}: {value}")
    for line in verdicts:
        print(line)


def _verdict(label: str, value: float, target: float, higher_is_better: bool = True) -> str:
    ratio = value / target if higher_is_better else (target / value if value else float("inf"))
    meets = value >= target if higher_is_better else value <= target
    return f"{'meets' if meets else 'MISSES'} {label}: {value:g} against {target:g} (ratio {ratio:.3f})"


def route_command(args: argparse.Namespace) -> int:
    import asyncio

    from simulations.bench import route

    _positive("--concurrency", args.concurrency)
    _positive("--count", args.count)
    _positive("--duration", args.duration, 0.1)
    _positive("--half-rate-seconds", args.half_rate_seconds, 0.1)
    _positive("--echo-seconds", args.echo_seconds, 0.1)
    if args.half_rate is not None:
        _rate("--half-rate", args.half_rate)
    sweep = _rates(args.sweep)
    result = asyncio.run(
        route.run(
            concurrency=args.concurrency,
            count=None if args.duration else args.count,
            duration=args.duration,
            half_rate_seconds=args.half_rate_seconds,
            half_rate=args.half_rate,
            echo_seconds=args.echo_seconds,
            sweep=sweep,
        )
    )
    closed, half = result.closed_loop, result.half_rate
    _print(
        f"routed applications, {result.nodes} node processes, {result.concurrency} clients",
        result.as_dict(),
        args.json,
        [
            _verdict("routed per second", closed.rate, route.TARGET_RATE),
            _verdict("ratio to bare gRPC", result.ratio, route.TARGET_RATIO),
            _verdict("p99 ms at half rate", half.p99_ms, route.TARGET_P99_MS, higher_is_better=False),
            _verdict(
                "CPU ms per application, nodes and harness",
                closed.cpu_ms_per_app + closed.harness_cpu_ms_per_app,
                route.TARGET_CPU_MS_PER_APP,
                higher_is_better=False,
            ),
            _verdict(
                "max node RSS MB", max(result.rss_mb.values()), route.TARGET_RSS_MB, higher_is_better=False
            ),
            *(
                f"at {p.offered_rate:g}/s: {p.cpu_ms_per_app:g} ms of the nodes' CPU per application "
                f"({p.harness_cpu_ms_per_app:g} ms the harness's), "
                f"{p.switches_per_app:g} context switches per application "
                f"({p.harness_switches_per_app:g} the harness's), "
                f"{p.envelopes_per_call:g} envelopes per call, p50 {p.p50_ms:g} ms, p99 {p.p99_ms:g} ms"
                for p in result.sweep
            ),
        ],
    )
    return 0


def _rate(name: str, rate: float) -> float:
    """An open loop's rate, from 0.1 to MAX_RATE applications per second."""
    if not 0.1 <= rate <= MAX_RATE:  # also refuses nan and inf
        raise InvalidInput(f"{rate:g}: a rate must be from 0.1 to {MAX_RATE:g} per second", field=name)
    return rate


def _rates(text: str) -> list[float]:
    """``--sweep``'s comma-separated rates."""
    rates = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            rates.append(_rate("--sweep", float(part)))
        except ValueError:  # float() of what is not a number; InvalidInput is no ValueError
            raise InvalidInput(
                f"{part!r} is not a number of applications per second", field="--sweep"
            ) from None
    return rates


def crypto_command(args: argparse.Namespace) -> int:
    from simulations.bench import crypto

    _positive("--seconds", args.seconds, 0.01)
    result = crypto.run(args.seconds)
    # Per routed application: two signatures and verifications each way, one seal, one unseal.
    per_app = 1 / (
        2 / result.sign_per_s + 2 / result.verify_per_s + 1 / result.seal_per_s + 1 / result.unseal_per_s
    )
    figures = {**result.as_dict(), "crypto_bound_apps_per_s": round(per_app, 1)}
    _print("cryptography per second, one core", figures, args.json, [_verdict("crypto bound", per_app, 2000)])
    return 0


def store_command(args: argparse.Namespace) -> int:
    import asyncio

    from simulations.bench import store

    _positive("--count", args.count, 4)
    _positive("--concurrency", args.concurrency)
    result = asyncio.run(store.run(args.count, args.concurrency))
    _print(
        "store transactions per second (SQLite, real case code)",
        result.as_dict(),
        args.json,
        [
            _verdict("origin submits per second", result.origin_submit_per_s, 2000),
            _verdict("owner accepts per second", result.owner_accept_per_s, 2000),
        ],
    )
    return 0


def http_command(args: argparse.Namespace) -> int:
    import asyncio

    from simulations.bench import http

    _positive("--count", args.count)
    _positive("--concurrency", args.concurrency)
    result = asyncio.run(http.run(args.count, args.concurrency))
    _print(
        "counter submits per second over HTTP (delivery not started)",
        result.as_dict(),
        args.json,
        [
            _verdict("submits per second", result.per_s, 2000),
            f"CPU per submit {result.cpu_ms_per_submit:g} ms, against {result.bare_cpu_ms_per_request:g} ms "
            "for a bare aiohttp handler with the same client",
        ],
    )
    return 0


def pipeline_command(args: argparse.Namespace) -> int:

    import uvloop

    from simulations.bench import pipeline

    _positive("--count", args.count, pipeline.ROUND)
    _positive("--repeats", args.repeats)
    # On uvloop, as `yrd node run` serves (node/runner.py).
    result = uvloop.run(pipeline.run(args.count, args.repeats))
    # 2,000 routed per second on two cores is 1 ms of CPU per application, all nodes together.
    _print(
        "CPU per routed application in the node code (two nodes in one process, no network)",
        result.as_dict(),
        args.json,
        [_verdict("CPU ms per application", result.best_cpu_ms_per_app, 1.0, higher_is_better=False)],
    )
    return 0
