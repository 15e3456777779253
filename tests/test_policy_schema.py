"""Bundle schema: every mistake is an error naming file, line and field, never a silent rule."""

from __future__ import annotations

import textwrap

import pytest

from core.errors import ConfigError
from policies.schema import parse_bundle
from policies.spec import Bundle

HEAD = 'node: shanghai\nrevision: "7"\n'


def parse(text: str) -> Bundle:
    return parse_bundle((HEAD + textwrap.dedent(text)).encode(), "b.yaml")


def issues_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse(text)
    assert err.value.code == "bundle_invalid"
    issues: list[str] = err.value.extra["issues"]
    return issues


def test_a_valid_rule_keeps_its_line_and_conditions() -> None:
    b = parse(
        """\
        rules:
          - id: r1
            effect: allow
            when:
              direction: [outbound, inbound]
              peer: {nodes: jiangsu, jurisdictions: ["32", 3205]}
              service: {ids: [js.a, "js.suzhou.*"], owners: "32", departments: 江苏省公安厅}
              purpose: service-delivery
              fields: {any: [phone], none: [id_photo]}
              time: {days: [mon, weekend], from: "08:30", to: "17:30"}
            obligations: {strip: [a], mask: phone, require_consent: true, log: warning}
        """
    )
    (rule,) = b.rules
    assert rule.line == 4
    c = rule.when
    assert c.peer_jurisdictions == ("32", "3205")
    assert c.services is not None and c.services.matches("js.suzhou.x") and not c.services.matches("js.b")
    assert c.time is not None and c.time[0].days == frozenset({0, 5, 6})
    assert (c.time[0].start_min, c.time[0].end_min) == (510, 1050)  # not YAML 1.1's sexagesimal 1050
    assert rule.obligations.mask == frozenset({"phone"}) and rule.obligations.log_level == "warning"
    assert b.full_revision.startswith("7+") and b.utc_offset_min == 480


def test_typos_are_errors_with_file_line_and_field() -> None:
    issues = issues_of(
        """\
        rules:
          - id: r1
            effect: allow
            when:
              direction: outbund
              purpose: yes
              peer: {nodes: [jiangsu], jurisdiction: ["32"]}
          - id: r2
            effect: permit
            when: {direction: inbound, time: {from: "17:30", to: "17:30"}}
        """
    )
    assert issues == [
        "b.yaml:7: rules[0].when.direction: 'outbund' is neither outbound nor inbound",
        "b.yaml:8: rules[0].when.purpose: expected a non-empty string",
        "b.yaml:9: rules[0].when.peer.jurisdiction: unknown key 'jurisdiction'; expected one of: "
        "jurisdictions, nodes",
        "b.yaml:11: rules[1].effect: 'permit' is neither allow nor deny",
        "b.yaml:12: rules[1].when.time[0]: the window is empty (from equals to, or starts at 24:00)",
    ]


def test_the_error_message_names_the_first_issue_and_the_field() -> None:
    with pytest.raises(ConfigError) as err:
        parse("rules:\n  - {id: r1, effect: allow, when: {direction: outbound, role: [clerk, Clerk!]}}\n")
    assert err.value.field == "rules[0].when.role[1]"
    assert str(err.value).startswith("bundle_invalid: b.yaml:4:")


def test_duplicate_keys_and_duplicate_ids_are_refused() -> None:
    issues = issues_of(
        """\
        rules:
          - id: r1
            effect: allow
            effect: deny
            when: {direction: inbound}
          - {id: r1, effect: deny, when: {direction: inbound}}
        quotas:
          - {id: r1, per: peer, per_minute: 10, burst: 2}
        """
    )
    assert "b.yaml:6: rules[0].effect: duplicate key 'effect'" in issues
    assert "b.yaml:8: rule r1: id already used on line 4" in issues
    assert "b.yaml:10: quota r1: id already used on line 4" in issues


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("{direction: inbound, purpose: []}", "an empty list matches nothing"),
        ("{direction: inbound, peer: {}}", "give nodes or jurisdictions"),
        ("{direction: inbound, peer: {jurisdictions: ['3x']}}", "does not match"),
        ("{direction: inbound, fields: {some: [a]}}", "unknown key 'some'"),
        ("{direction: inbound, consent: maybe}", "expected true or false"),
        ("{direction: inbound, time: {days: [funday], from: '08:00', to: '09:00'}}", "'funday' is not a day"),
        ("{direction: inbound, time: {from: '8:00', to: '09:00'}}", "is not a time like 08:30"),
        ("{purpose: x}", "missing required key 'direction'"),
    ],
)
def test_condition_mistakes(snippet: str, expected: str) -> None:
    issues = issues_of(f"rules:\n  - {{id: r1, effect: allow, when: {snippet}}}\n")
    assert any(expected in i for i in issues), issues


def test_deny_rules_take_only_the_log_obligation() -> None:
    issues = issues_of(
        "rules:\n  - {id: d, effect: deny, when: {direction: inbound},\n"
        "     obligations: {mask: phone, log: info}}\n"
    )
    assert issues == [
        "b.yaml:5: rules[0].obligations.mask: a deny rule sends nothing, so it takes only the log obligation"
    ]


def test_a_field_cannot_be_both_stripped_and_masked() -> None:
    issues = issues_of(
        "rules:\n  - {id: a, effect: allow, when: {direction: inbound},\n"
        "     obligations: {strip: [p], mask: [p]}}\n"
    )
    assert any("both stripped and masked" in i for i in issues)


def test_quota_values_are_checked() -> None:
    issues = issues_of(
        """\
        rules: []
        quotas:
          - {id: q1, per: node, per_minute: 0, burst: 1.5}
          - {id: q2, per: peer, kind: [data, matters], per_minute: 1, burst: 1}
        """
    )
    assert any("'node' is neither peer nor service" in i for i in issues)
    assert any("quotas[1].kind: 'matters' is not one of application, clue, data" in i for i in issues)
    assert any("per_minute: must be at least" in i for i in issues)
    assert any("burst: expected an integer" in i for i in issues)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"node: [unclosed\n", "not valid YAML"),
        (b"", "the file is empty"),
        (b"\xff\xfe", "not UTF-8"),
        (b"node: shanghai\nrevision: '1'\nrules: []\nextra: 1\n", "unknown key 'extra'"),
        (b"node: shanghai\nrevision: '1'\nrules: []\ntimezone: CST\n", "is not a UTC offset"),
    ],
)
def test_file_level_errors(data: bytes, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_bundle(data, "b.yaml")
    assert expected in str(err.value)


def test_overnight_and_full_day_windows() -> None:
    b = parse(
        """\
        rules:
          - id: r
            effect: allow
            when:
              direction: inbound
              time:
                - {days: weekdays, from: "22:00", to: "06:00"}
                - {days: sun, from: "00:00", to: "24:00"}
        """
    )
    night, sunday = b.rules[0].when.time or ()
    assert night.contains(0, 23 * 60) and night.contains(0, 5 * 60) and not night.contains(0, 12 * 60)
    assert not night.contains(5, 23 * 60)
    assert sunday.contains(6, 0) and sunday.contains(6, 1439) and not sunday.contains(5, 600)
