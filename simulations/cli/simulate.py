"""``yrd simulate``: the federation of real node processes under load and faults.

Exit status 0 when every invariant holds, 1 when one is broken (the report says which),
2 for bad arguments. The report folder holds report.json, the plots and report.html.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from core.errors import InvalidInput


def register(subparsers: Any) -> None:
    sim = subparsers.add_parser(
        "simulate",
        help="run a federation of real nodes under load and faults, check invariants, write a report",
        description="Start the nodes as separate processes on 127.0.0.1, submit applications, bundles "
        "and data queries at every counter for matters owned and data held elsewhere, inject faults, "
        "then check from the databases that nothing was lost or duplicated, every disclosure is logged "
        "at both ends and every audit chain verifies.",
    )
    sim.add_argument(
        "--topology",
        default="provinces",
        help="provinces (4 nodes, default), delta (the provinces and their prefecture-level cities) "
        "or the path of a topology TOML file",
    )
    sim.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    sim.add_argument(
        "--rate", type=float, help="submissions per second, whole federation (default 20; 4 for delta)"
    )
    sim.add_argument(
        "--mix",
        default="auto=3,worklist=1",
        help="kinds and weights (default auto=3,worklist=1): auto (a matter its owner decides on "
        "receipt), worklist (one the simulation approves as the owner's clerk), bundle (a 一件事 "
        "bundle led by another node, its worklist parts approved the same way), query (a consented "
        "health-code screen of a person the holders have records of)",
    )
    sim.add_argument(
        "--decide-delay",
        type=float,
        default=1.0,
        help="seconds a worklist matter waits before its owner approves it (default 1)",
    )
    sim.add_argument(
        "--surge",
        help="FACTOR@START+SECONDS: that many times the rate from START seconds into the load, for "
        "SECONDS (e.g. 10@20+15, Monday morning's ten times the usual load)",
    )
    sim.add_argument("--faults", default="", help="comma-separated: kill,pause,partition,latency,skew,rotate")
    sim.add_argument("--schedule", type=Path, help="a TOML file of [[faults]] instead of random ones")
    sim.add_argument("--seed", type=int, default=1, help="seed of the load and the random faults")
    sim.add_argument("--out", type=Path, help="report folder (default ./simulation-<time>)")
    sim.add_argument(
        "--work-dir", type=Path, help="keep the nodes' directories here (default: a temp folder)"
    )
    sim.add_argument(
        "--drain-timeout", type=float, default=90.0, help="seconds to wait for the federation to settle"
    )
    sim.add_argument("--no-progress", action="store_true", help="no progress bar")
    sim.set_defaults(handler=simulate_command)


def simulate_command(args: argparse.Namespace) -> int:
    from simulations.simulate.load import parse_surge
    from simulations.simulate.run import Options, simulate

    for name, value, minimum in (
        ("--duration", args.duration, 1.0),
        ("--rate", args.rate, 0.1),
        ("--decide-delay", args.decide_delay, 0.0),
        ("--drain-timeout", args.drain_timeout, 1.0),
    ):
        if value is not None and value < minimum:
            raise InvalidInput(f"must be at least {minimum:g}", field=name)
    surge = parse_surge(args.surge, args.duration) if args.surge is not None else None
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
    options = Options(
        topology=args.topology,
        duration_s=args.duration,
        rate=args.rate,
        mix=args.mix,
        decide_delay_s=args.decide_delay,
        faults=args.faults,
        schedule=args.schedule,
        seed=args.seed,
        out=args.out or Path(f"simulation-{time.strftime('%Y%m%d-%H%M%S')}"),
        work_dir=args.work_dir.resolve() if args.work_dir else None,
        drain_timeout_s=args.drain_timeout,
        progress=not args.no_progress,
        surge=surge,
    )
    ok, out = asyncio.run(simulate(options))
    print(f"report: {out / 'report.html'}")
    return 0 if ok else 1
