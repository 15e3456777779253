"""An owner's status changes decided in one transaction travel as one item, a run
(docs/protocol.md 10.2): the origin applies it change by change, each once, or refuses it
whole. In process, against a real database: no nodes, no network."""

from __future__ import annotations

import functools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import event
from sqlmodel import Session, col, select
from yrd.peer.v1 import peer_pb2

from core.clock import SystemClock
from core.db import Database
from node.cases.bundles.routing import PART_SUBMITTER, Routing
from node.cases.origin import apply_status_changes
from node.cases.owner import Owner
from node.models import (
    Application,
    ApplicationResult,
    BundlePart,
    BundleRun,
    OutboxEntry,
    ResultDocument,
    StatusEvent,
)

APP = "0193a1b2c3d4e5f60718293a4b5c"
OWNER = "zhejiang"
Outcome = peer_pb2.ReceiptOutcome
S = peer_pb2.ApplicationStatus


def change(sequence: int, status: int = S.APPLICATION_STATUS_IN_REVIEW, **over: Any) -> peer_pb2.StatusUpdate:
    fields: dict[str, Any] = {
        "application_id": APP,
        "status": status,
        "changed_at_ms": 1000,
        "sequence": sequence,
    }
    fields.update(over)
    return peer_pb2.StatusUpdate(**fields)


def auto_run() -> list[peer_pb2.StatusUpdate]:
    """What an automatic decision sends: four changes, the last with a notice."""
    notice = peer_pb2.Document(name="notice.txt", content_type="text/plain", data=b"approved")
    return [
        change(1, S.APPLICATION_STATUS_DELIVERED),
        change(2, S.APPLICATION_STATUS_IN_REVIEW),
        change(3, S.APPLICATION_STATUS_APPROVED, results={"licence_no": "L-1"}),
        change(4, S.APPLICATION_STATUS_COMPLETED, results={"licence_no": "L-2"}, documents=[notice]),
    ]


@pytest.fixture
def db(tmp_path: Path) -> Database:
    d = Database(f"sqlite:///{tmp_path / 'origin.db'}")
    d.create_all()
    d.transact(
        lambda s: s.add(
            Application(
                id=APP, service_id="svc", owner_node=OWNER, status="submitted", submitted_at_ms=0,
                due_at_ms=0, submitted_by="clerk", idempotency_key="k", purpose="service-delivery",
            )
        )
    )  # fmt: skip
    return d


def apply(
    db: Database, updates: list[peer_pb2.StatusUpdate], sender: str = OWNER
) -> tuple[peer_pb2.Receipt, list[int]]:
    receipt, applied = db.transact(lambda s: apply_status_changes(s, sender, updates))
    return receipt, [u.sequence for u in applied]


def history(db: Database) -> tuple[str, list[tuple[int, str]], int]:
    """(the status the application shows, its recorded changes, how many documents it has)."""

    def read(s: Session) -> tuple[str, list[tuple[int, str]], int]:
        app = s.get_one(Application, APP)
        events = s.exec(
            select(StatusEvent).where(StatusEvent.application_id == APP).order_by(col(StatusEvent.sequence))
        )
        docs = s.exec(select(ResultDocument).where(ResultDocument.application_id == APP)).all()
        return app.status, [(e.sequence, e.status) for e in events], len(docs)

    return db.transact(read)


AUTO_HISTORY = [(1, "delivered"), (2, "in_review"), (3, "approved"), (4, "completed")]


def test_a_run_is_applied_once_and_a_resent_run_is_a_duplicate_that_changes_nothing(db: Database) -> None:
    receipt, applied = apply(db, auto_run())
    assert (receipt.item_id, receipt.outcome, applied) == (
        APP,
        Outcome.RECEIPT_OUTCOME_ACCEPTED,
        [1, 2, 3, 4],
    )
    assert history(db) == ("completed", AUTO_HISTORY, 1)
    receipt, applied = apply(db, auto_run())
    assert (receipt.item_id, receipt.outcome, applied) == (APP, Outcome.RECEIPT_OUTCOME_DUPLICATE, [])
    assert history(db) == ("completed", AUTO_HISTORY, 1)


def test_a_run_overlapping_what_arrived_applies_only_the_rest(db: Database) -> None:
    """The first changes came alone (an older owner, or an earlier run); the rest still apply."""
    apply(db, [change(1, S.APPLICATION_STATUS_DELIVERED, reason="first copy")])
    receipt, applied = apply(db, auto_run())
    assert (receipt.outcome, applied) == (Outcome.RECEIPT_OUTCOME_ACCEPTED, [2, 3, 4])
    assert history(db) == ("completed", AUTO_HISTORY, 1)


def test_a_run_below_what_the_application_shows_fills_the_history_and_keeps_the_status(db: Database) -> None:
    apply(db, [change(4, S.APPLICATION_STATUS_COMPLETED)])
    receipt, applied = apply(db, auto_run()[:3])
    assert (receipt.outcome, applied) == (Outcome.RECEIPT_OUTCOME_ACCEPTED, [1, 2, 3])
    assert history(db) == ("completed", AUTO_HISTORY, 0)


MALFORMED: dict[str, list[peer_pb2.StatusUpdate]] = {
    "empty": [],
    "longer than 16": [change(n) for n in range(1, 18)],
    "two applications": [change(1), change(2, application_id="0193a1b2c3d4e5f60718293a4b5d")],
    "a gap": [change(1), change(2), change(4)],
    "decreasing": [change(2), change(1)],
    "a repeated sequence": [change(1), change(1)],
    "sequence 0": [change(0), change(1)],
    "a sequence over the columns' range": [change(2**31 - 1), change(2**31)],
    "an unknown status": [change(1), change(2, 42), change(3)],
    "results over the limits": [change(1), change(2, results={f"r{i}": "v" for i in range(121)})],
    "a result value too long": [change(1, results={"r": "v" * 2001}), change(2)],
}


@pytest.mark.parametrize("updates", MALFORMED.values(), ids=list(MALFORMED))
def test_a_malformed_run_is_refused_whole_and_nothing_of_it_applied(
    db: Database, updates: list[peer_pb2.StatusUpdate]
) -> None:
    receipt, applied = apply(db, updates)
    assert (receipt.outcome, receipt.reason_code, applied) == (
        Outcome.RECEIPT_OUTCOME_REJECTED,
        "malformed_status",
        [],
    )
    assert history(db) == ("submitted", [], 0)


def test_a_run_from_another_than_the_owner_is_an_unknown_application(db: Database) -> None:
    receipt, applied = apply(db, auto_run(), sender="jiangsu")
    assert (receipt.item_id, receipt.reason_code, applied) == (APP, "unknown_application", [])
    assert history(db) == ("submitted", [], 0)


def test_a_part_run_at_the_lead_keeps_the_latest_results_and_wakes_its_bundle_once(db: Database) -> None:
    """A bundle's part is an application of the lead's: its run's results are kept (the
    highest change's value of each name) and the bundle it belongs to is woken."""

    def start(s: Session) -> None:
        s.add(BundleRun(id="bundle-1", service_id="bundle-svc", created_at_ms=0, due_at_ms=0))
        s.add(BundlePart(bundle_id="bundle-1", name="licence", service_id="svc", application_id=APP))
        app = s.get_one(Application, APP)
        app.submitted_by = f"{PART_SUBMITTER}bundle-1"  # as the runner submits a part
        s.add(app)

    db.transact(start)
    # Routing.apply_status reads nothing of the bundle machinery it is part of.
    routing = Routing.__new__(Routing)
    receipt = db.transact(lambda s: routing.apply_status(s, OWNER, auto_run()))
    assert receipt.outcome == Outcome.RECEIPT_OUTCOME_ACCEPTED

    def read(s: Session) -> tuple[list[tuple[str, str, int]], int]:
        results = s.exec(select(ApplicationResult).where(ApplicationResult.application_id == APP)).all()
        return [(r.name, r.value, r.sequence) for r in results], s.get_one(BundleRun, "bundle-1").wanted

    assert db.transact(read) == ([("licence_no", "L-2", 4)], 2)  # wanted: 1 when made, one wake
    assert history(db) == ("completed", AUTO_HISTORY, 1)


def test_an_ordinary_application_keeps_its_results_and_wakes_no_bundle(db: Database) -> None:
    """A clerk's application is no bundle's part (no account name has a colon): its results
    are kept all the same, and no statement looks for a bundle to wake."""
    statements: list[str] = []

    def statement(_conn: object, _cursor: object, sql: str, *_rest: object) -> None:
        statements.append(sql)

    routing = Routing.__new__(Routing)
    event.listen(db.engine, "before_cursor_execute", statement)
    try:
        receipt = db.transact(lambda s: routing.apply_status(s, OWNER, auto_run()))
    finally:
        event.remove(db.engine, "before_cursor_execute", statement)
    assert receipt.outcome == Outcome.RECEIPT_OUTCOME_ACCEPTED
    assert not [sql for sql in statements if "bundle" in sql]

    def read(s: Session) -> list[tuple[str, str, int]]:
        results = s.exec(select(ApplicationResult).where(ApplicationResult.application_id == APP)).all()
        return [(r.name, r.value, r.sequence) for r in results]

    assert db.transact(read) == [("licence_no", "L-2", 4)]
    # A later change's result replaces it; an earlier change arriving after it does not.
    for sequence in (6, 5):
        late = [change(sequence, S.APPLICATION_STATUS_COMPLETED, results={"licence_no": f"L-{sequence}"})]
        db.transact(functools.partial(routing.apply_status, sender=OWNER, updates=late))
    assert db.transact(read) == [("licence_no", "L-6", 6)]


def test_more_changes_than_a_run_holds_leave_as_consecutive_runs_the_origin_takes_in(db: Database) -> None:
    """An owner that numbers over 16 changes in one transaction must not send them as one
    run: the origin refuses a longer run whole (malformed_status), and the changes would be
    lost with it. They leave as runs of at most 16, each taken in."""
    trust = SimpleNamespace(next_hop=lambda destination: destination)  # a direct peer
    owner = Owner(db=db, trust=trust, services=dict, policy=None, clock=SystemClock(), wake=print)  # type: ignore[arg-type]
    changes = [change(n) for n in range(1, 21)]
    db.transact(lambda s: owner._send(s, APP, "jiangsu", changes, 1000))
    entries = db.transact(
        lambda s: [(e.item_id, e.body) for e in s.exec(select(OutboxEntry).order_by(col(OutboxEntry.id)))]
    )
    assert [item_id for item_id, _ in entries] == [f"{APP}#1-16", f"{APP}#17-20"]
    for _, body in entries:
        receipt, _applied = apply(db, list(peer_pb2.StatusItem.FromString(body).run.updates))
        assert receipt.outcome == Outcome.RECEIPT_OUTCOME_ACCEPTED, receipt.reason
    assert [seq for seq, _ in history(db)[1]] == list(range(1, 21))
