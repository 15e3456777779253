"""The production database: PostgreSQL. Skipped unless YRD_TEST_PG_URL is set (CI sets it)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlmodel import Session, select
from yrd.catalogue.v1 import catalogue_pb2

from core.db import Database
from node.delivery.catalogue_sync import store_catalogue
from node.delivery.outbox import claim, enqueue
from node.models import DataRecordRow, OutboxEntry, PeerCatalogue
from node.sharing.records import store_records
from node.trust.audit import AuditEntry, append, load_chain, verify_chain
from simulations.local_federation import PROVINCES
from simulations.sample_applications import application_body
from tests.support.federation import Federation, allow_all_specs


def _queue(db: Database, count: int) -> None:
    """``count`` due entries for Zhejiang, item ids "0", "1", ..."""
    entry = {"next_hop": "zhejiang", "destination": "zhejiang", "method": "m", "body": b"x", "now_ms": 1}
    db.transact(lambda s: [enqueue(s, item_id=str(i), **entry) for i in range(count)])


def test_replicas_claim_disjoint_outbox_rows(new_pg_schema: Callable[[], str]) -> None:
    db = Database(new_pg_schema())
    db.create_all()
    try:
        _queue(db, 10)
        with db.session() as a, a.begin(), db.session() as b, b.begin():
            first = claim(a, "zhejiang", 6, 100)  # holds row locks until its transaction ends
            second = claim(b, "zhejiang", 6, 100)  # SKIP LOCKED: takes what is left
        assert len(first) == 6 and len(second) == 4
        assert not {r.id for r in first} & {r.id for r in second}
        # Leases keep the rows claimed after the transactions ended.
        assert db.transact(lambda s: claim(s, "zhejiang", 10, 200)) == []
    finally:
        db.close()


def test_a_claim_skips_and_drops_the_rows_another_replica_holds_inside_its_range(
    new_pg_schema: Callable[[], str],
) -> None:
    """A claim reads bodies by the range of ids it chose; a row inside that range locked by
    another replica was not chosen, and is not sent twice."""
    db = Database(new_pg_schema())
    db.create_all()
    try:
        _queue(db, 8)
        with db.session() as a, a.begin(), db.session() as b, b.begin():
            held = a.exec(select(OutboxEntry).where(OutboxEntry.item_id == "2").with_for_update()).one()
            taken = claim(b, "zhejiang", 5, 100)
        assert [r.item_id for r in taken] == ["0", "1", "3", "4", "5"]
        after = db.transact(lambda s: s.get(OutboxEntry, held.id))
        # Still due, with no attempt counted: not this claim's (read after both transactions).
        assert after is not None and after.claimed_until_ms == 0 and after.attempts == 0
    finally:
        db.close()


def test_audit_chain_on_postgres(new_pg_schema: Callable[[], str]) -> None:
    db = Database(new_pg_schema())
    db.create_all()
    try:
        for i in range(3):
            db.transact(lambda s, i=i: append(s, [AuditEntry("in", "anhui", "/m", bytes([i]) * 32)], i))
        assert list(verify_chain(db.transact(load_chain))) == []
    finally:
        db.close()


async def test_routing_with_both_nodes_on_postgres(tmp_path: Path, new_pg_schema: Callable[[], str]) -> None:
    specs = [s for s in allow_all_specs(tmp_path, PROVINCES) if s.node_id in ("jiangsu", "zhejiang")]
    fed = await Federation(
        tmp_path, specs, database_urls={"jiangsu": new_pg_schema(), "zhejiang": new_pg_schema()}
    ).start()
    try:
        assert fed.nodes["jiangsu"].db.is_sqlite is False
        defn = fed.nodes["jiangsu"].index.get("zj.medical.cross-region-filing")
        status, created = await fed.submit("jiangsu", application_body(defn, random.Random(5)), "pg1")
        assert status == 201, created
        view = await fed.wait_status("jiangsu", created["id"], {"completed"})
        assert [h["status"] for h in view["history"]][-1] == "completed"
    finally:
        await fed.close()


def _catalogue_store(value: int) -> Callable[[Session], object]:
    return lambda s: store_catalogue(s, "zhejiang", b"d%d" % value, b"c", value)


def _catalogue_row(s: Session) -> list[object]:
    return [(r.digest, r.fetched_at_ms) for r in s.exec(select(PeerCatalogue)).all()]


def _records_store(value: int) -> Callable[[Session], object]:
    resources = {"js.nucleic-acid": catalogue_pb2.DataResource(subject_kind="person")}
    records = {"js.nucleic-acid": [("320102199001011234", {"result": f"r{value}"}, value)]}
    return lambda s: store_records(s, b"k" * 32, resources, records)


def _records_row(s: Session) -> list[object]:
    return [(r.fields_json, r.updated_at_ms) for r in s.exec(select(DataRecordRow)).all()]


@pytest.mark.parametrize(
    ("store", "read", "expected"),
    [
        (_catalogue_store, _catalogue_row, [(b"d2", 2)]),
        (_records_store, _records_row, [('{"result": "r2"}', 2)]),
    ],
    ids=["peer catalogue", "shared data records"],
)
def test_two_transactions_storing_one_keyed_row_both_succeed(
    new_pg_schema: Callable[[], str],
    store: Callable[[int], Callable[[Session], object]],
    read: Callable[[Session], list[object]],
    expected: list[object],
) -> None:
    """The second waits on the first's row and then updates it: no key error. A merge (SELECT,
    then INSERT) failed here: both found no row, and the second INSERT hit the first's key."""
    db = Database(new_pg_schema())
    db.create_all()
    first = db.session()
    first.begin()
    store(1)(first)
    errors: list[BaseException] = []

    def second() -> None:
        try:
            db.transact(store(2))
        except BaseException as e:  # reported to the test's thread
            errors.append(e)

    waiter = threading.Thread(target=second)
    waiter.start()
    for _ in range(400):  # until the second transaction waits on the first's row lock
        with db.engine.connect() as conn:
            if conn.exec_driver_sql("SELECT count(*) FROM pg_locks WHERE NOT granted").scalar():
                break
        time.sleep(0.025)
    first.commit()
    first.close()
    waiter.join()
    assert errors == []
    assert db.transact(read) == expected
    db.close()
