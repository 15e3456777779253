"""``yrd bench route``'s stage breakdown, read from databases shaped like a node's."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from node.delivery.relaying import DELIVER, NOTIFY_STATUS
from simulations.bench import stages


def _node_db(path: Path, applications: list[tuple[str, int]], audit: list[tuple[int, str, str, str]]) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE application (id TEXT PRIMARY KEY, submitted_at_ms INTEGER)")
    conn.execute(
        "CREATE TABLE audit_record (seq INTEGER PRIMARY KEY, at_ms INTEGER, direction TEXT,"
        " peer TEXT, method TEXT, envelope_digest TEXT, detail TEXT)"
    )
    conn.executemany("INSERT INTO application VALUES (?, ?)", applications)
    conn.executemany(
        "INSERT INTO audit_record (at_ms, direction, method, detail, peer, envelope_digest)"
        " VALUES (?, ?, ?, ?, '', '')",
        audit,
    )
    conn.commit()
    conn.close()
    return path


def test_stages_split_the_latency_at_the_marks_each_node_stamped(tmp_path: Path) -> None:
    origin = _node_db(
        tmp_path / "origin.db",
        [("a1", 1_010), ("held", 1_000)],
        [
            (1_040, "out", DELIVER, "a1"),  # the owner's receipt settled
            (1_050, "in", NOTIFY_STATUS, "a1"),  # first status changes
            (1_070, "in", NOTIFY_STATUS, "a1"),  # the last one: the stage ends here
        ],
    )
    owner = _node_db(
        tmp_path / "owner.db",
        [],
        [(1_030, "in", DELIVER, "a1"), (1_031, "in", DELIVER, "other")],
    )
    # "held" was never delivered: it has no stages, and must not shift the others.
    sent = {"a1": 1_000.0, "held": 1_000.0}
    seen = {"a1": 1_075.0}

    result = stages.breakdown({"origin": origin, "owner": owner}, sent, seen)

    assert {k: v["p50_ms"] for k, v in result.items()} == {
        "counter": 10.0,
        "to_owner": 20.0,
        "owner_to_origin": 40.0,
        "at_origin": 5.0,
        "owner_reply": 10.0,
    }


def test_a_run_that_rode_on_the_receipt_ends_the_owner_to_origin_stage_when_it_was_taken_in(
    tmp_path: Path,
) -> None:
    origin = _node_db(
        tmp_path / "origin.db",
        [("a1", 1_010), ("a2", 1_010)],
        [
            (1_045, "in", DELIVER, "a1#1-4"),  # the run on a1's receipt, taken in as it settled
            (1_045, "out", DELIVER, "a1"),
            (1_045, "in", DELIVER, "a2#1-2"),  # a2's first changes rode; its decision came later
            (1_045, "out", DELIVER, "a2"),
            (1_065, "in", NOTIFY_STATUS, "a2"),
        ],
    )
    owner = _node_db(tmp_path / "owner.db", [], [(1_030, "in", DELIVER, "a1"), (1_030, "in", DELIVER, "a2")])
    seen = {"a1": 1_050.0, "a2": 1_070.0}

    result = stages.breakdown({"origin": origin, "owner": owner}, {"a1": 1_000.0, "a2": 1_000.0}, seen)

    assert result["owner_to_origin"]["p50_ms"] == 15.0  # a1: 1045 - 1030
    assert result["owner_to_origin"]["p99_ms"] == 35.0  # a2: its last change, 1065 - 1030
    assert result["at_origin"]["p50_ms"] == 5.0
