"""Why a decision is what it is: every rule of the bundle, matched or with the conditions
that failed, next to the decision the indexed engine takes for the same input.

Explain deliberately does NOT use the index: it walks all rules, so it doubles as a check
that the index finds exactly the rules a full scan finds (the tests compare the two).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from policies.engine import PolicyEngine, local_time
from policies.model import Decision, PolicyInput
from policies.spec import DAY_NAMES, Conditions


@dataclass(frozen=True)
class RuleTrace:
    rule_id: str
    effect: str
    line: int
    failed: tuple[str, ...]

    @property
    def matched(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class Explanation:
    decision: Decision
    traces: tuple[RuleTrace, ...]

    @property
    def matched_ids(self) -> tuple[str, ...]:
        return tuple(t.rule_id for t in self.traces if t.matched)

    def render(self) -> str:
        d = self.decision
        lines = [
            f"decision: {'ALLOW' if d.allowed else 'DENY'} ({d.code})",
            f"reason:   {d.reason}",
            f"deciding: {d.deciding_rule or '(default deny)'}",
            f"bundle:   {d.bundle_revision}",
        ]
        if d.allowed:
            o = d.obligations
            lines.append(
                "obligations: "
                f"strip={sorted(o.strip)} mask={sorted(o.mask)} consent={o.require_consent} "
                f"second_approval={o.require_second_approval} log={o.log_level}"
            )
        lines.append("rules:")
        for t in self.traces:
            status = "MATCH" if t.matched else "skip "
            lines.append(f"  {status} {t.effect:5} {t.rule_id} (line {t.line})")
            lines.extend(f"          - {why}" for why in t.failed)
        return "\n".join(lines)


def explain(engine: PolicyEngine, inp: PolicyInput) -> Explanation:
    """Explain without spending quota."""
    weekday, minute = local_time(inp.at_ms, engine.bundle.utc_offset_min)
    traces = tuple(
        RuleTrace(r.id, r.effect, r.line, tuple(failures(r.when, inp, weekday, minute)))
        for r in engine.bundle.rules
    )
    return Explanation(engine.evaluate(inp, consume=False), traces)


def _listed(values: Iterable[str]) -> str:
    return ", ".join(sorted(values))


def failures(c: Conditions, inp: PolicyInput, weekday: int, minute: int) -> list[str]:
    out = []
    if inp.direction not in c.directions:
        out.append(f"direction is {inp.direction}, rule wants {_listed(c.directions)}")
    if inp.kind != c.kind:
        out.append(f"the input is a {inp.kind}, the rule decides a {c.kind}")
    if c.domains is not None and inp.domain not in c.domains:
        out.append(f"clue domain {inp.domain!r} is not one of {_listed(c.domains)}")
    if c.regions is not None and not inp.region.startswith(c.regions):
        out.append(f"clue region {inp.region!r} is not under {_listed(c.regions)}")
    if c.peer_nodes is not None and inp.peer_node not in c.peer_nodes:
        out.append(f"peer {inp.peer_node!r} is not one of {_listed(c.peer_nodes)}")
    if c.peer_jurisdictions is not None and not inp.peer_jurisdiction.startswith(c.peer_jurisdictions):
        out.append(
            f"peer jurisdiction {inp.peer_jurisdiction!r} is not under {_listed(c.peer_jurisdictions)}"
        )
    if c.services is not None and not c.services.matches(inp.service_id):
        wanted = _listed(c.services.exact | set(c.services.patterns))
        out.append(f"service {inp.service_id!r} is not one of {wanted}")
    if c.service_owners is not None and not inp.service_owner.startswith(c.service_owners):
        out.append(f"service owner {inp.service_owner!r} is not under {_listed(c.service_owners)}")
    if c.service_departments is not None and inp.service_department not in c.service_departments:
        out.append(f"department {inp.service_department!r} is not one of {_listed(c.service_departments)}")
    if c.owned_by_peer is not None:
        owned = bool(inp.peer_jurisdiction) and inp.service_owner.startswith(inp.peer_jurisdiction)
        if owned != c.owned_by_peer:
            out.append(
                f"service owner {inp.service_owner!r} is {'' if owned else 'not '}under the peer's "
                f"jurisdiction {inp.peer_jurisdiction!r}; rule wants owned_by_peer={c.owned_by_peer}"
            )
    if c.clue_sources is not None and inp.clue_source not in c.clue_sources:
        out.append(f"clue source {inp.clue_source!r} is not one of {_listed(c.clue_sources)}")
    if c.purposes is not None and inp.purpose not in c.purposes:
        out.append(f"purpose {inp.purpose!r} is not one of {_listed(c.purposes)}")
    if c.roles is not None and inp.role not in c.roles:
        out.append(f"role {inp.role!r} is not one of {_listed(c.roles)}")
    if c.consent is not None and inp.consent != c.consent:
        out.append(f"consent is {inp.consent}, rule wants {c.consent}")
    if c.fields is not None and not c.fields.holds(inp.fields):
        out.append(_fields_failure(c, inp.fields))
    if c.time is not None and not any(w.contains(weekday, minute) for w in c.time):
        now = f"{DAY_NAMES[weekday]} {minute // 60:02d}:{minute % 60:02d}"
        out.append(f"local time {now} is outside {'; '.join(w.describe() for w in c.time)}")
    return out


def _fields_failure(c: Conditions, fields: frozenset[str]) -> str:
    f = c.fields
    assert f is not None
    if f.any is not None and f.any.isdisjoint(fields):
        return f"none of the fields {_listed(f.any)} is present"
    if f.all is not None and not f.all <= fields:
        return f"fields {_listed(f.all - fields)} are missing"
    if f.none is not None and not f.none.isdisjoint(fields):
        return f"fields {_listed(f.none & fields)} are present"
    assert f.only is not None
    return f"fields {_listed(fields - f.only)} are outside the allowed set"
