"""Decisions: deny overrides allow, default deny, obligations, consent, quotas, the index."""

from __future__ import annotations

import dataclasses
import textwrap

from hypothesis import given, settings
from hypothesis import strategies as st

from core.clock import FakeClock
from policies.engine import PolicyEngine, local_time, new_decision_id
from policies.explain import explain
from policies.model import PolicyInput
from policies.schema import parse_bundle

MONDAY_10H = 1_767_578_400_000  # 2026-01-05T10:00+08:00

BUNDLE = textwrap.dedent(
    """\
    node: shanghai
    revision: "3"
    quotas:
      - {id: q-peer, per: peer, direction: inbound, per_minute: 60, burst: 2}
    rules:
      - id: out-agreed
        effect: allow
        description: agreed matters
        when:
          direction: outbound
          service: {owned_by_peer: true, ids: [js.a, js.b, "zj.*"]}
          purpose: service-delivery
          role: clerk
        obligations: {require_consent: true, strip: [home]}
      - id: out-mask
        effect: allow
        when: {direction: outbound, service: {ids: js.a}, role: clerk}
        obligations: {mask: [phone], log: info}
      - id: out-second
        effect: allow
        when: {direction: outbound, service: {ids: js.a}, fields: {any: [family]}}
        obligations: {require_second_approval: true, log: warning}
      - id: out-no-b-to-js-at-night
        effect: deny
        description: closed at night
        when: {direction: outbound, service: {ids: js.b}, time: {from: "20:00", to: "06:00"}}
        obligations: {log: error}
      - id: in-own
        effect: allow
        when: {direction: inbound, peer: {jurisdictions: ["32", "33"]}, service: {owners: "31"}}
      - id: in-deny-x
        effect: deny
        when: {direction: inbound, service: {departments: 上海市公安局}, fields: {any: [x]}}
    """
)


def engine(clock: FakeClock | None = None, text: str = BUNDLE) -> PolicyEngine:
    return PolicyEngine(parse_bundle(text.encode(), "b.yaml"), clock or FakeClock())


def inp(**changes: object) -> PolicyInput:
    base = PolicyInput(
        direction="outbound",
        peer_node="jiangsu",
        peer_jurisdiction="32",
        service_id="js.a",
        service_owner="320000",
        service_department="江苏省公安厅",
        purpose="service-delivery",
        role="clerk",
        fields=frozenset({"phone", "home", "name"}),
        consent=True,
        at_ms=MONDAY_10H,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_matching_allows_merge_their_obligations() -> None:
    d = engine().decide(inp())
    assert d.allowed and d.code == "allowed"
    assert d.rule_ids == ("out-agreed", "out-mask")
    assert d.deciding_rule == "out-agreed"
    assert d.reason == "allowed by rule out-agreed (line 6): agreed matters"
    o = d.obligations
    assert (o.strip, o.mask, o.require_consent, o.log_level) == (
        frozenset({"home"}),
        frozenset({"phone"}),
        True,
        "info",
    )
    assert not o.require_second_approval
    d2 = engine().decide(inp(fields=frozenset({"family"})))
    assert d2.obligations.require_second_approval and d2.obligations.log_level == "warning"


def test_nothing_applicable_is_the_default_deny() -> None:
    d = engine().decide(inp(service_id="sh.x", service_owner="310000"))
    assert (d.allowed, d.code, d.deciding_rule, d.rule_ids) == (False, "default_deny", "", ())
    assert "default deny" in d.reason


def test_owned_by_peer_keeps_a_matter_from_going_to_a_member_that_does_not_own_it() -> None:
    d = engine().decide(inp(service_id="js.b", peer_node="zhejiang", peer_jurisdiction="33"))
    assert not d.allowed and d.code == "default_deny"


def test_deny_overrides_allow_in_its_time_window() -> None:
    e = engine()
    night = MONDAY_10H + 11 * 3_600_000  # 21:00 local
    d = e.decide(inp(service_id="js.b", at_ms=night))
    assert (d.allowed, d.code, d.deciding_rule) == (False, "rule_deny", "out-no-b-to-js-at-night")
    assert d.rule_ids == ("out-agreed", "out-no-b-to-js-at-night")
    assert d.obligations.log_level == "error" and d.reason.endswith("closed at night")
    assert e.decide(inp(service_id="js.b")).allowed


def test_required_consent_turns_an_allow_into_a_deny() -> None:
    d = engine().decide(inp(consent=False))
    assert (d.allowed, d.code, d.deciding_rule) == (False, "consent_required", "out-agreed")


def test_conditions_on_role_purpose_and_fields() -> None:
    e = engine()
    assert e.decide(inp(role="operator", service_id="js.b")).code == "default_deny"
    assert e.decide(inp(purpose="audit", service_id="js.b")).code == "default_deny"
    inbound = inp(
        direction="inbound", service_id="sh.h", service_owner="310000", service_department="上海市公安局"
    )
    assert e.decide(inbound).allowed
    assert e.decide(dataclasses.replace(inbound, fields=frozenset({"x"}))).deciding_rule == "in-deny-x"
    assert e.decide(dataclasses.replace(inbound, peer_jurisdiction="34")).code == "default_deny"


def test_quota_burst_then_refill_with_the_injected_clock() -> None:
    clock = FakeClock()
    e = engine(clock)
    inbound = inp(direction="inbound", service_id="sh.h", service_owner="310000", service_department="d")
    assert [e.decide(inbound).allowed for _ in range(3)] == [True, True, False]
    refused = e.decide(inbound)
    assert (refused.code, refused.deciding_rule) == ("quota", "q-peer")
    assert refused.reason.startswith("quota q-peer exhausted for peer jiangsu")
    other_peer = dataclasses.replace(inbound, peer_node="zhejiang", peer_jurisdiction="33")
    assert e.decide(other_peer).allowed  # buckets are per peer
    clock.advance(1.0)  # 60/min refills one token a second
    assert e.decide(inbound).allowed
    assert not e.decide(inbound).allowed


def test_denied_decisions_spend_no_quota() -> None:
    e = engine()
    denied = inp(
        direction="inbound",
        service_id="sh.h",
        service_owner="310000",
        service_department="上海市公安局",
        fields=frozenset({"x"}),
    )
    for _ in range(5):
        assert e.decide(denied).code == "rule_deny"
    assert e.decide(dataclasses.replace(denied, fields=frozenset())).allowed


def test_explain_spends_no_quota() -> None:
    e = engine()
    inbound = inp(direction="inbound", service_id="sh.h", service_owner="310000", service_department="d")
    for _ in range(5):
        assert explain(e, inbound).decision.allowed
    assert e.decide(inbound).allowed


def test_decisions_have_unique_ids_and_the_bundle_revision() -> None:
    e = engine()
    ids = {e.decide(inp()).decision_id for _ in range(200)}
    assert len(ids) == 200
    assert e.decide(inp()).bundle_revision == e.bundle.full_revision


def test_local_time_uses_the_bundle_offset() -> None:
    assert local_time(MONDAY_10H, 480) == (0, 600)
    assert local_time(MONDAY_10H - 11 * 3_600_000, 480) == (6, 23 * 60)  # Sunday 23:00


def test_explain_names_the_failed_conditions() -> None:
    text = explain(engine(), inp(role="operator", service_id="js.b")).render()
    assert "decision: DENY (default_deny)" in text
    assert "role 'operator' is not one of clerk" in text
    assert "service 'js.b' is not one of js.a" in text


names = st.sampled_from
inputs = st.builds(
    PolicyInput,
    direction=names(["outbound", "inbound"]),
    peer_node=names(["jiangsu", "zhejiang", "anhui"]),
    peer_jurisdiction=names(["32", "33", "34", "3205"]),
    service_id=names(["js.a", "js.b", "zj.c", "zj.d.e", "sh.h", "ah.z"]),
    service_owner=names(["310000", "320000", "320500", "330000", "340000"]),
    service_department=names(["上海市公安局", "d"]),
    purpose=names(["service-delivery", "audit"]),
    role=names(["clerk", "operator"]),
    fields=st.frozensets(names(["phone", "home", "family", "x"])),
    consent=st.booleans(),
    at_ms=st.integers(MONDAY_10H - 7 * 86_400_000, MONDAY_10H + 7 * 86_400_000),
)


@settings(max_examples=150, deadline=None)
@given(inputs)
def test_the_index_finds_exactly_the_rules_a_full_scan_finds(i: PolicyInput) -> None:
    e = engine()
    ex = explain(e, i)
    assert ex.decision.rule_ids == ex.matched_ids
    any_deny = any(t.matched and t.effect == "deny" for t in ex.traces)
    any_allow = any(t.matched and t.effect == "allow" for t in ex.traces)
    if any_deny or not any_allow:
        assert not ex.decision.allowed


def test_decision_ids_are_unique_and_sort_by_the_time_decided() -> None:
    """Time first, so each new id lands at the end of the decision log's key index; the random
    rest keeps two decisions of one millisecond (on two replicas) apart."""
    at = [1_700_000_000_000 + step for step in (0, 0, 1, 999, 86_400_000)]
    ids = [new_decision_id(ms) for ms in at]
    assert len(set(ids)) == len(ids)
    assert [i[:15] for i in ids] == sorted(i[:15] for i in ids)
    assert ids[2:] == sorted(ids[2:]) and all(len(i) <= 40 for i in ids)
