"""Faults: a schedule drawn at random from a seed (or read from a file), then applied.

Kinds: ``kill`` (SIGKILL a node, restart it after the window), ``pause`` (SIGSTOP, then
SIGCONT), ``partition`` (cut a link both ways or one way), ``latency`` (delay and loss on
a link), ``skew`` (restart a node with its clock ``offset_ms`` off, ``[clock] offset_ms``,
and back after the window), ``rotate`` (a new key for a node, published in a successor
manifest signed by a quorum and gossiped, the node switching to it at the window's end
or, if gossip is slower, once every member holds the successor: node_faults.py, rotation.py).

Random faults fall in the middle of the run (from 10 % to 70 % of it), so the last part
shows the federation recovering, and never overlap on one node. A random skew is half the
federation's allowed skew or one and a half times it, ahead or behind: within it nothing
may be refused, beyond it envelopes are refused (``clock_skew``) until it ends.
"""

from __future__ import annotations

import random
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from node.config import MAX_CLOCK_OFFSET_MS

SUPPORTED = ("kill", "pause", "partition", "latency", "skew", "rotate")
ON_A_NODE = ("kill", "pause", "skew", "rotate")
# A rotation publishes, waits for gossip, then switches: it needs a longer window than a kill.
MIN_ROTATE_S = 8.0


@dataclass
class Fault:
    kind: str
    start_s: float
    duration_s: float
    node: str = ""  # kill, pause
    source: str = ""  # partition, latency: the link source -> destination
    destination: str = ""
    both_ways: bool = True
    delay_ms: float = 0.0
    loss: float = 0.0
    offset_ms: int = 0  # skew
    applied_at_s: float | None = None
    reverted_at_s: float | None = None
    # What the run saw of it (refusals counted, manifest versions, spread time), for the report.
    observed: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.kind == "skew":
            return f"skew {self.node} {self.offset_ms / 1000:+g} s"
        if self.node:
            return f"{self.kind} {self.node}"
        arrow = "<->" if self.both_ways else "->"
        return f"{self.kind} {self.source}{arrow}{self.destination}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "label": self.label}


def parse_kinds(text: str) -> list[str]:
    """The fault kinds named in ``--faults``; an unknown kind is an error."""
    kinds = []
    for kind in (k.strip() for k in text.split(",") if k.strip()):
        if kind not in SUPPORTED:
            raise ConfigError(
                f"unknown fault {kind!r}; expected some of {', '.join(SUPPORTED)}", field="--faults"
            )
        kinds.append(kind)
    return kinds


def random_schedule(
    kinds: Sequence[str], nodes: Sequence[str], duration_s: float, seed: int, *, max_skew_ms: int = 30_000
) -> list[Fault]:
    """One fault of each kind (two when the run is long), at seeded random times and places."""
    rng = random.Random(seed)
    per_kind = 2 if duration_s >= 120 else 1
    window_start, window_end = 0.1 * duration_s, 0.7 * duration_s
    busy: dict[str, list[tuple[float, float]]] = {}
    faults: list[Fault] = []

    def free(node: str, start: float, end: float) -> bool:
        return all(end <= s or start >= e for s, e in busy.get(node, []))

    for kind in [k for k in kinds for _ in range(per_kind)]:
        for _ in range(100):
            length = rng.uniform(0.08, 0.15) * duration_s
            if kind == "rotate":
                length = max(length, MIN_ROTATE_S)
            start = rng.uniform(window_start, max(window_start, window_end - length))
            a, b = rng.sample(list(nodes), 2)
            touched = [a] if kind in ON_A_NODE else [a, b]
            if all(free(n, start, start + length) for n in touched):
                break
        for n in touched:
            busy.setdefault(n, []).append((start, start + length))
        fault = Fault(kind, round(start, 2), round(length, 2))
        if kind in ON_A_NODE:
            fault.node = a
            if kind == "skew":
                fault.offset_ms = round(rng.choice((-1, 1)) * rng.choice((0.5, 1.5)) * max_skew_ms)
        else:
            fault.source, fault.destination = a, b
            fault.both_ways = kind == "latency" or rng.random() < 0.5
            if kind == "latency":
                fault.delay_ms, fault.loss = float(rng.choice((50, 100, 200))), rng.choice((0.0, 0.01, 0.02))
        faults.append(fault)
    return sorted(faults, key=lambda f: f.start_s)


def schedule_from_file(path: Path, nodes: Sequence[str]) -> list[Fault]:
    """``[[faults]]`` tables with kind, at, duration and node or source/destination."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read fault schedule {path}: {e}", field="--schedule") from e
    faults = []
    for i, t in enumerate(doc.get("faults", [])):
        where = f"faults[{i}]"
        kind = t.get("kind")
        if kind not in SUPPORTED:
            raise ConfigError(f"kind must be one of {', '.join(SUPPORTED)}", field=f"{where}.kind")
        fault = Fault(
            kind,
            float(t.get("at", 0)),
            float(t.get("duration", 5)),
            node=str(t.get("node", "")),
            source=str(t.get("source", "")),
            destination=str(t.get("destination", "")),
            both_ways=bool(t.get("both_ways", True)),
            delay_ms=float(t.get("delay_ms", 100)),
            loss=float(t.get("loss", 0)),
            offset_ms=int(t.get("offset_ms", 45_000)),
        )
        if kind == "skew" and not 0 < abs(fault.offset_ms) <= MAX_CLOCK_OFFSET_MS:
            raise ConfigError(
                f"a skew is a non-zero offset of at most {MAX_CLOCK_OFFSET_MS} ms", field=f"{where}.offset_ms"
            )
        if kind == "rotate" and fault.duration_s < MIN_ROTATE_S:
            raise ConfigError(f"a rotation needs at least {MIN_ROTATE_S:g} s", field=f"{where}.duration")
        named = [fault.node] if kind in ON_A_NODE else [fault.source, fault.destination]
        for n in named:
            if n not in nodes:
                raise ConfigError(f"no node {n!r} in the topology", field=where)
        faults.append(fault)
    return sorted(faults, key=lambda f: f.start_s)
