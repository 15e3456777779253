"""The federation's promises, checked from the nodes' databases after they stopped.

Nothing here trusts what the load generator counted in memory except the one thing only
it knows: which submissions the counters answered ``201 Created``. Everything else is read
from each node's SQLite file, opened read-only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine
from sqlmodel import Session, select

from node.models import Application, BundlePart, DataDisclosure, InboundApplication, OutboxEntry, StatusEvent
from node.trust.audit import load_chain, verify_chain
from simulations.traffic import open_ro

FINAL = {"completed", "rejected", "refused"}
EXAMPLES = 5


@dataclass
class Check:
    name: str
    ok: bool
    checked: int
    problems: list[str] = field(default_factory=list)
    count: int = 0  # how many broke it; problems holds the first few

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "ok": self.ok,
            "checked": self.checked,
            "broken": self.count,
            "examples": self.problems,
        }


def fail(check: Check, problem: str) -> None:
    check.ok = False
    check.count += 1
    if len(check.problems) < EXAMPLES:
        check.problems.append(problem)


@dataclass
class NodeState:
    applications: dict[str, Application]
    events: dict[str, set[str]]
    inbound: dict[str, InboundApplication]
    pending_outbox: int
    dead_letters: list[OutboxEntry]
    audit_problems: list[str]
    audit_records: int
    parts: dict[str, list[BundlePart]] = field(default_factory=dict)  # bundle id -> its parts, at the lead
    disclosures: list[DataDisclosure] = field(default_factory=list)


def read_node(path: Path) -> NodeState:
    engine = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        with Session(engine) as s:
            apps = {a.id: a for a in s.exec(select(Application))}
            events: dict[str, set[str]] = {}
            for e in s.exec(select(StatusEvent)):
                events.setdefault(e.application_id, set()).add(e.status)
            inbound = {r.id: r for r in s.exec(select(InboundApplication))}
            pending = len(s.exec(select(OutboxEntry.id).where(OutboxEntry.state == "pending")).all())
            dead = list(s.exec(select(OutboxEntry).where(OutboxEntry.state == "dead")))
            chain = load_chain(s)
            audit = [f"seq {p.seq}: {p.problem}" for p in verify_chain(chain)]
            parts: dict[str, list[BundlePart]] = {}
            for part in s.exec(select(BundlePart)):
                parts.setdefault(part.bundle_id, []).append(part)
            disclosures = list(s.exec(select(DataDisclosure)))
    finally:
        engine.dispose()
    return NodeState(apps, events, inbound, pending, dead, audit, len(chain), parts, disclosures)


def sealed_before_opened_after(db_paths: Mapping[str, Path], owner: str, switch_ms: int) -> int:
    """Applications an origin submitted (and so sealed, to the key its manifest named) before
    ``owner`` switched keys at ``switch_ms``, which ``owner`` took in after the switch: each
    opened with a retired key, since an owner stores only what it opened."""
    nodes = {node_id: read_node(path) for node_id, path in db_paths.items()}
    return sum(
        1
        for row in nodes[owner].inbound.values()
        if row.received_at_ms >= switch_ms
        and (origin := nodes.get(row.origin_node)) is not None
        and (app := origin.applications.get(row.id)) is not None
        and app.submitted_at_ms < switch_ms
    )


def check(
    db_paths: Mapping[str, Path],
    accepted: Mapping[str, str],
    bundles: Mapping[str, str] | None = None,
    queries: Mapping[str, tuple[str, tuple[str, ...]]] | None = None,
) -> list[Check]:
    """``accepted``: application id -> origin node, for every 201 the counters gave (bundles
    included; their parts are applications from the lead, so the checks on applications hold
    them too); ``bundles``: those of them that were bundles; ``queries``: query id -> (asking
    node, resources asked), for every query a counter answered 200."""
    nodes = {node_id: read_node(path) for node_id, path in db_paths.items()}
    stored = Check("every accepted application is stored at its origin", True, len(accepted))
    for app_id, origin in accepted.items():
        if app_id not in nodes[origin].applications:
            fail(stored, f"{app_id} answered 201 by {origin} but not in its database")

    holders: Counter[str] = Counter()
    for state in nodes.values():
        holders.update(state.inbound.keys())
    sent = [
        (o, a) for o, s in nodes.items() for a in s.applications.values() if a.status != "awaiting_approval"
    ]
    once = Check("every application reached its owner exactly once", True, len(sent))
    for origin, app in sent:
        row = nodes[app.owner_node].inbound.get(app.id) if app.owner_node in nodes else None
        if row is None:
            fail(once, f"{app.id} from {origin} never reached {app.owner_node} (lost)")
        elif row.origin_node != origin:
            fail(once, f"{app.id} at {app.owner_node} names origin {row.origin_node}, not {origin}")
        elif holders[app.id] != 1:
            fail(once, f"{app.id} is held by {holders[app.id]} nodes (duplicated)")

    stray = Check("no inbound application without its origin's record", True, sum(holders.values()))
    for owner, state in nodes.items():
        for row in state.inbound.values():
            origin_state = nodes.get(row.origin_node)
            known = origin_state.applications.get(row.id) if origin_state else None
            if known is None or known.owner_node != owner:
                fail(stray, f"{row.id} at {owner} has no matching application at {row.origin_node}")

    decided = [(o, r) for o, s in nodes.items() for r in s.inbound.values() if r.status in FINAL]
    back = Check("every decision reached its origin", True, len(decided))
    for owner, row in decided:
        origin_state = nodes.get(row.origin_node)
        seen = origin_state.events.get(row.id, set()) if origin_state else set()
        there = origin_state.applications.get(row.id) if origin_state else None
        if row.status not in seen or there is None or there.status != row.status:
            shown = there.status if there else "missing"
            fail(back, f"{row.id} is {row.status} at {owner} but {shown} at {row.origin_node}")

    drained = Check("every outbox drained (nothing left in flight)", True, len(nodes))
    for node_id, state in nodes.items():
        if state.pending_outbox:
            fail(drained, f"{node_id} still has {state.pending_outbox} items to send")

    dead = Check("nothing set aside as a dead letter", True, len(nodes))
    for node_id, state in nodes.items():
        for entry in state.dead_letters:
            fail(dead, f"{node_id}: {entry.item_id} to {entry.destination}: {entry.dead_reason}")

    audit = Check("every audit chain verifies", True, sum(s.audit_records for s in nodes.values()))
    for node_id, state in nodes.items():
        for problem in state.audit_problems:
            fail(audit, f"{node_id}: {problem}")
    checks = [stored, once, stray, back, drained, dead, audit]
    if bundles:
        checks.append(_bundles_final(nodes, bundles))
    if queries is not None:
        checks += _disclosures(nodes, queries)
    return checks


def _bundles_final(nodes: Mapping[str, NodeState], bundles: Mapping[str, str]) -> Check:
    """A bundle is one status for several matters: final at its origin after the drain, and
    when completed, every part the lead made completed at the lead."""
    final = Check("every accepted bundle is final at its origin, its parts completed", True, len(bundles))
    for bundle_id, origin in bundles.items():
        app = nodes[origin].applications.get(bundle_id)
        if app is None:
            continue  # "stored at its origin" names it
        if app.status not in FINAL:
            fail(final, f"bundle {bundle_id} is {app.status} at {origin} after the drain")
            continue
        lead = nodes.get(app.owner_node)
        if app.status != "completed" or lead is None:
            continue
        parts = lead.parts.get(bundle_id, [])
        if not parts:
            fail(final, f"bundle {bundle_id} is completed at {origin} but {app.owner_node} made no parts")
        for part in parts:
            made = lead.applications.get(part.application_id)
            if made is None or made.status != "completed":
                shown = made.status if made else "never made"
                fail(final, f"bundle {bundle_id} is completed but its part {part.name} is {shown}")
    return final


def _disclosures(
    nodes: Mapping[str, NodeState], queries: Mapping[str, tuple[str, tuple[str, ...]]]
) -> list[Check]:
    """Both ends log each resource asked: the holder what it disclosed, the asker its mirror.

    A holder's record whose mirror says ``missing`` is a holder that answered after the
    asker's deadline (a paused one, say): expected, and counted by ``late_answers``."""
    asker_rows: Counter[tuple[str, str, str]] = Counter()  # (asker, query id, resource)
    asker_answered: dict[tuple[str, str], str] = {}  # (query id, resource) -> holder
    holder_rows: Counter[tuple[str, str, str]] = Counter()  # (holder, query id, resource)
    holder_answered: set[tuple[str, str, str]] = set()
    for node_id, state in nodes.items():
        for d in state.disclosures:
            if d.side == "asker":
                asker_rows[(node_id, d.query_id, d.resource_id)] += 1
                if d.outcome == "answered":
                    asker_answered[(d.query_id, d.resource_id)] = d.holder_node
            else:
                holder_rows[(node_id, d.query_id, d.resource_id)] += 1
                if d.outcome == "answered":
                    holder_answered.add((node_id, d.query_id, d.resource_id))

    logged = Check(
        "every answered query is logged at its asker, once per resource",
        True,
        sum(len(resources) for _, resources in queries.values()),
    )
    for query_id, (origin, resources) in queries.items():
        for resource in resources:
            if (n := asker_rows[(origin, query_id, resource)]) != 1:
                fail(logged, f"{query_id} {resource}: {n} disclosure records at {origin}")

    mirrored = Check(
        "every item a holder answered is logged once there and mirrored once at the asker",
        True,
        sum(holder_rows.values()),
    )
    for node_id, state in nodes.items():
        for d in state.disclosures:
            if d.side != "holder":
                continue
            if (n := holder_rows[(node_id, d.query_id, d.resource_id)]) != 1:
                fail(mirrored, f"{d.query_id} {d.resource_id}: {n} records at the holder {node_id}")
            elif (n := asker_rows[(d.asker_node, d.query_id, d.resource_id)]) != 1:
                fail(mirrored, f"{d.query_id} {d.resource_id}: {n} mirrors at the asker {d.asker_node}")

    shown = Check(
        "nothing answered to an asker that its holder did not log",
        True,
        len(asker_answered),
    )
    for (query_id, resource), holder in asker_answered.items():
        if (holder, query_id, resource) not in holder_answered:
            fail(shown, f"{query_id} {resource}: answered at the asker, no answered record at {holder}")
    return [logged, mirrored, shown]


def late_answers(db_paths: Mapping[str, Path]) -> int:
    """Items a holder logged as answered whose asker's mirror says ``missing``: answers that
    came after the asker's deadline (the holder paused or slow), disclosed but never shown."""
    missing: set[tuple[str, str]] = set()
    answered: list[tuple[str, str]] = []
    for path in db_paths.values():
        conn = open_ro(path)
        try:
            rows = conn.execute(
                "SELECT side, query_id, resource_id FROM data_disclosure WHERE"
                " (side = 'asker' AND outcome = 'missing') OR (side = 'holder' AND outcome = 'answered')"
            ).fetchall()
        finally:
            conn.close()
        for side, query_id, resource in rows:
            if side == "asker":
                missing.add((query_id, resource))
            else:
                answered.append((query_id, resource))
    return sum(1 for key in answered if key in missing)


def retried_as_ahead(db_paths: Mapping[str, Path], sender: str) -> int:
    """Items from ``sender`` that a receiver answered RETRY ``stamped_ahead`` (stamped by a
    clock running ahead, taken later): each such answer is in the receiver's audit chain."""
    total = 0
    for node_id, path in db_paths.items():
        if node_id == sender:
            continue
        conn = open_ro(path)
        try:
            total += conn.execute(
                "SELECT count(*) FROM audit_record WHERE direction = 'out' AND peer = ? AND detail = ?",
                (sender, "stamped_ahead"),
            ).fetchone()[0]
        finally:
            conn.close()
    return total
