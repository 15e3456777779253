"""What a bundle's lead sends the counter is a peer's text: bounded, and shown only in shape."""

from __future__ import annotations

import json
from typing import Any

from node.cases.bundles.status import parse_snapshot
from node.cases.status_checks import COMPONENTS_KEY, results_problem

PART: dict[str, Any] = {
    "name": "licence",
    "service_id": "js.suzhou.business-licence",
    "service_name": "企业设立登记（营业执照）",
    "department": "苏州市市场监督管理局",
    "owner": "320500",
    "owner_node": "jiangsu",
    "after": [],
    "status": "completed",
    "attempt": 1,
    "application_id": "019a0000000000aaaaaaaaaaaaaaaa",
    "due_at": "2026-12-03T16:00:00Z",
    "reason": "",
    "results": {"credit_code": "91320500537000748Q"},
}


def test_a_snapshot_of_the_right_shape_is_shown() -> None:
    assert parse_snapshot(json.dumps([PART])) == [PART]
    assert parse_snapshot(None) is None


def test_a_snapshot_of_any_other_shape_is_ignored() -> None:
    for bad in (
        "not json",
        json.dumps({"licence": PART}),
        json.dumps([{**PART, "extra": 1}]),
        json.dumps([{k: v for k, v in PART.items() if k != "status"}]),
        json.dumps([{**PART, "attempt": "1"}]),
        json.dumps([{**PART, "attempt": True}]),
        json.dumps([{**PART, "after": "seal"}]),
    ):
        assert parse_snapshot(bad) is None, bad


def test_results_are_bounded_in_count_name_and_value() -> None:
    assert results_problem({"credit_code": "9" * 18, COMPONENTS_KEY: "x" * 60_000}) is None
    assert results_problem({f"r{i}": "v" for i in range(121)}) == "more than 120 results"
    assert results_problem({"": "v"}) is not None
    assert results_problem({"n" * 101: "v"}) is not None
    assert results_problem({"credit_code": "9" * 2001}) is not None
    assert results_problem({COMPONENTS_KEY: "x" * (64 * 1024 + 1)}) is not None
    # Characters, not bytes (protocol 10.5): 2,000 and 65,536 Chinese characters pass.
    assert results_problem({"credit_code": "证" * 2000, COMPONENTS_KEY: "证" * 64 * 1024}) is None
