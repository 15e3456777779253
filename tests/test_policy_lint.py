"""Semantic lint: unknown ids, unreachable rules, rules shadowed by a broader deny."""

from __future__ import annotations

import dataclasses
import textwrap

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.catalogue import CatalogueService
from policies.coverage import covers
from policies.engine import dynamic_match, local_time
from policies.index import static_key, static_match
from policies.lint import lint_bundle
from policies.model import PolicyInput
from policies.schema import parse_bundle
from policies.spec import Conditions, FieldCondition, ServiceSelector, TimeWindow

CATALOGUE = {
    s.id: s
    for s in (
        CatalogueService("sh.pension.transfer", "310000", "上海市人力资源和社会保障局"),
        CatalogueService("sh.hukou.migration", "310000", "上海市公安局"),
        CatalogueService("js.social-card.apply", "320000", "江苏省人力资源和社会保障厅"),
        CatalogueService("js.suzhou.sole-proprietor", "320500", "苏州市市场监督管理局"),
    )
}
MEMBERS = {"shanghai": ("31",), "jiangsu": ("32",), "zhejiang": ("33",)}
DATA = frozenset({"sh.health-code", "js.nucleic-acid"})


def lint(rules: str) -> list[str]:
    text = 'node: shanghai\nrevision: "1"\n' + textwrap.dedent(rules)
    return [
        f"{f.code} {f.subject}"
        for f in lint_bundle(parse_bundle(text.encode(), "b.yaml"), CATALOGUE, MEMBERS, DATA)
    ]


def test_a_clean_bundle_has_no_findings() -> None:
    assert (
        lint(
            """\
            rules:
              - id: a
                effect: allow
                when: {direction: outbound, service: {ids: "js.*", owned_by_peer: true}}
              - id: b
                effect: allow
                when: {direction: inbound, service: {owners: "31"}, peer: {nodes: jiangsu}}
              - {id: c, effect: deny, when: {direction: inbound, service: {ids: sh.hukou.migration}}}
            """
        )
        == []
    )


def test_unknown_services_and_peers() -> None:
    findings = lint(
        """\
        rules:
          - {id: a, effect: allow, when: {direction: inbound, service: {ids: [sh.pension.transfr]}}}
          - {id: b, effect: allow, when: {direction: inbound, service: {ids: ["ah.*"]}}}
          - {id: c, effect: allow, when: {direction: inbound, peer: {nodes: [jaingsu, shanghai]}}}
        quotas:
          - {id: q, per: service, services: [sh.nope], per_minute: 1, burst: 1}
        """
    )
    assert findings == [
        "unknown_service rule a",
        "unknown_service rule b",
        "unknown_peer rule c",
        "unknown_peer rule c",
        "unknown_service quota q",
    ]


def test_data_resources_are_known_to_data_rules_and_quotas_only() -> None:
    """A data rule names data resources and a quota may count data calls: both are checked
    against the catalogues' [[data]] ids, so a typo there is caught and a real id is not
    called unknown; a matter rule naming a data resource is still a finding."""
    findings = lint(
        """\
        rules:
          - {id: a, effect: allow, when: {direction: inbound, kind: data, service: {ids: [sh.health-code]}}}
          - {id: b, effect: allow, when: {direction: inbound, kind: data, service: {ids: [sh.health-cod]}}}
          - {id: c, effect: allow, when: {direction: inbound, service: {ids: [sh.health-code]}}}
        quotas:
          - {id: q, per: service, services: [js.nucleic-acid, js.social-card.apply], per_minute: 1, burst: 1}
          - {id: r, per: service, services: ["js.nucleic*"], per_minute: 1, burst: 1}
          - {id: s, per: service, services: [js.nucleic-acd], per_minute: 1, burst: 1}
        """
    )
    assert findings == ["unknown_service rule b", "unknown_service rule c", "unknown_service quota s"]


def test_unreachable_rules() -> None:
    findings = lint(
        """\
        rules:
          - {id: a, effect: allow, when: {direction: inbound, fields: {all: [phone], none: [phone]}}}
          - {id: b, effect: allow, when: {direction: inbound, fields: {all: [a, b], only: [a]}}}
          - id: c
            effect: allow
            when: {direction: inbound, consent: false}
            obligations: {require_consent: true}
          - {id: d, effect: allow, when: {direction: inbound, service: {owners: "34"}}}
          - {id: e, effect: allow, when: {direction: inbound, peer: {jurisdictions: "35"}}}
          - id: f
            effect: allow
            when: {direction: outbound, service: {ids: sh.pension.transfer, owned_by_peer: true}}
          - {id: g, effect: allow, when: {direction: inbound, service: {departments: 上海市公案局}}}
        """
    )
    assert findings == [f"unreachable rule {r}" for r in "abcdefg"]


def test_an_allow_under_a_broader_deny_is_shadowed() -> None:
    findings = lint(
        """\
        rules:
          - {id: narrow, effect: allow, when: {direction: inbound, service: {ids: js.social-card.apply},
                                               peer: {nodes: jiangsu}, purpose: service-delivery}}
          - {id: broad, effect: deny, when: {direction: inbound, service: {ids: "js.*"}}}
          - {id: other, effect: allow, when: {direction: [inbound, outbound], service: {ids: "js.*"}}}
        """
    )
    assert findings == ["shadowed rule narrow"]


def test_a_later_narrower_deny_never_decides_but_an_earlier_one_does() -> None:
    findings = lint(
        """\
        rules:
          - {id: first, effect: deny, when: {direction: inbound, service: {ids: sh.hukou.migration}}}
          - {id: broad, effect: deny, when: {direction: inbound}}
          - {id: late, effect: deny, when: {direction: inbound, service: {ids: sh.pension.transfer}}}
        """
    )
    assert findings == ["shadowed rule late"]


def test_time_and_field_conditions_are_compared_conservatively() -> None:
    findings = lint(
        """\
        rules:
          - id: evening
            effect: allow
            when: {direction: inbound, time: {days: mon, from: "18:00", to: "20:00"}, fields: {all: [x, y]}}
          - id: closed
            effect: deny
            when: {direction: inbound, time: {days: weekdays, from: "17:00", to: "08:00"}, fields: {any: [y]}}
          - id: lunch
            effect: allow
            when: {direction: inbound, time: {from: "12:00", to: "13:00"}}
        """
    )
    assert findings == ["shadowed rule evening"]


# --- soundness of the coverage check that "shadowed" rests on ---------------------------

WORDS = st.sampled_from(["a", "b", "c"])
WINDOWS = st.builds(
    TimeWindow,
    days=st.frozensets(st.integers(0, 6), min_size=1),
    start_min=st.sampled_from([0, 480, 720, 1080]),
    end_min=st.sampled_from([60, 600, 1020, 1440]),
)


def conditions(absent: int) -> st.SearchStrategy[Conditions]:
    """Random conditions; each one is absent with weight ``absent`` against 1, so a sparse
    (broad) rule can be drawn against a dense (narrow) one and coverage actually occurs."""

    def maybe(s: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
        return st.one_of(*[st.none()] * absent, s)

    sets = maybe(st.frozensets(WORDS, min_size=1))
    prefixes = maybe(st.lists(st.sampled_from(["3", "31", "32", "320"]), min_size=1, max_size=2).map(tuple))
    selectors = st.lists(st.sampled_from(["a", "b", "a*", "b?", "*"]), min_size=1).map(
        lambda ids: ServiceSelector.of(tuple(ids))
    )
    return st.builds(
        Conditions,
        directions=st.frozensets(st.sampled_from(["outbound", "inbound"]), min_size=1),
        peer_nodes=sets,
        peer_jurisdictions=prefixes,
        services=maybe(selectors),
        service_owners=prefixes,
        service_departments=sets,
        owned_by_peer=maybe(st.booleans()),
        purposes=sets,
        roles=sets,
        consent=maybe(st.booleans()),
        fields=maybe(st.builds(FieldCondition, any=sets, all=sets, none=sets, only=sets)),
        time=maybe(st.lists(WINDOWS, min_size=1, max_size=2).map(tuple)),
    )


INPUTS = st.builds(
    PolicyInput,
    direction=st.sampled_from(["outbound", "inbound"]),
    peer_node=WORDS,
    peer_jurisdiction=st.sampled_from(["31", "32", "3205"]),
    service_id=st.sampled_from(["a", "ab", "b", "bc", "c"]),
    service_owner=st.sampled_from(["310000", "320000", "320500"]),
    service_department=WORDS,
    purpose=WORDS,
    role=WORDS,
    fields=st.frozensets(WORDS),
    consent=st.booleans(),
    at_ms=st.integers(0, 14 * 86_400_000),
)


# Built once: a strategy made inside ``pairs`` would be built and validated anew for every
# example, which took most of this test's time.
SPARSE, DENSE = conditions(absent=2), conditions(absent=1)


@st.composite
def pairs(draw: st.DrawFn) -> tuple[Conditions, Conditions]:
    """A rule and a second one that copies some of its conditions and redraws the rest,
    so that "covers" is often true and the redrawn conditions are what gets tested."""
    a, other = draw(SPARSE), draw(DENSE)
    changed = {f.name: getattr(other, f.name) for f in dataclasses.fields(Conditions) if draw(st.booleans())}
    return a, dataclasses.replace(a, **changed)


def matches(c: Conditions, i: PolicyInput) -> bool:
    weekday, minute = local_time(i.at_ms, 0)
    return static_match(c, static_key(i)) and dynamic_match(c, i, weekday, minute)


@settings(max_examples=200, deadline=None)
@given(pairs(), st.lists(INPUTS, min_size=1, max_size=40))
def test_covers_never_claims_a_rule_it_does_not_cover(
    pair: tuple[Conditions, Conditions], probes: list[PolicyInput]
) -> None:
    a, b = pair
    if covers(a, b):
        assert all(matches(a, i) for i in probes if matches(b, i))


@given(WINDOWS, WINDOWS, st.integers(0, 6), st.integers(0, 1439))
def test_window_within_is_sound(inner: TimeWindow, outer: TimeWindow, day: int, minute: int) -> None:
    if inner.start_min != inner.end_min and outer.start_min != outer.end_min and inner.within(outer):
        assert not inner.contains(day, minute) or outer.contains(day, minute)
