"""``yrd bench``: measurements of the real code on this machine.

``yrd bench policy --rules 1000`` prints the median and p99 decision time of the policy
engine in microseconds (``--json`` for scripts and CI), against the target of a median
under 20 µs with 1,000 rules.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from core.errors import InvalidInput

TARGET_MEDIAN_US = 20.0


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
