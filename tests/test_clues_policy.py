"""Clues on the policy-checked route (docs/policies.md "Clues", docs/protocol.md section 13): a
clue the source's policy refuses never leaves and the clerk is told why; a clue the receiver's
policy refuses gets a signed REJECTED receipt with the policy's code, is not stored, and the
source shows the refusal. The bundle language's clue conditions are checked like the rest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlmodel import Session, select

from core.clock import FakeClock
from core.errors import ConfigError
from node.models import ClueCase, ClueSent, ClueTask, OutboxEntry
from policies.decision_log import PolicyDecisionRow
from policies.engine import PolicyEngine
from policies.lint import lint_bundle
from policies.model import clue_input
from policies.schema import parse_bundle
from simulations.local_federation import PROVINCES
from tests.support.federation import Federation, allow_all_specs
from tests.test_clues_federation import SteppedClock, clue_body, wait_steps

SHANGHAI = """\
node: shanghai
revision: clue-test
rules:
  - id: sh-out-clues
    effect: allow
    when:
      direction: outbound
      kind: clue
      peer: {nodes: [jiangsu]}
      clue: {regions: ["32"]}
  - id: sh-out-no-finance-clues
    effect: deny
    description: financial clues go through the regulators' own channel
    when:
      direction: outbound
      kind: clue
      clue: {domains: [finance]}
"""

JIANGSU = """\
node: jiangsu
revision: clue-test
rules:
  - id: js-in-clues
    effect: allow
    when:
      direction: inbound
      kind: clue
      clue: {regions: ["32"]}
  - id: js-in-no-safety-from-sh
    effect: deny
    description: work-safety clues from Shanghai arrive through the national system
    when:
      direction: inbound
      kind: clue
      peer: {nodes: [shanghai]}
      clue: {domains: [work_safety]}
  - id: js-in-farmland-not-by-report
    effect: deny
    description: farmland clues come from the national land survey, not from reports
    when:
      direction: inbound
      kind: clue
      clue: {domains: [grain_farmland], sources: [citizen_report]}
"""


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    specs = [s for s in allow_all_specs(tmp_path, PROVINCES) if s.node_id in ("shanghai", "jiangsu")]
    for spec in specs:
        assert spec.bundle is not None
        spec.bundle.write_text(SHANGHAI if spec.node_id == "shanghai" else JIANGSU)
    f = await Federation(tmp_path, specs, clock=SteppedClock()).start()
    try:
        yield f
    finally:
        await f.close()


def decisions(s: Session) -> list[PolicyDecisionRow]:
    return list(s.exec(select(PolicyDecisionRow).order_by(PolicyDecisionRow.at_ms)).all())


async def test_a_clue_the_sources_policy_refuses_never_leaves(fed: Federation) -> None:
    sh = fed.nodes["shanghai"]
    body = clue_body(domains=["food_drug", "finance"])
    status, problem = await fed.call(
        "shanghai", "POST", "/api/v1/clues", json=body, headers={"Idempotency-Key": "deny-1"}
    )
    assert status == 403, problem
    assert problem["code"] == "rule_deny" and problem["rule_id"] == "sh-out-no-finance-clues"
    assert "financial clues" in problem["detail"] and problem["decision_id"].startswith("pd-")

    def left(s: Session) -> tuple[int, int]:
        return len(s.exec(select(ClueSent)).all()), len(s.exec(select(OutboxEntry)).all())

    assert await sh.db.run(left) == (0, 0)
    logged = await sh.db.run(decisions)
    # one decision per domain, in the log with the clue's region and domain, no personal data
    assert [(d.service_id, d.service_owner, d.service_department, d.allowed) for d in logged] == [
        ("clue", "320582", "food_drug", True),
        ("clue", "320582", "finance", False),
    ]
    assert logged[1].decision_id == problem["decision_id"] and logged[1].peer_node == "jiangsu"

    # The same clerk's allowed clue still goes.
    status, created = await fed.call(
        "shanghai", "POST", "/api/v1/clues", json=clue_body(), headers={"Idempotency-Key": "ok-1"}
    )
    assert status == 201 and created["owner_node"] == "jiangsu", created


async def test_a_clue_the_receivers_policy_refuses_is_rejected_with_its_code_and_not_stored(
    fed: Federation,
) -> None:
    js = fed.nodes["jiangsu"]
    body = clue_body(domains=["food_drug", "work_safety"])
    status, created = await fed.call(
        "shanghai", "POST", "/api/v1/clues", json=body, headers={"Idempotency-Key": "deny-2"}
    )
    assert status == 201, created
    view = await wait_steps(fed, created["id"], 2)
    assert [h["step"] for h in view["history"]] == ["submitted", "refused"]
    assert view["history"][1]["note"].startswith("rule_deny: ")
    (receipt,) = view["receipts"]
    assert (receipt["outcome"], receipt["reason_code"]) == ("rejected", "rule_deny")
    assert "js-in-no-safety-from-sh" in receipt["reason"]

    def kept(s: Session) -> tuple[int, int]:
        return len(s.exec(select(ClueCase)).all()), len(s.exec(select(ClueTask)).all())

    assert await js.db.run(kept) == (0, 0)
    logged = [d for d in await js.db.run(decisions) if d.direction == "inbound"]
    assert [(d.service_department, d.allowed, d.deciding_rule) for d in logged][-1] == (
        "work_safety",
        False,
        "js-in-no-safety-from-sh",
    )


def test_clue_rules_take_no_application_conditions_and_only_the_log_obligation() -> None:
    bad = b"""\
node: shanghai
revision: r
rules:
  - id: a
    effect: allow
    when: {direction: outbound, kind: clue, service: {ids: [x]}, purpose: [p]}
    obligations: {strip: [name]}
  - id: b
    effect: allow
    when: {direction: outbound, clue: {domains: [finance]}}
  - id: c
    effect: allow
    when: {direction: inbound, kind: memo}
"""
    with pytest.raises(ConfigError) as e:
        parse_bundle(bad, "bad.yaml")
    text = "\n".join(e.value.extra["issues"])
    assert len(e.value.extra["issues"]) == 5, text
    for where in (
        "rules[0].when.service",
        "rules[0].when.purpose",
        "rules[0].obligations.strip",
        "rules[1].when.clue",
        "rules[2].when.kind",
    ):
        assert where in text, text


def test_application_rules_never_admit_a_clue_and_deny_overrides() -> None:
    apps = "rules:\n  - {id: apps, effect: allow, when: {direction: inbound}}\n"
    bundle = parse_bundle(JIANGSU.replace("rules:\n", apps).encode(), "js.yaml")
    engine = PolicyEngine(bundle, FakeClock())
    ask = clue_input("inbound", "shanghai", "31", "food_drug", "320582", "node", 0)
    assert (engine.decide(ask).deciding_rule, engine.decide(ask).rule_ids) == (
        "js-in-clues",
        ("js-in-clues",),
    )
    outside = clue_input("inbound", "shanghai", "31", "food_drug", "310115", "node", 0)
    assert engine.decide(outside).code == "default_deny"
    safety = clue_input("inbound", "shanghai", "31", "work_safety", "320582", "node", 0)
    assert (engine.decide(safety).code, engine.decide(safety).deciding_rule) == (
        "rule_deny",
        "js-in-no-safety-from-sh",
    )


def test_lint_flags_a_clue_rule_for_a_region_no_clue_can_reach() -> None:
    text = JIANGSU.replace('clue: {regions: ["32"]}', 'clue: {regions: ["31"]}')
    members = {"jiangsu": ("32",), "shanghai": ("31",)}
    findings = lint_bundle(parse_bundle(text.encode(), "js.yaml"), None, members)
    assert [(f.subject, f.code) for f in findings] == [("rule js-in-clues", "unreachable")]
    assert lint_bundle(parse_bundle(JIANGSU.encode(), "js.yaml"), None, members) == []


def test_per_peer_quotas_count_clues_and_per_service_quotas_do_not() -> None:
    quotas = """\
quotas:
  - {id: per-peer, per: peer, direction: inbound, per_minute: 1, burst: 2}
  - {id: per-service, per: service, direction: inbound, per_minute: 1, burst: 1}
"""
    bundle = parse_bundle((quotas + JIANGSU).encode(), "q.yaml")
    engine = PolicyEngine(bundle, FakeClock())
    ask = clue_input("inbound", "shanghai", "31", "food_drug", "320582", "node", 0)
    # The per-service bucket (burst 1) would refuse the second; the per-peer one refuses the third.
    assert [engine.decide(ask).code for _ in range(3)] == ["allowed", "allowed", "quota"]
    assert engine.decide(ask).deciding_rule == "per-peer"


def test_a_clue_rule_can_match_the_clues_source() -> None:
    engine = PolicyEngine(parse_bundle(JIANGSU.encode(), "js.yaml"), FakeClock())
    report = clue_input("inbound", "shanghai", "31", "grain_farmland", "320582", "node", 0, "citizen_report")
    national = clue_input("inbound", "shanghai", "31", "grain_farmland", "320582", "node", 0, "national")
    assert (engine.decide(report).code, engine.decide(report).deciding_rule) == (
        "rule_deny",
        "js-in-farmland-not-by-report",
    )
    assert engine.decide(national).allowed
    with pytest.raises(ConfigError) as e:
        parse_bundle(
            JIANGSU.replace("sources: [citizen_report]", "sources: [Citizen Report]").encode(), "b.yaml"
        )
    assert "rules[2].when.clue.sources" in str(e.value.extra["issues"])


async def test_the_receiver_decides_on_the_source_the_clue_carries(fed: Federation) -> None:
    """The gate passes the clue's own source (not the sending node) to the rule."""
    report = clue_body(domains=["grain_farmland"])
    status, created = await fed.call(
        "shanghai", "POST", "/api/v1/clues", json=report, headers={"Idempotency-Key": "src-1"}
    )
    assert status == 201, created
    view = await wait_steps(fed, created["id"], 2)
    assert "js-in-farmland-not-by-report" in view["receipts"][0]["reason"]
    national = {**clue_body(domains=["grain_farmland"]), "source": "national"}
    status, created = await fed.call(
        "shanghai", "POST", "/api/v1/clues", json=national, headers={"Idempotency-Key": "src-2"}
    )
    assert status == 201, created
    view = await wait_steps(fed, created["id"], 2)
    assert view["history"][1]["step"] == "dispatched", view["history"]
