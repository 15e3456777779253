"""Starting ``yrd node run`` processes and knowing when they are ready, shared by the
demo's supervisor and the cluster of the benchmarks and simulations.

Each node runs in its own session, so a Ctrl-C at the terminal reaches only the harness,
which then stops the nodes in order. Its output goes to a log file (0600: the log names
accounts and peers). Readiness is the node's own ``ready <id> ...`` line, read from the
offset where this start began, so a line left by an earlier life of the same node is never
taken for this one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from core.clock import Clock
from core.errors import Unavailable

POLL_S = 0.05


def node_command(config_path: Path) -> list[str]:
    """The command line of one node, with this interpreter (so the harness's venv)."""
    return [sys.executable, "-m", "node.cli.main", "node", "run", "--config", str(config_path)]


def open_log(path: Path) -> BinaryIO:
    """The node's log, opened for appending with mode 0600; ``tell()`` is where this start begins."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    log_file = os.fdopen(fd, "ab")
    log_file.seek(0, os.SEEK_END)
    return log_file


async def wait_ready(
    node_id: str,
    log_path: Path,
    offset: int,
    *,
    running: Callable[[], bool],
    timeout_s: float,
    clock: Clock,
) -> None:
    """Until the node logs ``ready <node_id>`` after ``offset``; ``Unavailable`` when it
    exits first (``node_start_failed``) or takes longer than ``timeout_s`` (``node_start_timeout``)."""
    marker = f"ready {node_id} ".encode()
    deadline = clock.monotonic() + timeout_s
    while True:
        with log_path.open("rb") as f:
            f.seek(offset)
            if any(line.startswith(marker) for line in f):
                return
        if not running():
            raise Unavailable(
                f"node {node_id} exited before it was ready; see {log_path}",
                code="node_start_failed",
                field=node_id,
            )
        if clock.monotonic() > deadline:
            raise Unavailable(
                f"node {node_id} not ready after {timeout_s:.0f} s; see {log_path}",
                code="node_start_timeout",
                field=node_id,
            )
        await clock.sleep(POLL_S)
