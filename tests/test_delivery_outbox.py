"""The outbox without a network: byte-bounded claims, dead letters and their re-drive,
stalled links (FakeClock) and what /healthz makes of them, and the `yrd outbox` commands."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import Session, select

from core.clock import FakeClock
from core.db import Database
from node.app import build_node
from node.cli.main import main
from node.delivery.outbox import (
    ENVELOPE_OVERHEAD_BYTES,
    HANDOFF,
    TOO_LARGE,
    claim_batch,
    dead_counts,
    dead_letters,
    enqueue,
    redrive,
    settle,
    stalled_hops,
    unhanded_hops,
)
from node.models import OutboxEntry, PeerState
from simulations.local_federation import PROVINCES, prepare
from tests.support.federation import allow_all_specs

KB = 1024


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'node.db'}"
    else:
        url = request.getfixturevalue("new_pg_schema")()
    d = Database(url)
    d.create_all()
    yield d
    d.close()


def put(db: Database, item_id: str, size: int, now_ms: int = 1, hop: str = "zhejiang") -> None:
    db.transact(
        lambda s: enqueue(
            s, next_hop=hop, destination=hop, method="m", item_id=item_id, body=b"x" * size, now_ms=now_ms
        )
    )


def test_a_claim_fits_the_byte_budget_and_sets_aside_what_never_fits(db: Database) -> None:
    budget = 100 * KB
    for item, size in (("a", 40 * KB), ("huge", 200 * KB), ("b", 40 * KB), ("c", 40 * KB)):
        put(db, item, size)
    first = db.transact(lambda s: claim_batch(s, "zhejiang", 32, 10, budget))
    assert [r.item_id for r in first.rows] == ["a", "b"]  # c would pass the budget: next batch
    assert [o.item_id for o in first.oversized] == ["huge"]
    assert first.oversized[0].size_bytes == 200 * KB + ENVELOPE_OVERHEAD_BYTES
    second = db.transact(lambda s: claim_batch(s, "zhejiang", 32, 10, budget))
    assert [r.item_id for r in second.rows] == ["c"] and not second.oversized
    dead = db.transact(lambda s: dead_letters(s, 10))
    assert [(d.item_id, d.reason, d.peer) for d in dead] == [("huge", TOO_LARGE, "zhejiang")]
    assert "exceed" in dead[0].detail
    assert db.transact(dead_counts) == {"zhejiang": 1}


def test_a_claim_sends_exactly_what_it_chose_even_beside_a_row_leased_to_the_same_millisecond(
    db: Database,
) -> None:
    """A claim reads its bodies by the range of ids it chose and the lease it gave them; a row
    in that range that another claim leased until the same millisecond is not taken again."""
    for item, due in (("a", 150), ("b", 150), ("c", 1), ("d", 1)):
        put(db, item, 10, now_ms=due)
    first = db.transact(lambda s: claim_batch(s, "zhejiang", 1, 100, None, lease_ms=1000))
    assert [r.item_id for r in first.rows] == ["c"]  # leased until 1,100
    second = db.transact(lambda s: claim_batch(s, "zhejiang", 8, 200, None, lease_ms=900))
    assert [r.item_id for r in second.rows] == ["a", "b", "d"]  # also until 1,100; "c" lies between
    assert {r.claimed_until_ms for r in second.rows} == {1100} and {r.attempts for r in second.rows} == {1}


def test_a_redriven_dead_letter_is_due_again_once(db: Database) -> None:
    put(db, "huge", 200 * KB)
    db.transact(lambda s: claim_batch(s, "zhejiang", 32, 10, 100 * KB))
    (letter,) = db.transact(lambda s: dead_letters(s, 10))
    assert db.transact(lambda s: redrive(s, letter.id, 20))
    assert not db.transact(lambda s: redrive(s, letter.id, 20))  # no longer a dead letter
    again = db.transact(lambda s: claim_batch(s, "zhejiang", 32, 20, 400 * KB))
    assert [r.item_id for r in again.rows] == ["huge"]
    assert db.transact(dead_counts) == {}


def test_a_link_with_old_work_and_no_success_is_stalled(db: Database) -> None:
    clock = FakeClock()
    stall_ms = 60_000
    put(db, "a", 10, now_ms=clock.now_ms())
    put(db, "local", 10, now_ms=clock.now_ms(), hop="~webhook")
    clock.advance(59)
    assert db.transact(lambda s: stalled_hops(s, clock.now_ms(), stall_ms)) == []
    clock.advance(2)
    assert db.transact(lambda s: stalled_hops(s, clock.now_ms(), stall_ms)) == ["zhejiang"]
    # A successful call within the interval is progress, even with work still waiting.
    db.transact(lambda s: s.add(PeerState(node_id="zhejiang", last_success_ms=clock.now_ms())))
    assert db.transact(lambda s: stalled_hops(s, clock.now_ms(), stall_ms)) == []
    clock.advance(61)
    assert db.transact(lambda s: stalled_hops(s, clock.now_ms(), stall_ms)) == ["zhejiang"]
    # No work waiting: an idle link is not stalled, however long since its last call.
    ids = db.transact(
        lambda s: s.exec(select(OutboxEntry.id).where(OutboxEntry.next_hop == "zhejiang")).all()
    )
    db.transact(lambda s: [settle(s, i) for i in ids if i is not None])
    assert db.transact(lambda s: stalled_hops(s, clock.now_ms(), stall_ms)) == []


async def test_healthz_turns_degraded_and_names_a_stalled_peer(tmp_path: Path) -> None:
    clock = FakeClock()
    specs = allow_all_specs(tmp_path, PROVINCES[1:3])
    config = prepare(tmp_path, specs, now_ms=clock.now_ms())[0]  # jiangsu, never started
    node = build_node(config, clock)
    try:
        async with TestClient(TestServer(node.http_app)) as client:
            resp = await client.get("/healthz")
            assert resp.status == 200 and (await resp.json())["status"] == "ok"
            await node.db.run(
                lambda s: enqueue(
                    s,
                    next_hop="zhejiang",
                    destination="zhejiang",
                    method="m",
                    item_id="x",
                    body=b"",
                    now_ms=clock.now_ms(),
                )
            )
            clock.advance(config.delivery.stall_after_s - 1)
            assert (await (await client.get("/healthz")).json())["status"] == "ok"
            clock.advance(2)
            resp = await client.get("/healthz")
            body = await resp.json()
            # Degraded, not failed: restarting this node would not mend a peer's link.
            assert resp.status == 200 and body["status"] == "degraded"
            assert body["stalled_peers"] == ["zhejiang"]
    finally:
        node.db.close()


def test_outbox_commands_list_and_redrive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    specs = allow_all_specs(tmp_path, PROVINCES[1:3])
    config = prepare(tmp_path, specs, now_ms=FakeClock().now_ms())[0]
    toml = str(config.data_dir / "node.toml")
    db_file = config.data_dir / "node.db"
    db_file.rename(db_file.with_suffix(".away"))
    assert main(["outbox", "dead", "--config", toml]) == 2  # a missing database: refused, not created
    assert "database_missing" in capsys.readouterr().err
    assert not db_file.exists()
    db_file.with_suffix(".away").rename(db_file)
    db = Database(config.database_url)
    put(db, "app-\n1", 200 * KB)
    db.transact(lambda s: claim_batch(s, "zhejiang", 32, 10, 100 * KB))
    db.close()
    assert main(["outbox", "dead", "--config", toml]) == 0
    out = capsys.readouterr().out
    assert '"app-\\n1"' in out and TOO_LARGE in out and "zhejiang" in out  # quoted: no forged lines
    entry_id = out.split("\t", 1)[0]
    for bad in ("x", "0", "-1", "１"):
        assert main(["outbox", "retry", "--config", toml, bad]) == 2
        assert "id" in capsys.readouterr().err
    assert main(["outbox", "dead", "--config", toml, "--limit", "0"]) == 2
    assert "limit" in capsys.readouterr().err
    assert main(["outbox", "retry", "--config", toml, entry_id]) == 0
    assert main(["outbox", "retry", "--config", toml, entry_id]) == 2
    assert "not_dead_letter" in capsys.readouterr().err
    assert main(["outbox", "dead", "--config", toml]) == 0
    assert "no dead letters" in capsys.readouterr().out


def test_claimed_rows_wait_out_the_configured_lease_before_another_replica_takes_them(db: Database) -> None:
    put(db, "a", 1 * KB)
    lease_ms = 45_000
    first = db.transact(lambda s: claim_batch(s, "zhejiang", 32, 10, 100 * KB, lease_ms))
    assert [r.item_id for r in first.rows] == ["a"]
    # The replica that claimed them died mid-send: nobody takes them until the lease lapses.
    assert not db.transact(lambda s: claim_batch(s, "zhejiang", 32, 10 + lease_ms - 1, 100 * KB)).rows
    again = db.transact(lambda s: claim_batch(s, "zhejiang", 32, 10 + lease_ms, 100 * KB))
    assert [(r.item_id, r.attempts) for r in again.rows] == [("a", 2)]


def test_the_peers_to_wake_are_those_whose_new_entries_no_sender_took(db: Database) -> None:
    class Taker:
        lease_ms = 30_000

        def takes(self, next_hop: str, body_bytes: int) -> bool:
            return next_hop == "anhui"

        def take(self, entry: OutboxEntry) -> None:
            return None

    def queue(s: Session) -> set[str]:
        s.info[HANDOFF] = Taker()
        for hop, item, held in (("zhejiang", "a", False), ("anhui", "b", False), ("shanghai", "c", True)):
            enqueue(
                s, next_hop=hop, destination=hop, method="m", item_id=item, body=b"x", now_ms=1, held=held
            )
        enqueue(s, next_hop="~webhook", destination="jiangsu", method="m", item_id="d", body=b"", now_ms=1)
        return unhanded_hops(s)

    # anhui's entry is handed over (it wakes its sender itself), shanghai's is held, ~ is local
    assert db.transact(queue) == {"zhejiang"}
