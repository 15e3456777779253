"""Semantic checks on a bundle that already passed the schema.

Each finding is a rule that cannot do what its author meant: it names a service or peer
nobody knows (a typo that would silently never match), it can never match at all, or every
input it matches is refused first by a broader deny. All of these fail ``yrd policy lint``;
a bundle that lints clean has no dead rules the checks can see.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass

from policies.catalogue import CatalogueService
from policies.coverage import covers
from policies.model import Kind
from policies.spec import Bundle, Conditions, Rule, ServiceSelector


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    subject: str  # "rule <id>" or "quota <id>"
    code: str  # unknown_service, unknown_peer, unreachable, shadowed
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.code}: {self.subject}: {self.message}"


def lint_bundle(
    bundle: Bundle,
    catalogue: Mapping[str, CatalogueService] | None = None,
    members: Mapping[str, tuple[str, ...]] | None = None,
    data: Collection[str] | None = None,
) -> list[Finding]:
    """``catalogue`` (services), ``data`` (data resource ids) and ``members`` are the known
    universe; a check needing one is skipped when it is None (e.g. no members file given)."""
    known = _Known(bundle, members)
    services = None if catalogue is None else frozenset(catalogue)
    resources = None if data is None else frozenset(data)
    findings: list[Finding] = []
    for rule in bundle.rules:
        # A data rule names data resources, which the service catalogue does not list.
        if rule.when.kind == "data":
            universe = _Universe("data resource", resources)
        else:
            universe = _Universe("service", services)
        found = list(
            _unknown(known, f"rule {rule.id}", rule.line, rule.when.services, universe, rule.when.peer_nodes)
        )
        if not found:
            found = [
                Finding(bundle.source, rule.line, f"rule {rule.id}", "unreachable", why)
                for why in _unreachable(bundle, rule, catalogue, members)
            ]
        findings.extend(found)
    for q in bundle.quotas:
        universe = _quota_universe(q.kinds, services, resources)
        findings.extend(_unknown(known, f"quota {q.id}", q.line, q.services, universe, q.peer_nodes))
    findings.extend(_shadowed(bundle))
    return sorted(findings, key=lambda f: (f.line, f.code))


@dataclass(frozen=True)
class _Known:
    bundle: Bundle
    members: Mapping[str, tuple[str, ...]] | None


@dataclass(frozen=True)
class _Universe:
    """What a selector may name, and what to call it in a finding; ``ids`` None: not known."""

    noun: str
    ids: frozenset[str] | None


def _quota_universe(
    kinds: frozenset[Kind] | None, services: frozenset[str] | None, resources: frozenset[str] | None
) -> _Universe:
    """A quota counts the kinds it names (all without ``kind``): matters name services, data
    queries name resources, and a clue names neither."""
    parts = []
    if kinds is None or "application" in kinds:
        parts.append(("service", services))
    if kinds is None or "data" in kinds:
        parts.append(("data resource", resources))
    if not parts:
        return _Universe("service (a clue names none)", frozenset())
    if any(ids is None for _, ids in parts):
        return _Universe("", None)
    return _Universe(" or ".join(n for n, _ in parts), frozenset().union(*(ids or () for _, ids in parts)))


def _unknown(
    known: _Known,
    subject: str,
    line: int,
    services: ServiceSelector | None,
    universe: _Universe,
    peers: frozenset[str] | None,
) -> Iterator[Finding]:
    bundle, members, ids = known.bundle, known.members, universe.ids
    if services is not None and ids is not None:
        for sid in sorted(services.exact - ids):
            yield Finding(
                bundle.source, line, subject, "unknown_service", f"{universe.noun} {sid!r} is in no catalogue"
            )
        for pattern in services.patterns:
            if not any(ServiceSelector.of((pattern,)).matches(sid) for sid in ids):
                yield Finding(
                    bundle.source,
                    line,
                    subject,
                    "unknown_service",
                    f"pattern {pattern!r} matches nothing catalogued",
                )
    if peers is not None and members is not None:
        for node in sorted(peers - members.keys()):
            yield Finding(
                bundle.source, line, subject, "unknown_peer", f"node {node!r} is not a federation member"
            )
        if bundle.node in peers:
            yield Finding(
                bundle.source,
                line,
                subject,
                "unknown_peer",
                f"node {bundle.node!r} is this bundle's own node, never a peer",
            )


def _unreachable(
    bundle: Bundle,
    rule: Rule,
    catalogue: Mapping[str, CatalogueService] | None,
    members: Mapping[str, tuple[str, ...]] | None,
) -> Iterator[str]:
    c = rule.when
    f = c.fields
    if f is not None:
        if f.all is not None and f.none is not None and f.all & f.none:
            yield f"fields {sorted(f.all & f.none)} are both required (all) and forbidden (none)"
        if f.all is not None and f.only is not None and not f.all <= f.only:
            yield f"fields {sorted(f.all - f.only)} are required (all) but outside only"
        if f.any is not None and f.none is not None and f.any <= f.none:
            yield "every field of any is also forbidden (none)"
        if f.any is not None and f.only is not None and f.any.isdisjoint(f.only):
            yield "no field of any is allowed by only"
    if rule.effect == "allow" and rule.obligations.require_consent and c.consent is False:
        yield "matches only inputs without consent yet requires consent, so it can never allow"
    services = list(catalogue.values()) if catalogue is not None and c.kind != "data" else None
    peers = (
        [(n, p) for n, ps in members.items() if n != bundle.node for p in ps] if members is not None else None
    )
    if c.kind == "clue":
        yield from _clue_unreachable(bundle, c, members)
    elif services is not None and not any(_service_ok(c, s) for s in services):
        yield "no catalogued service satisfies its service conditions"
    elif peers is not None and not any(_peer_ok(c, n, p) for n, p in peers):
        yield "no federation member satisfies its peer conditions"
    elif (
        services is not None
        and peers is not None
        and c.owned_by_peer is not None
        and not any(
            _service_ok(c, s) and _peer_ok(c, n, p) and s.owner.startswith(p) == c.owned_by_peer
            for s in services
            for n, p in peers
        )
    ):
        yield f"no catalogued service and member pair satisfies owned_by_peer={c.owned_by_peer} and the rest"


def _clue_unreachable(
    bundle: Bundle, c: Conditions, members: Mapping[str, tuple[str, ...]] | None
) -> Iterator[str]:
    """A clue travels to the member owning its region: an inbound clue rule's regions must lie in
    this node's jurisdiction, an outbound one's in some peer's it may match."""
    if members is None or c.regions is None:
        return
    peers = [(n, p) for n, ps in members.items() if n != bundle.node for p in ps if _peer_ok(c, n, p)]
    owned = {
        "inbound": list(members.get(bundle.node, ())),
        "outbound": [p for _, p in peers],
    }
    for direction in sorted(c.directions):
        if not any(_overlap(r, p) for r in c.regions for p in owned[direction]):
            where = "this node's" if direction == "inbound" else "a matching peer's"
            yield f"no region of {list(c.regions)} lies in {where} jurisdiction: no {direction} clue matches"


def _overlap(a: str, b: str) -> bool:
    return a.startswith(b) or b.startswith(a)


def _service_ok(c: Conditions, s: CatalogueService) -> bool:
    return (
        (c.services is None or c.services.matches(s.id))
        and (c.service_owners is None or s.owner.startswith(c.service_owners))
        and (c.service_departments is None or s.department in c.service_departments)
    )


def _peer_ok(c: Conditions, node: str, prefix: str) -> bool:
    return (c.peer_nodes is None or node in c.peer_nodes) and (
        c.peer_jurisdictions is None or prefix.startswith(c.peer_jurisdictions)
    )


def _shadowed(bundle: Bundle) -> Iterator[Finding]:
    """An allow under a broader deny never allows; a deny under an earlier broader deny never
    decides (the first matching deny in bundle order is the deciding rule)."""
    denies = [r for r in bundle.rules if r.effect == "deny"]
    for rule in bundle.rules:
        for deny in denies:
            if deny is rule or not covers(deny.when, rule.when):
                continue
            if rule.effect == "allow" or deny.order < rule.order:
                yield Finding(
                    bundle.source,
                    rule.line,
                    f"rule {rule.id}",
                    "shadowed",
                    f"every input it matches is denied first by the broader deny {deny.id} "
                    f"(line {deny.line})",
                )
                break
