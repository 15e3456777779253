"""What the benchmarks and the simulations send, and how they see it arrive.

Submissions go through each node's counter API over HTTP, as a clerk's would. Completion
is read from the origin's own database (read-only SQLite, one indexed query per poll):
asking each application's status over HTTP would put a second request per application on
the very nodes being measured, and the status event row is what ``completed`` means.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from yrd.catalogue.v1 import catalogue_pb2

from registry.catalogue import load_catalogue_file
from simulations.local_federation import NodeSpec
from simulations.sample_applications import application_body

FINAL = ("completed", "rejected", "refused")

# Allows every inbound and outbound application and data query and sets no quota, so a
# burst measures the node and not the shipped bundles' per-matter limits (burst 40).
OPEN_BUNDLE = """\
node: {node}
revision: bench-open
rules:
  - {{id: allow-outbound, effect: allow, when: {{direction: outbound}}}}
  - {{id: allow-inbound, effect: allow, when: {{direction: inbound}}}}
  - {{id: allow-data, effect: allow, when: {{direction: [outbound, inbound], kind: data}}}}
"""


def open_specs(root: Path, specs: Sequence[NodeSpec]) -> list[NodeSpec]:
    """The specs with an open bundle each (``prepare`` signs it with the node's key)."""
    out = []
    for spec in specs:
        bundle = root / "bundles" / f"{spec.node_id}.yaml"
        bundle.parent.mkdir(parents=True, exist_ok=True)
        bundle.write_text(OPEN_BUNDLE.format(node=spec.node_id))
        out.append(dataclasses.replace(spec, bundle=bundle))
    return out


@dataclass(frozen=True)
class Target:
    """A service one origin can apply for, owned by another node."""

    origin: str
    owner: str
    definition: catalogue_pb2.ServiceDefinition


def service_count(specs: Sequence[NodeSpec]) -> int:
    """How many services the whole federation publishes: what every counter lists once synced."""
    return len({d.service_id for defs in services_of(specs).values() for d in defs})


def services_of(specs: Sequence[NodeSpec]) -> dict[str, list[catalogue_pb2.ServiceDefinition]]:
    return {s.node_id: load_catalogue_file(s.catalogue)[1] for s in specs}


def owner_of(code: str, specs: Sequence[NodeSpec]) -> str:
    """The node whose longest jurisdiction prefix matches ``code`` (as the manifest routes)."""
    best, best_len = "", -1
    for spec in specs:
        for prefix in spec.prefixes:
            if code.startswith(prefix) and len(prefix) > best_len:
                best, best_len = spec.node_id, len(prefix)
    return best


def targets(specs: Sequence[NodeSpec], handlers: Sequence[str] = ("auto",)) -> dict[str, list[Target]]:
    """Per origin: the services with one of ``handlers`` owned by some other node."""
    catalogue = services_of(specs)
    out: dict[str, list[Target]] = {s.node_id: [] for s in specs}
    for defs in catalogue.values():
        for d in defs:
            if d.handler not in handlers:
                continue
            owner = owner_of(d.owner, specs)
            for origin, listed in out.items():
                if origin != owner:
                    listed.append(Target(origin, owner, d))
    return out


async def submit(
    http: aiohttp.ClientSession, url: str, token: str, target: Target, rng: random.Random, key: str
) -> tuple[int, dict[str, Any]]:
    return await post_application(http, url, token, application_json(target, rng), key)


def application_json(target: Target, rng: random.Random) -> bytes:
    """The request body of a new application for ``target``, as the counter receives it."""
    return json.dumps(application_body(target.definition, rng), ensure_ascii=False).encode()


async def post_application(
    http: aiohttp.ClientSession, url: str, token: str, body: bytes, key: str
) -> tuple[int, dict[str, Any]]:
    headers = {
        "Authorization": f"Bearer {token}",
        "Idempotency-Key": key,
        "Content-Type": "application/json",
    }
    async with http.post(f"{url}/api/v1/applications", data=body, headers=headers) as r:
        doc = await r.json(content_type=None)
        return r.status, doc if isinstance(doc, dict) else {}


async def count_services(http: aiohttp.ClientSession, url: str, token: str) -> int:
    async with http.get(f"{url}/api/v1/services", headers={"Authorization": f"Bearer {token}"}) as r:
        if r.status != 200:
            return 0
        return len((await r.json())["services"])


def open_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection: the harness must never write to a node's database."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0, check_same_thread=False)


def completion_poll_s(nodes: int) -> float:
    """How often a run reads its origins for final statuses: its latencies' resolution. A
    read costs about 11 µs of CPU a node, so 2.5 ms per node keeps the reads near half a per
    cent of a core: four nodes every 10 ms, the delta's 44 every 110 ms. (The simulation read
    every 100 ms, coarser than the p50 of 65-75 ms it reported for automatic matters.)"""
    return max(0.01, 0.0025 * nodes)


class CompletionWatcher:
    """Sees final status events appear at the origins, stamped with the time seen.

    The stamp is the watcher's monotonic clock, so latency from submit is measured on one
    clock in one process; its resolution is the poll interval."""

    def __init__(self, db_paths: dict[str, Path]) -> None:
        self._paths = db_paths
        self._conns: dict[str, sqlite3.Connection] = {}
        self._last: dict[str, int] = dict.fromkeys(db_paths, 0)
        self.final: dict[str, tuple[str, float]] = {}  # application id -> (status, seen at)

    def poll(self) -> int:
        """Read new final events from every origin; returns how many were new."""
        now = time.monotonic()
        new = 0
        for node_id, path in self._paths.items():
            try:
                conn = self._conns.get(node_id) or self._conns.setdefault(node_id, open_ro(path))
                rows = conn.execute(
                    "SELECT id, application_id, status FROM status_event"
                    " WHERE id > ? AND status IN (?, ?, ?)",
                    (self._last[node_id], *FINAL),
                ).fetchall()
            except sqlite3.Error:
                # The node may be restarting or its file not yet created: try again next poll.
                self._conns.pop(node_id, None)
                continue
            for row_id, app_id, status in rows:
                self._last[node_id] = max(self._last[node_id], row_id)
                if app_id not in self.final:
                    self.final[app_id] = (status, now)
                    new += 1
        return new

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]
