"""``yrd data`` (node/cli/data.py) on a node's own files: records loaded and checked, the
meter report and the disclosure log after a real query, a bad records file refused by name."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from core.errors import ConfigError
from node.cli import data
from simulations.local_federation import PROVINCES
from tests.support.federation import Federation

PERSON = "310101199003071230"


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="yrd")
    data.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", *argv])
    code: int = args.handler(args)
    return code


async def test_report_and_disclosures_after_a_query(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    specs = [s for s in PROVINCES if s.node_id in ("shanghai", "jiangsu")]
    fed = await Federation(tmp_path, specs).start()
    try:
        body = {
            "subject": {"kind": "person", "id": PERSON},
            "purpose": "health-check",
            "resources": [{"id": "js.nucleic-acid", "fields": ["result"]}],
            "consent": {
                "given_by": "张三",
                "subject_id": PERSON,
                "resources": ["js.nucleic-acid"],
                "purpose": "health-check",
                "until": "2099-01-01T00:00:00+08:00",
            },
        }
        status, view = await fed.call("shanghai", "POST", "/api/v1/queries", json=body)
        assert (status, view["items"][0]["outcome"]) == (200, "answered"), view
    finally:
        await fed.close()
    config = str(tmp_path / "jiangsu" / "node.toml")
    capsys.readouterr()
    assert run("report", "--config", config, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert [(r["resource_id"], r["asker_node"], r["outcome"], r["calls"]) for r in report["rows"]] == [
        ("js.nucleic-acid", "shanghai", "answered", 1)
    ]
    assert run("disclosures", "--config", config, "--subject", PERSON) == 0
    out = capsys.readouterr().out
    assert "js.nucleic-acid\tanswered\tconsent\tresult" in out
    assert out.strip().endswith("1 record(s)")
    assert run("disclosures", "--config", config, "--subject", "320502198506123456") == 0
    assert capsys.readouterr().out.strip() == "0 record(s)"

    records = tmp_path / "more.json"
    records.write_text(
        json.dumps(
            {
                "node_id": "jiangsu",
                "records": [
                    {
                        "resource": "js.nucleic-acid",
                        "subject": "340102199208156782",
                        "updated_at": "2026-11-30T08:00:00+08:00",
                        "fields": {"result": "阴性", "sampled_on": "2026-11-30"},
                    }
                ],
            },
            ensure_ascii=False,
        )
    )
    assert run("load", "--config", config, str(records)) == 0
    assert capsys.readouterr().out.strip() == "js.nucleic-acid\t1 record(s)"
    records.write_text(records.read_text().replace("阴性", "未知"))
    with pytest.raises(ConfigError) as caught:
        run("load", "--config", config, str(records))
    assert caught.value.field == "records[0].fields.result"
