"""The bundle test runner: a wrong expectation fails, and the case file is checked strictly."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError
from policies.cases import case_file_for, run_case_file

BUNDLE = """\
node: shanghai
revision: "1"
quotas:
  - {id: q, per: peer, direction: inbound, per_minute: 1, burst: 2}
rules:
  - id: in-own
    effect: allow
    when: {direction: inbound, service: {owners: "31"}}
    obligations: {mask: phone}
"""

CASES = """\
peers: {jiangsu: "32"}
services:
  sh.a: {owner: "310000", department: d}
defaults:
  {direction: inbound, peer: jiangsu, purpose: p, role: clerk, consent: true, at: "2026-01-05T10:00:00+08:00"}
cases:
  - name: right
    input: {service: sh.a, fields: [phone]}
    expect: {allowed: true, rule: in-own, mask: [phone], matched: [in-own]}
  - name: wrong rule
    input: {service: sh.a}
    expect: {allowed: true, rule: other}
  - name: burst
    input: {service: sh.a}
    repeat: 3
    expect: {allowed: false, rule: q, code: quota}
  - name: default deny
    input: {service: js.x, service_owner: "320000", service_department: d}
    expect: {allowed: false, rule: ""}
"""


def files(tmp_path: Path, cases: str = CASES) -> Path:
    (tmp_path / "sh.yaml").write_text(BUNDLE)
    path = case_file_for(tmp_path / "sh.yaml")
    path.write_text(cases)
    return path


def test_cases_pass_and_fail_on_their_expectations(tmp_path: Path) -> None:
    results = run_case_file(files(tmp_path), {})
    assert [r.passed for r in results] == [True, False, True, True]
    wrong = results[1]
    assert wrong.problems[0] == "rule: expected 'other', got 'in-own'"
    assert str(wrong).startswith(f"FAIL {tmp_path / 'sh.tests.yaml'}:10: wrong rule")


def test_a_case_needs_the_peer_jurisdiction_and_service_owner(tmp_path: Path) -> None:
    path = files(tmp_path, CASES.replace('peers: {jiangsu: "32"}', "peers: {}"))
    with pytest.raises(ConfigError) as err:
        run_case_file(path, {})
    assert err.value.field == "cases[0].input.peer_jurisdiction"
    assert "not given, and not known from the peers or services maps" in str(err.value)


def test_case_files_reject_unknown_keys(tmp_path: Path) -> None:
    path = files(
        tmp_path, CASES.replace("expect: {allowed: true, rule: other}", "expect: {allow: true, rule: x}")
    )
    with pytest.raises(ConfigError) as err:
        run_case_file(path, {})
    assert err.value.field == "cases[1].expect.allow"
