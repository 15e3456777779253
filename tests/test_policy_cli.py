"""`yrd policy` and `yrd bench policy` as an operator runs them."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from core.clock import FakeClock
from core.db import Database
from core.errors import ConfigError
from core.keys import NodeKey, save_key
from node.cli.main import main
from policies.decision_log import DecisionLog
from policies.engine import PolicyEngine
from policies.holder import PolicyHolder
from policies.model import PolicyInput
from policies.schema import load_bundle

BUNDLES = Path(__file__).resolve().parents[1] / "policies" / "bundles"


def test_policy_test_runs_the_shipped_cases(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "test"]) == 0
    assert capsys.readouterr().out.strip().endswith("passed, 0 failed")


def test_policy_test_fails_on_a_wrong_expectation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(BUNDLES / "jiangsu.yaml", tmp_path / "jiangsu.yaml")
    cases = (BUNDLES / "jiangsu.tests.yaml").read_text()
    broken = cases.replace("rule: js-in-sole-proprietor-not-agreed", "rule: js-in-own-services", 1)
    assert broken != cases
    (tmp_path / "jiangsu.tests.yaml").write_text(broken)
    assert main(["policy", "test", str(tmp_path / "jiangsu.yaml")]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "expected 'js-in-own-services', got 'js-in-sole-proprietor-not-agreed'" in out
    assert out.strip().endswith("1 failed")


def test_lint_passes_the_shipped_folder_and_reports_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policy", "lint", str(BUNDLES)]) == 0
    capsys.readouterr()
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        'node: shanghai\nrevision: "1"\nrules:\n'
        "  - {id: a, effect: allow, when: {direction: inbound, service: {ids: sh.pension.transfr}}}\n"
        "  - {id: b, effect: allow, when: {direction: inbound, purpose: [audit, Audit!]}}\n"
    )
    assert main(["policy", "lint", str(bad)]) == 1
    assert (
        capsys.readouterr().out
        == f"{bad}:5: rules[1].when.purpose[1]: 'Audit!' does not match [a-z0-9][a-z0-9_-]{{0,63}}\n"
    )
    bad.write_text(bad.read_text().replace("Audit!", "audit2"))
    assert main(["policy", "lint", str(bad)]) == 1
    assert (
        "unknown_service: rule a: service 'sh.pension.transfr' is in no catalogue" in capsys.readouterr().out
    )


def test_explain_shows_the_deciding_rule_and_why_others_skipped(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "policy",
        "explain",
        str(BUNDLES / "zhejiang.yaml"),
        "--direction",
        "inbound",
        "--peer",
        "anhui",
        "--peer-jurisdiction",
        "34",
        "--service",
        "zj.industrial-licence",
        "--at",
        "2026-01-05T10:00:00+08:00",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "decision: DENY (rule_deny)" in out
    assert "deciding: zj-in-industrial-licence-pilot" in out
    assert "MATCH allow zj-in-own-services" in out
    assert "direction is inbound, rule wants outbound" in out


def test_explain_needs_a_known_service_or_its_owner(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "policy",
        "explain",
        str(BUNDLES / "zhejiang.yaml"),
        "--direction",
        "inbound",
        "--peer",
        "anhui",
        "--peer-jurisdiction",
        "34",
        "--service",
        "zj.unknown",
    ]
    assert main(argv) == 2
    assert "give --owner and --department" in capsys.readouterr().err


def test_sign_then_the_holder_accepts_and_an_edit_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = NodeKey.generate()
    save_key(key, tmp_path / "node.key")
    bundle = tmp_path / "anhui.yaml"
    shutil.copy(BUNDLES / "anhui.yaml", bundle)
    assert main(["policy", "sign", str(bundle), "--key", str(tmp_path / "node.key")]) == 0
    assert f"(key {key.key_id})" in capsys.readouterr().out
    assert PolicyHolder(bundle, key.public_key, FakeClock()).current().bundle.node == "anhui"
    bundle.write_text(bundle.read_text().replace("burst: 60", "burst: 6000"))
    with pytest.raises(ConfigError, match="bundle_bad_signature"):
        PolicyHolder(bundle, key.public_key, FakeClock())


def test_sign_refuses_an_invalid_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = NodeKey.generate()
    save_key(key, tmp_path / "node.key")
    (tmp_path / "x.yaml").write_text("node: x\n")
    assert main(["policy", "sign", str(tmp_path / "x.yaml"), "--key", str(tmp_path / "node.key")]) == 2
    assert not (tmp_path / "x.yaml.sig").exists()
    assert "missing required key 'revision'" in capsys.readouterr().err


def test_log_prints_recorded_decisions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    assert main(["policy", "log", "--database-url", url]) == 2
    assert "no policy decision log" in capsys.readouterr().err
    db = Database(url)
    db.create_all()
    engine = PolicyEngine(load_bundle(BUNDLES / "shanghai.yaml"), FakeClock())
    request = PolicyInput(
        "outbound",
        "anhui",
        "34",
        "ah.pension.transfer",
        "340000",
        "安徽省人力资源和社会保障厅",
        "service-delivery",
        "clerk",
        frozenset({"phone"}),
        True,
        1_767_578_400_000,
    )
    decision = engine.decide(request)
    asyncio.run(DecisionLog(db).record(decision, request))
    db.close()
    assert main(["policy", "log", "--database-url", url]) == 0
    line = capsys.readouterr().out
    assert line.startswith("2026-01-05T02:00:00+00:00 ALLOW outbound")
    assert f"rule=sh-out-agreed-services code=allowed id={decision.decision_id}" in line
    assert main(["policy", "log", "--database-url", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["decision_id"] == decision.decision_id


def test_bench_policy_prints_median_and_p99(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "policy", "--rules", "200", "--decisions", "2000", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["rules"] == 200 and figures["decisions"] == 2000
    assert 0 < figures["median_us"] <= figures["p99_us"]
    assert figures["mean_candidates"] < 20  # the index, not a scan of 200 rules
    assert main(["bench", "policy", "--rules", "200", "--decisions", "1000"]) == 0
    out = capsys.readouterr().out
    assert "median_us:" in out and "p99_us:" in out
