"""The load: counters submitting at a fixed rate, owners deciding after a delay.

Four kinds, weighted by ``--mix``: ``auto`` and ``worklist`` matters owned by another node,
``bundle`` (a 一件事 bundle whose lead is another node: the lead makes each part an
application of its own) and ``query`` (a consented data query, simulations/simulate/queries.py).

Submissions are an open loop (started on the clock, whatever the answers' pace), so a
paused or killed node shows up as errors and latency, not as a politely slower client.
A cap on submissions in flight keeps a stalled node from piling up unbounded tasks;
what the cap turns away is counted as ``shed``.

Matters with the ``auto`` handler are decided by the owner node itself on receipt; for
``worklist`` matters this module plays the owner's clerk: it reads the owner's waiting
applications from its database (read-only) and, once they have waited ``decide_delay``
seconds, approves them through the owner's counter API, several at a time. That includes the
worklist parts of bundles, which the lead sends to their owners as it sends any application.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp

from core.errors import ConfigError
from simulations.cluster import Cluster
from simulations.simulate.queries import OUTCOMES, Screen, ask, query_body, screen_of
from simulations.traffic import Target, open_ro, submit, targets

KINDS = ("auto", "worklist", "bundle", "query")
SUBMIT_TIMEOUT_S = 10.0
# Approvals in flight at once, across the owners: a node's worklist is worked by many clerks.
# One at a time, the simulated clerk fell behind at 200 submissions a second (worklist p50
# 31 s), and the report blamed the federation for the harness.
CLERKS = 16


def parse_mix(text: str) -> dict[str, float]:
    """``auto=3,worklist=1`` -> weights per kind (a bare name weighs 1)."""
    mix: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, weight = part.partition("=")
        if name not in KINDS:
            raise ConfigError(f"unknown kind {name!r}; expected one of {', '.join(KINDS)}", field="--mix")
        try:
            mix[name] = float(weight) if weight else 1.0
        except ValueError as e:
            raise ConfigError(f"weight of {name} must be a number", field="--mix") from e
        if mix[name] < 0:
            raise ConfigError(f"weight of {name} must not be negative", field="--mix")
    if not mix or sum(mix.values()) <= 0:
        raise ConfigError("needs at least one kind with a positive weight", field="--mix")
    return mix


@dataclass(frozen=True)
class Surge:
    """A window of the run in which counters submit ``factor`` times the rate: Monday morning,
    or the day a new policy opens applications, seen with the hours around it in one report."""

    factor: float
    start_s: float
    seconds: float

    def as_dict(self) -> dict[str, float]:
        return {"factor": self.factor, "start_s": self.start_s, "seconds": self.seconds}


MAX_SURGE = 100.0


def parse_surge(text: str, duration_s: float) -> Surge:
    """``10@20+15``: ten times the rate from 20 s into the load, for 15 s."""
    shape = ConfigError("must be FACTOR@START+SECONDS, e.g. 10@20+15", field="--surge")
    factor, at, rest = text.partition("@")
    start, plus, seconds = rest.partition("+")
    if not (at and plus):
        raise shape
    try:
        surge = Surge(float(factor), float(start), float(seconds))
    except ValueError as e:
        raise shape from e
    if not 1 < surge.factor <= MAX_SURGE:  # also refuses nan
        raise ConfigError(f"the factor must be above 1 and at most {MAX_SURGE:g}", field="--surge")
    if not (surge.start_s >= 0 and surge.seconds > 0 and surge.start_s + surge.seconds <= duration_s):
        raise ConfigError(f"the window must lie within the {duration_s:g} s of load", field="--surge")
    return surge


def slot_offsets(rate: float, seconds: float, surge: Surge | None) -> Iterator[float]:
    """When each submission is due, in seconds from the start of the load: each window at its
    own rate, each slot counted from its window's start (a sum of 1/rate would drift)."""
    if surge is None:
        windows = [(0.0, seconds, rate)]
    else:
        end = surge.start_s + surge.seconds
        windows = [
            (0.0, surge.start_s, rate),
            (surge.start_s, end, rate * surge.factor),
            (end, seconds, rate),
        ]
    for start, stop, per_s in windows:
        for k in range(math.ceil((stop - start) * per_s - 1e-9)):
            yield start + k / per_s


@dataclass
class Submission:
    """One application (an ``auto``, ``worklist`` or ``bundle`` kind) a counter was asked to take."""

    kind: str
    origin: str
    owner: str
    service_id: str
    started: float
    answered: float = 0.0
    status: int = 0
    app_id: str = ""
    error: str = ""


@dataclass(frozen=True)
class Ask:
    """A query one counter can be asked."""

    origin: str
    screen: Screen


@dataclass
class Query:
    """One query a counter was asked; ``outcomes`` counts its merged view's items."""

    origin: str
    started: float
    answered: float = 0.0
    status: int = 0
    query_id: str = ""
    resources: tuple[str, ...] = ()
    outcomes: dict[str, int] = field(default_factory=dict)
    error: str = ""


@dataclass
class Load:
    cluster: Cluster
    rate: float
    mix: dict[str, float]
    seed: int
    surge: Surge | None = None
    max_in_flight: int = 200
    submissions: list[Submission] = field(default_factory=list)
    queries: list[Query] = field(default_factory=list)
    shed: int = 0
    decisions: int = 0
    decide_errors: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        specs = [n.spec for n in self.cluster.nodes.values()]
        self.plans = {kind: targets(specs, (kind,)) for kind in self.mix if kind != "query"}
        self.screen = screen_of(specs) if "query" in self.mix else None
        self._keys = itertools.count()

    def _offers(self, kind: str, origin: str) -> bool:
        return self.screen is not None if kind == "query" else bool(self.plans[kind][origin])

    def _pick(self) -> tuple[str, Target | Ask] | None:
        origin = self.rng.choice(list(self.cluster.nodes))
        kinds = [k for k in self.mix if self._offers(k, origin)]
        if not kinds:
            return None
        kind = self.rng.choices(kinds, weights=[self.mix[k] for k in kinds])[0]
        if kind == "query" and self.screen is not None:
            return kind, Ask(origin, self.screen)
        return kind, self.rng.choice(self.plans[kind][origin])

    async def run(self, http: aiohttp.ClientSession, seconds: float, t0: float) -> None:
        gate = asyncio.Semaphore(self.max_in_flight)
        tasks: set[asyncio.Task[None]] = set()
        for offset in slot_offsets(self.rate, seconds, self.surge):
            delay = t0 + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            picked = self._pick()
            if picked is None:
                continue
            if gate.locked():
                self.shed += 1
                continue
            await gate.acquire()
            kind, target = picked
            task = asyncio.create_task(
                self._one(http, kind, target, gate)
                if isinstance(target, Target)
                else self._ask(http, target, gate)
            )
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)

    async def _one(
        self, http: aiohttp.ClientSession, kind: str, target: Target, gate: asyncio.Semaphore
    ) -> None:
        node = self.cluster.nodes[target.origin]
        sub = Submission(kind, target.origin, target.owner, target.definition.service_id, time.monotonic())
        self.submissions.append(sub)
        try:
            sub.status, doc = await asyncio.wait_for(
                submit(http, node.http_url, node.token, target, self.rng, f"sim{next(self._keys)}"),
                SUBMIT_TIMEOUT_S,
            )
            sub.app_id = str(doc.get("id", "")) if sub.status == 201 else ""
            if sub.status != 201:
                sub.error = f"{sub.status} {doc.get('code', '')}"
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            sub.error = type(e).__name__
        finally:
            sub.answered = time.monotonic()
            gate.release()

    async def _ask(self, http: aiohttp.ClientSession, target: Ask, gate: asyncio.Semaphore) -> None:
        node = self.cluster.nodes[target.origin]
        screen = target.screen
        body = query_body(screen, self.rng.choice(screen.subjects), datetime.now(UTC), self.rng)
        asked = tuple(str(r["id"]) for r in body["resources"])
        query = Query(target.origin, time.monotonic(), resources=asked)
        self.queries.append(query)
        try:
            query.status, doc = await asyncio.wait_for(
                ask(http, node.http_url, node.token, body), SUBMIT_TIMEOUT_S
            )
            if query.status == 200:
                query.query_id = str(doc.get("query_id", ""))
                for item in doc.get("items") or []:
                    outcome = str(item.get("outcome", "")) if isinstance(item, dict) else ""
                    outcome = outcome if outcome in OUTCOMES else "unreadable"
                    query.outcomes[outcome] = query.outcomes.get(outcome, 0) + 1
            else:
                query.error = f"{query.status} {doc.get('code', '')}"
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            query.error = type(e).__name__
        finally:
            query.answered = time.monotonic()
            gate.release()

    async def decide(self, http: aiohttp.ClientSession, delay_s: float, stop: asyncio.Event) -> None:
        """Play every owner's clerk for worklist matters until ``stop``, then once more."""
        conns: dict[str, sqlite3.Connection] = {}
        decided: set[str] = set()
        clerks = asyncio.Semaphore(CLERKS)

        async def approve(node_id: str, app_id: str) -> None:
            async with clerks:
                if await self._approve(http, node_id, app_id):
                    decided.add(app_id)

        while True:
            final_round = stop.is_set()
            due: list[tuple[str, str]] = []
            for node_id, node in self.cluster.nodes.items():
                if not node.running or node.paused:
                    continue
                cutoff = int(time.time() * 1000 - delay_s * 1000)
                try:
                    conn = conns.get(node_id) or conns.setdefault(node_id, open_ro(node.db_path))
                    rows = conn.execute(
                        "SELECT id FROM inbound_application"
                        " WHERE status = 'in_review' AND handler = 'worklist' AND received_at_ms <= ?",
                        (cutoff,),
                    ).fetchall()
                except sqlite3.Error:
                    conns.pop(node_id, None)
                    continue
                due += [(node_id, app_id) for (app_id,) in rows if app_id not in decided]
            await asyncio.gather(*(approve(node_id, app_id) for node_id, app_id in due))
            if final_round:
                break
            await asyncio.sleep(0.25)
        for conn in conns.values():
            conn.close()

    async def _approve(self, http: aiohttp.ClientSession, node_id: str, app_id: str) -> bool:
        node = self.cluster.nodes[node_id]
        headers = {"Authorization": f"Bearer {node.supervisor_token}"}
        body = {"decision": "approve", "reason": "模拟审批 approved by the simulation"}
        try:
            async with asyncio.timeout(SUBMIT_TIMEOUT_S):
                async with http.post(
                    f"{node.http_url}/api/v1/applications/{app_id}/decision", json=body, headers=headers
                ) as r:
                    await r.read()
                    if r.status in (200, 409):
                        self.decisions += r.status == 200
                        return True
        except (aiohttp.ClientError, TimeoutError, OSError):
            pass
        self.decide_errors += 1
        return False


def accepted(submissions: Sequence[Submission], kind: str | None = None) -> dict[str, str]:
    """Application id -> origin of every 201 the counters gave (of one kind, if named)."""
    return {s.app_id: s.origin for s in submissions if s.app_id and kind in (None, s.kind)}


def answered(queries: Sequence[Query]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Query id -> (asking node, resources asked) of every query a counter answered 200."""
    return {q.query_id: (q.origin, q.resources) for q in queries if q.query_id}
