"""Semantic lint: unknown ids, unreachable rules, rules shadowed by a broader deny."""

from __future__ import annotations

import textwrap

from policies.catalogue import CatalogueService
from policies.lint import lint_bundle
from policies.schema import parse_bundle

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


def lint(rules: str) -> list[str]:
    text = 'node: shanghai\nrevision: "1"\n' + textwrap.dedent(rules)
    return [
        f"{f.code} {f.subject}"
        for f in lint_bundle(parse_bundle(text.encode(), "b.yaml"), CATALOGUE, MEMBERS)
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
