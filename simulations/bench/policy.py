"""Decision-time benchmark: a synthetic bundle of N rules, many varied inputs, one timing each.

The bundle is generated as YAML text and loaded through the real schema and compiler, so
the benchmark measures what a node runs. Rules resemble the shipped ones at scale: most
grant a few exact services to some peers, some deny, a few use patterns or owner
prefixes (those land in the index's wildcard buckets, the expensive case). Inputs vary
direction, service, peer, purpose, role, fields, consent and time. Timings start after one
warm-up pass, so they describe a node in steady state, not its first request per route.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass

from core.clock import FakeClock
from policies.engine import PolicyEngine
from policies.model import Direction, PolicyInput
from policies.schema import parse_bundle

NODES = {"shanghai": "31", "jiangsu": "32", "zhejiang": "33", "anhui": "34"}
PREFIX = {"shanghai": "sh", "jiangsu": "js", "zhejiang": "zj", "anhui": "ah"}
FIELDS = (
    "phone",
    "mailing_address",
    "residence_address",
    "insured_region",
    "reason",
    "start_date",
    "employer_name",
    "capital_yuan",
    "contact_person",
    "move_from",
)
PURPOSES = ("service-delivery", "service-delivery", "service-delivery", "audit")
ROLES = ("clerk", "clerk", "clerk", "operator")
WEEK_MS = 7 * 86_400_000
START_MS = 1_767_571_200_000  # 2026-01-05T00:00Z, a Monday


@dataclass(frozen=True)
class BenchResult:
    rules: int
    decisions: int
    median_us: float
    p99_us: float
    mean_us: float
    allowed_ratio: float
    mean_candidates: float
    largest_bucket: int

    def as_dict(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _services(count: int) -> list[tuple[str, str]]:
    """(service id, owning node) pairs spread over the four members."""
    nodes = list(NODES)
    return [(f"{PREFIX[nodes[i % 4]]}.matter-{i:04d}", nodes[i % 4]) for i in range(count)]


def synthetic_bundle(rules: int, seed: int) -> str:
    rng = random.Random(seed)
    services = _services(max(40, rules // 4))
    lines = [
        "node: shanghai",
        'revision: "bench"',
        "quotas:",
        "  - {id: q-peer, per: peer, per_minute: 1000000000, burst: 1000000000}",
        "  - {id: q-service, per: service, direction: outbound, per_minute: 1000000000, burst: 1000000000}",
        "rules:",
    ]
    for i in range(rules):
        kind = rng.random()
        direction = rng.choice(("outbound", "inbound"))
        effect = "deny" if kind < 0.2 else "allow"
        when = [f"direction: {direction}"]
        if kind < 0.97:
            ids = sorted({s for s, _ in rng.sample(services, rng.randint(1, 4))})
            when.append(f"service: {{ids: [{', '.join(ids)}]}}")
        else:
            owner = rng.choice(list(NODES.values()))
            when.append(
                f'service: {{owners: ["{owner}"], ids: ["{rng.choice(list(PREFIX.values()))}.matter-00*"]}}'
            )
        if rng.random() < 0.5:
            peers = rng.sample([n for n in NODES if n != "shanghai"], rng.randint(1, 2))
            when.append(f"peer: {{nodes: [{', '.join(peers)}]}}")
        if rng.random() < 0.8:
            when.append("purpose: service-delivery")
        if rng.random() < 0.7:
            when.append("role: clerk")
        if rng.random() < 0.2:
            when.append(f"fields: {{none: [{rng.choice(FIELDS)}]}}")
        if rng.random() < 0.1:
            when.append('time: {days: weekdays, from: "08:30", to: "17:30"}')
        obligations = ""
        if effect == "allow" and rng.random() < 0.5:
            obligations = f", obligations: {{require_consent: true, strip: [{rng.choice(FIELDS)}]}}"
        lines.append(f"  - {{id: r{i:05d}, effect: {effect}, when: {{{', '.join(when)}}}{obligations}}}")
    return "\n".join(lines) + "\n"


def synthetic_inputs(count: int, rules: int, seed: int) -> list[PolicyInput]:
    rng = random.Random(seed + 1)
    services = _services(max(40, rules // 4))
    out = []
    for _ in range(count):
        service, owner_node = rng.choice(services)
        direction: Direction = rng.choice(("outbound", "inbound"))
        peer = owner_node if direction == "outbound" else rng.choice([n for n in NODES if n != "shanghai"])
        out.append(
            PolicyInput(
                direction=direction,
                peer_node=peer,
                peer_jurisdiction=NODES[peer],
                service_id=service,
                service_owner=NODES[owner_node] + "0000",
                service_department="bench",
                purpose=rng.choice(PURPOSES),
                role=rng.choice(ROLES),
                fields=frozenset(rng.sample(FIELDS, rng.randint(2, 6))),
                consent=rng.random() < 0.9,
                at_ms=START_MS + rng.randrange(WEEK_MS),
            )
        )
    return out


def run(rules: int = 1000, decisions: int = 20_000, seed: int = 1) -> BenchResult:
    bundle = parse_bundle(synthetic_bundle(rules, seed).encode(), f"<synthetic {rules} rules>")
    engine = PolicyEngine(bundle, FakeClock())
    inputs = synthetic_inputs(min(decisions, 5000), rules, seed)
    for inp in inputs:  # warm-up: fill the per-route cache as a running node would have
        engine.decide(inp)
    timings = []
    allowed = 0
    clock = time.perf_counter_ns
    decide = engine.decide
    for i in range(decisions):
        inp = inputs[i % len(inputs)]
        t0 = clock()
        d = decide(inp)
        timings.append(clock() - t0)
        allowed += d.allowed
    timings.sort()
    candidates = [len(engine.index.candidates(inp)[0]) for inp in inputs]
    return BenchResult(
        rules=rules,
        decisions=decisions,
        median_us=round(statistics.median(timings) / 1000, 2),
        p99_us=round(timings[min(len(timings) - 1, int(len(timings) * 0.99))] / 1000, 2),
        mean_us=round(statistics.fmean(timings) / 1000, 2),
        allowed_ratio=round(allowed / decisions, 3),
        mean_candidates=round(statistics.fmean(candidates), 2),
        largest_bucket=max(engine.index.bucket_sizes().values()),
    )
