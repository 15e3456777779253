"""``yrd demo``: what ``make demo`` runs. It needs no input and opens nothing, so it also
serves scripts and tests: ``--state-file`` tells them where every counter is."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from simulations.demo import DEFAULT_BASE_PORT, DEFAULT_DATA_DIR


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="run the four provincial nodes locally under a supervisor",
        description="Start Shanghai, Jiangsu, Zhejiang and Anhui on 127.0.0.1, each as its own process, "
        "restarted if it dies; print their counter URLs and clerk accounts; stop on Ctrl-C or SIGTERM.",
    )
    demo.add_argument(
        "--base-port",
        type=int,
        default=DEFAULT_BASE_PORT,
        metavar="N",
        help="gRPC on N..N+3, HTTP counters on N+100..N+103 (default %(default)s)",
    )
    demo.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        metavar="DIR",
        help="keys, databases, logs and passwords; kept between runs (default %(default)s)",
    )
    demo.add_argument(
        "--state-file", type=Path, metavar="FILE", help="write JSON describing the running federation here"
    )
    demo.add_argument(
        "--no-sample", dest="sample", action="store_false", help="do not submit the sample application"
    )
    demo.set_defaults(handler=demo_command)


def demo_command(args: argparse.Namespace) -> int:
    # Imported here: `yrd node run` builds this parser too and need not load the demo.
    from simulations.demo.run import DemoOptions, run_demo

    options = DemoOptions(
        base_port=args.base_port, data_dir=args.data_dir, state_file=args.state_file, sample=args.sample
    )
    return asyncio.run(run_demo(options))
