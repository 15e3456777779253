"""The invariant checker must fail on the breakages it exists to catch: a lost
application, a duplicated one, a decision that never came back, a tampered audit chain,
a bundle left unfinished, a data disclosure logged twice or at one end only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from core.db import Database
from node.models import (
    Application,
    AuditRecord,
    BundlePart,
    DataDisclosure,
    InboundApplication,
    OutboxEntry,
    StatusEvent,
)
from node.trust.audit import AuditEntry, append
from simulations.simulate.faults import Fault
from simulations.simulate.invariants import check, late_answers, retried_as_ahead
from simulations.simulate.node_faults import fault_checks

NODES = ("shanghai", "jiangsu", "zhejiang")


def write(path: Path, fn: Callable[[Session], None]) -> None:
    db = Database(f"sqlite:///{path}")
    try:
        db.create_all()
        db.transact(fn)
    finally:
        db.close()


def sent(app_id: str, owner: str, status: str = "completed") -> Callable[[Session], None]:
    def fn(s: Session) -> None:
        s.add(
            Application(
                id=app_id,
                service_id="js.x",
                owner_node=owner,
                status=status,
                status_sequence=4,
                submitted_at_ms=1,
                due_at_ms=2,
                submitted_by="clerk",
                idempotency_key=app_id,
                purpose="service-delivery",
            )
        )
        s.add(StatusEvent(application_id=app_id, sequence=0, status="submitted", at_ms=1))
        if status != "submitted":
            s.add(StatusEvent(application_id=app_id, sequence=4, status=status, at_ms=2))
        append(s, [AuditEntry("out", owner, "/Deliver", b"\x01" * 32)], 1)

    return fn


def received(app_id: str, origin: str, status: str = "completed") -> Callable[[Session], None]:
    def fn(s: Session) -> None:
        s.add(
            InboundApplication(
                id=app_id,
                origin_node=origin,
                service_id="js.x",
                service_version=1,
                handler="auto",
                status=status,
                sequence=4,
                received_at_ms=1,
                due_at_ms=2,
                purpose="service-delivery",
                sealed_payload=b"x",
            )
        )
        append(s, [AuditEntry("in", origin, "/Deliver", b"\x02" * 32)], 1)

    return fn


@pytest.fixture
def dbs(tmp_path: Path) -> dict[str, Path]:
    paths = {n: tmp_path / f"{n}.db" for n in NODES}
    write(paths["shanghai"], sent("a1", "jiangsu"))
    write(paths["jiangsu"], received("a1", "shanghai"))
    write(paths["zhejiang"], lambda s: None)
    return paths


def broken(dbs: dict[str, Path], accepted: dict[str, str]) -> dict[str, list[str]]:
    return {c.name: c.problems for c in check(dbs, accepted) if not c.ok}


def test_a_clean_federation_keeps_every_invariant(dbs: dict[str, Path]) -> None:
    assert broken(dbs, {"a1": "shanghai"}) == {}


def test_a_lost_application_is_caught(dbs: dict[str, Path]) -> None:
    write(dbs["zhejiang"], sent("a2", "jiangsu", status="submitted"))
    problems = broken(dbs, {"a1": "shanghai", "a2": "zhejiang"})
    assert list(problems) == ["every application reached its owner exactly once"]
    assert "lost" in problems["every application reached its owner exactly once"][0]


def test_a_duplicated_application_is_caught(dbs: dict[str, Path]) -> None:
    write(dbs["zhejiang"], received("a1", "shanghai"))
    problems = broken(dbs, {"a1": "shanghai"})
    assert "duplicated" in problems["every application reached its owner exactly once"][0]
    assert "no inbound application without its origin's record" in problems


def test_an_accepted_application_missing_at_its_origin_is_caught(dbs: dict[str, Path]) -> None:
    assert "every accepted application is stored at its origin" in broken(
        dbs, {"a1": "shanghai", "a9": "shanghai"}
    )


def test_a_decision_that_never_came_back_is_caught(tmp_path: Path) -> None:
    paths = {n: tmp_path / f"{n}.db" for n in NODES}
    write(paths["shanghai"], sent("a1", "jiangsu", status="submitted"))
    write(paths["jiangsu"], received("a1", "shanghai", status="completed"))
    write(paths["zhejiang"], lambda s: None)
    assert list(broken(paths, {"a1": "shanghai"})) == ["every decision reached its origin"]


def queued(**fields: Any) -> Callable[[Session], None]:
    """An outbox entry for a1 to Jiangsu, pending unless ``fields`` say otherwise."""
    entry = {"next_hop": "jiangsu", "destination": "jiangsu", "method": "/m", "item_id": "a1", "body": b""}
    return lambda s: s.add(OutboxEntry(**entry, created_at_ms=1, next_attempt_ms=1, **fields))


def test_work_left_in_an_outbox_is_caught(dbs: dict[str, Path]) -> None:
    write(dbs["shanghai"], queued())
    assert list(broken(dbs, {"a1": "shanghai"})) == ["every outbox drained (nothing left in flight)"]


def test_a_tampered_audit_chain_is_caught(dbs: dict[str, Path]) -> None:
    def tamper(s: Session) -> None:
        record = s.exec(select(AuditRecord)).one()
        record.peer = "someone-else"
        s.add(record)

    write(dbs["jiangsu"], tamper)
    problems = broken(dbs, {"a1": "shanghai"})
    assert list(problems) == ["every audit chain verifies"]
    assert problems["every audit chain verifies"][0].startswith("jiangsu: seq 1")


def test_a_dead_letter_is_caught(dbs: dict[str, Path]) -> None:
    write(dbs["shanghai"], queued(state="dead", dead_reason="sealed_payload_invalid"))
    problems = broken(dbs, {"a1": "shanghai"})
    assert problems == {
        "nothing set aside as a dead letter": ["shanghai: a1 to jiangsu: sealed_payload_invalid"]
    }


def skewed(node: str, offset_ms: int, window: tuple[float, float], refused: dict[str, int]) -> Fault:
    fault = Fault("skew", window[0], window[1] - window[0], node=node, offset_ms=offset_ms)
    fault.applied_at_s, fault.reverted_at_s = window
    fault.observed = {"clock_skew_refusals": sum(refused.values()), "refused": refused}
    return fault


def test_skew_checks_blame_only_what_the_skew_explains() -> None:
    name = "a skew within the allowed one refuses nothing, one beyond it is refused"

    def problems(*faults: Fault) -> list[str]:
        (c,) = fault_checks(list(faults), 30_000)
        assert c.name == name
        return c.problems

    beyond = skewed("zhejiang", 45_000, (1, 6), {"shanghai<-zhejiang": 3})
    assert problems(beyond, skewed("anhui", -15_000, (8, 12), {})) == []
    assert problems(skewed("zhejiang", 45_000, (1, 6), {})) == [
        "skew zhejiang +45 s: beyond the allowed 30000 ms, yet nothing was refused"
    ]
    lonely = skewed("anhui", -15_000, (8, 12), {"anhui<-jiangsu": 2})
    assert problems(lonely) == ["skew anhui -15 s: 2 envelopes refused within the allowed 30000 ms"]
    # Refused by a node skewed the other way at the same time: that pair is not this skew's doing.
    shared = skewed("anhui", -15_000, (5, 9), {"anhui<-zhejiang": 4})
    assert problems(beyond, shared) == []


def test_retries_of_items_stamped_ahead_are_counted_per_sender(dbs: dict[str, Path]) -> None:
    def answered(s: Session) -> None:
        append(
            s,
            [
                AuditEntry("out", "shanghai", "/Deliver", b"\x03" * 32, "stamped_ahead"),
                AuditEntry("out", "shanghai", "/Deliver", b"\x04" * 32, "accepted"),
                AuditEntry("in", "shanghai", "/Deliver", b"\x05" * 32, "stamped_ahead"),
                AuditEntry("out", "zhejiang", "/Deliver", b"\x06" * 32, "stamped_ahead"),
            ],
            2,
        )

    write(dbs["jiangsu"], answered)
    assert retried_as_ahead(dbs, "shanghai") == 1
    assert retried_as_ahead(dbs, "zhejiang") == 1
    assert retried_as_ahead(dbs, "jiangsu") == 0


BUNDLE_CHECK = "every accepted bundle is final at its origin, its parts completed"


def bundle(tmp_path: Path, status: str, part_status: str) -> dict[str, Path]:
    """Shanghai's bundle b1 led by Jiangsu, whose part p1 Jiangsu sent to Zhejiang."""
    tmp_path.mkdir()
    paths = {n: tmp_path / f"{n}.db" for n in NODES}
    write(paths["shanghai"], sent("b1", "jiangsu", status=status))
    write(paths["jiangsu"], received("b1", "shanghai", status=status))
    write(paths["jiangsu"], sent("p1", "zhejiang", status=part_status))
    write(
        paths["jiangsu"],
        lambda s: s.add(BundlePart(bundle_id="b1", name="licence", service_id="js.x", application_id="p1")),
    )
    write(paths["zhejiang"], received("p1", "jiangsu", status=part_status))
    return paths


def test_a_bundle_left_unfinished_is_caught(tmp_path: Path) -> None:
    """In review at its origin after the drain, or completed while a part is not: the
    application checks see nothing wrong with either, the bundle check does."""
    assert broken(bundle(tmp_path / "ok", "completed", "completed"), {"b1": "shanghai"}) == {}
    stuck = bundle(tmp_path / "stuck", "in_review", "completed")
    assert check(stuck, {"b1": "shanghai"}, {"b1": "shanghai"})[-1].problems == [
        "bundle b1 is in_review at shanghai after the drain"
    ]
    early = bundle(tmp_path / "early", "completed", "in_review")
    problems = {c.name: c.problems for c in check(early, {"b1": "shanghai"}, {"b1": "shanghai"}) if not c.ok}
    assert problems == {BUNDLE_CHECK: ["bundle b1 is completed but its part licence is in_review"]}


def disclosed(
    side: str, query_id: str, resource: str, holder: str, outcome: str
) -> Callable[[Session], None]:
    """One disclosure record of Shanghai's query ``query_id``, at ``side``."""
    return lambda s: s.add(
        DataDisclosure(
            side=side,
            query_id=query_id,
            at_ms=1,
            asker_node="shanghai",
            asker_department="counter",
            asked_by="clerk",
            holder_node=holder,
            resource_id=resource,
            subject_ref="ref",
            purpose="health-check",
            basis="consent",
            fields="result" if outcome == "answered" else "",
            outcome=outcome,
        )
    )


SCREEN = ("js.nucleic-acid", "zj.vaccination")
QUERIES = {"q1": ("shanghai", SCREEN)}


@pytest.fixture
def screen(dbs: dict[str, Path]) -> dict[str, Path]:
    """Shanghai asked q1; Jiangsu answered in time; Zhejiang (paused) after the deadline."""
    write(dbs["shanghai"], disclosed("asker", "q1", "js.nucleic-acid", "jiangsu", "answered"))
    write(dbs["shanghai"], disclosed("asker", "q1", "zj.vaccination", "zhejiang", "missing"))
    write(dbs["jiangsu"], disclosed("holder", "q1", "js.nucleic-acid", "jiangsu", "answered"))
    write(dbs["zhejiang"], disclosed("holder", "q1", "zj.vaccination", "zhejiang", "answered"))
    return dbs


def disclosure_problems(dbs: dict[str, Path], queries: dict[str, tuple[str, tuple[str, ...]]]) -> list[str]:
    return [p for c in check(dbs, {"a1": "shanghai"}, {}, queries) for p in c.problems]


def test_a_late_answer_is_counted_not_held_against_the_federation(screen: dict[str, Path]) -> None:
    assert disclosure_problems(screen, QUERIES) == []
    assert late_answers(screen) == 1


def test_a_disclosure_logged_twice_or_without_its_mirror_is_caught(screen: dict[str, Path]) -> None:
    write(screen["jiangsu"], disclosed("holder", "q1", "js.nucleic-acid", "jiangsu", "answered"))
    write(screen["zhejiang"], disclosed("holder", "q2", "zj.vaccination", "zhejiang", "answered"))
    assert disclosure_problems(screen, QUERIES) == [
        "q1 js.nucleic-acid: 2 records at the holder jiangsu",
        "q1 js.nucleic-acid: 2 records at the holder jiangsu",
        "q2 zj.vaccination: 0 mirrors at the asker shanghai",
    ]


def test_an_answer_its_holder_did_not_log_is_caught(screen: dict[str, Path]) -> None:
    write(screen["shanghai"], disclosed("asker", "q3", "zj.vaccination", "zhejiang", "answered"))
    assert disclosure_problems(screen, QUERIES) == [
        "q3 zj.vaccination: answered at the asker, no answered record at zhejiang"
    ]


def test_an_answered_query_its_asker_did_not_log_is_caught(screen: dict[str, Path]) -> None:
    assert disclosure_problems(screen, {**QUERIES, "q4": ("shanghai", SCREEN)}) == [
        "q4 js.nucleic-acid: 0 disclosure records at shanghai",
        "q4 zj.vaccination: 0 disclosure records at shanghai",
    ]
