"""``yrd demo`` end to end: lay out, start, show, supervise, stop.

SIGINT and SIGTERM handlers are installed before the first node starts, so a stop that
arrives while nodes are still starting (or while the sample is travelling) still ends
with every node stopped and exit status 0, never with orphaned node processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from core.clock import Clock, SystemClock
from core.errors import YrdError
from simulations.demo import DEFAULT_BASE_PORT, DEFAULT_DATA_DIR
from simulations.demo.health_screen import SCREEN_ASKER, show_health_screen
from simulations.demo.layout import DemoNode, lay_out, write_json_private
from simulations.demo.sample import (
    CLUE_HANDLER,
    CLUE_SOURCE,
    SAMPLE_ORIGIN,
    SAMPLE_OWNER,
    show_sample_clue,
    show_sample_journey,
)
from simulations.demo.supervisor import Supervisor
from simulations.local_federation import PROVINCES, NodeSpec

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class DemoOptions:
    base_port: int = DEFAULT_BASE_PORT
    data_dir: Path = DEFAULT_DATA_DIR
    state_file: Path | None = None
    sample: bool = True
    specs: Sequence[NodeSpec] = field(default=PROVINCES)


def state_document(nodes: Sequence[DemoNode], pids: dict[str, int | None], data_dir: Path) -> dict[str, Any]:
    """What ``--state-file`` holds: enough for a script or a test to use every counter."""
    return {
        "supervisor_pid": os.getpid(),
        "data_dir": str(data_dir.resolve()),
        "nodes": [
            {
                "id": n.spec.node_id,
                "name": n.spec.name,
                "jurisdiction": n.spec.jurisdiction,
                "grpc": n.config.grpc_listen,
                "http": n.http_url,
                "pid": pids[n.spec.node_id],
                "username": n.accounts.clerk.username,
                "password": n.accounts.clerk.password,
                "operator_username": n.accounts.operator.username,
                "operator_password": n.accounts.operator.password,
                "accounts": {
                    role: {"username": c.username, "password": c.password} for role, c in n.accounts.by_role()
                },
                "department": n.accounts.department,
                "log": str(n.log_path),
            }
            for n in nodes
        ],
    }


def format_table(nodes: Sequence[DemoNode]) -> str:
    # The display name (with Chinese characters of double width) goes last so columns stay aligned.
    rows = [("NODE", "CODE", "COUNTER URL", "USERNAME", "PASSWORD", "NAME")]
    rows += [
        (
            n.spec.node_id,
            n.spec.jurisdiction,
            n.http_url,
            n.accounts.clerk.username,
            n.accounts.clerk.password,
            n.spec.name,
        )
        for n in nodes
    ]
    return _columns(rows)


def format_accounts(nodes: Sequence[DemoNode]) -> str:
    """Every node's accounts, one per role, so each step of the journey has its login."""
    rows = [("NODE", "ROLE", "USERNAME", "PASSWORD", "DEPARTMENT")]
    for n in nodes:
        for role, cred in n.accounts.by_role():
            department = n.accounts.department if role == "owner_clerk" else ""
            rows.append((n.spec.node_id, role, cred.username, cred.password, department))
    return _columns(rows)


def _columns(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        ("  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]).rstrip()
        for r in rows
    )


async def _unless_stopped(work: Awaitable[T], stop: asyncio.Event) -> tuple[bool, T | None]:
    """Run ``work`` unless a stop signal comes first; then cancel it. ``(finished, result)``."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if not task.done() or task.cancelled():
        return False, None
    return True, task.result()


def _print(line: str) -> None:
    # Flushed: the demo's output is often piped (make, tee, a test) and must show at once.
    print(line, flush=True)


async def run_demo(
    options: DemoOptions, *, clock: Clock | None = None, out: Callable[[str], None] = _print
) -> int:
    clock = clock or SystemClock()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await _run(options, clock, stop, out)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _run(options: DemoOptions, clock: Clock, stop: asyncio.Event, out: Callable[[str], None]) -> int:
    nodes = await lay_out(options.data_dir, options.base_port, options.specs, clock)
    by_id = {n.spec.node_id: n for n in nodes}

    def write_state() -> None:
        if options.state_file is not None:
            write_json_private(options.state_file, state_document(nodes, supervisor.pids(), options.data_dir))

    supervisor = Supervisor(nodes, clock, write_state)
    try:
        out(f"yrd demo: starting {len(nodes)} nodes on 127.0.0.1 (data and logs in {options.data_dir}/)")
        started, _ = await _unless_stopped(supervisor.start_all(), stop)
        if not started:
            return 0
        supervisor.watch()
        out(format_table(nodes))
        out("\nAccounts (a clerk submits, the owner clerk decides, a supervisor releases held ones):")
        out(format_accounts(nodes))
        out(
            f"Every password is kept in {options.data_dir / 'credentials.json'}. Ctrl-C stops the federation."
        )
        if options.sample and SAMPLE_ORIGIN in by_id and SAMPLE_OWNER in by_id:
            await _show_sample(by_id[SAMPLE_ORIGIN], by_id[SAMPLE_OWNER], clock, stop, out)
        if options.sample and CLUE_SOURCE in by_id and CLUE_HANDLER in by_id:
            await _show_sample_clue(by_id[CLUE_SOURCE], by_id[CLUE_HANDLER], clock, stop, out)
        if options.sample and SCREEN_ASKER in by_id:
            await _show_health_screen(by_id[SCREEN_ASKER], clock, stop, out)
        await stop.wait()
        out("yrd demo: stopping")
        return 0
    finally:
        await supervisor.stop_all()
        if options.state_file is not None:
            options.state_file.unlink(missing_ok=True)


async def _show_sample(
    origin: DemoNode, owner: DemoNode, clock: Clock, stop: asyncio.Event, out: Callable[[str], None]
) -> None:
    """A sample that fails is reported, not fatal: the federation itself is still up."""
    try:
        await _unless_stopped(show_sample_journey(origin, owner, clock, out), stop)
    except (YrdError, aiohttp.ClientError, TimeoutError, ValueError) as e:
        log.warning("the sample application did not complete: %s", e)


async def _show_health_screen(
    asker: DemoNode, clock: Clock, stop: asyncio.Event, out: Callable[[str], None]
) -> None:
    """As the sample application: a screen that fails is reported, not fatal."""
    try:
        await _unless_stopped(show_health_screen(asker, clock, out), stop)
    except (YrdError, aiohttp.ClientError, TimeoutError, ValueError) as e:
        log.warning("the health-code screen did not complete: %s", e)


async def _show_sample_clue(
    source: DemoNode, handler: DemoNode, clock: Clock, stop: asyncio.Event, out: Callable[[str], None]
) -> None:
    """As the sample application: a clue that fails is reported, not fatal."""
    try:
        await _unless_stopped(show_sample_clue(source, handler, clock, out), stop)
    except (YrdError, aiohttp.ClientError, TimeoutError, ValueError) as e:
        log.warning("the sample clue did not complete: %s", e)
