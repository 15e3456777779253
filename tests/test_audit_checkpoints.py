"""Audit checkpoints: a node signs its chain's head, peers fetch and keep it over
GetAuditCheckpoint, and a tail cut is caught with the peer's copy (``yrd audit checkpoints``
on the peer, ``yrd audit verify --checkpoint`` on the node) and by the node itself when it
next asks the peer what it holds of it. Replicas on PostgreSQL append to one chain."""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete
from sqlmodel import Session, col, select
from yrd.federation.v1.manifest_pb2 import KEY_STATUS_ACTIVE, Manifest, Member, MemberKey, SignedManifest
from yrd.peer.v1 import peer_pb2

from core.clock import FakeClock
from core.db import Database
from core.errors import InvalidInput, YrdError
from core.keys import NodeKey
from node import metrics
from node.cli.audit import FIELDS, read_checkpoint
from node.cli.main import main
from node.delivery import checkpoints
from node.models import AuditCheckpoint, AuditRecord
from node.trust.audit import AuditEntry, append, check_against, load_chain, verify_chain
from registry.manifest import TrustedManifest, sign_manifest, verify_anchor
from simulations.local_federation import PROVINCES
from simulations.sample_applications import application_body
from tests.support.federation import Federation, allow_all_specs

SERVICE = "zj.medical.cross-region-filing"


def one_member_manifest() -> TrustedManifest:
    """A manifest whose one member, jiangsu, has one active key: what a receiver checks against."""
    key = NodeKey.generate()
    member_key = MemberKey(
        key_id=key.key_id,
        public_key=key.public_key,
        not_before_ms=0,
        not_after_ms=10**13,
        status=KEY_STATUS_ACTIVE,
    )
    member = Member(
        node_id="jiangsu",
        display_name="J",
        jurisdictions=["32"],
        grpc_endpoint="127.0.0.1:1",
        http_endpoint="http://127.0.0.1:2",
        keys=[member_key],
    )
    manifest = Manifest(
        federation_id="t", version=1, threshold=1, issued_at_ms=0, expires_at_ms=10**13, members=[member]
    )
    return verify_anchor(sign_manifest(SignedManifest(manifest=manifest.SerializeToString()), "jiangsu", key))


MANIFEST = one_member_manifest()


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    specs = [s for s in allow_all_specs(tmp_path, PROVINCES) if s.node_id in ("jiangsu", "zhejiang")]
    f = await Federation(tmp_path, specs).start()
    try:
        # These tests sign and exchange checkpoints themselves. The nodes' own loops sign the
        # first one ten seconds after start, which a slow set-up on a loaded machine outlasted,
        # leaving the tests' first tick nothing due; the loop has its own test below.
        for node in f.nodes.values():
            await node.checkpoints.stop()
        defn = f.nodes["jiangsu"].index.get(SERVICE)
        assert defn is not None
        status, created = await f.submit("jiangsu", application_body(defn, random.Random(3)), "cp1")
        assert status == 201, created
        await f.wait_status("jiangsu", created["id"], {"completed"})
        yield f
    finally:
        await f.close()


def toml(fed: Federation, node_id: str) -> str:
    return str(fed.configs[node_id].data_dir / "node.toml")


def conflicts(node_id: str) -> float:
    value = metrics.AUDIT_CHECKPOINT_CONFLICTS.labels(node=node_id)._value.get()
    return float(value)


async def test_a_tail_cut_is_caught_with_the_peers_copy_and_not_without(
    fed: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    js, zj = fed.nodes["jiangsu"], fed.nodes["zhejiang"]
    signed = await js.checkpoints.tick()  # the first checkpoint is due at once
    assert signed is not None and signed.seq > 2
    await zj.checkpoints.exchange("jiangsu")  # zhejiang fetches and keeps it
    assert main(["audit", "checkpoints", "--config", toml(fed, "zhejiang"), "--peer", "jiangsu"]) == 0
    exported = tmp_path / "jiangsu.checkpoint.json"
    exported.write_text(capsys.readouterr().out)
    assert json.loads(exported.read_text())["seq"] == signed.seq
    assert main(["audit", "verify", "--config", toml(fed, "jiangsu"), "--checkpoint", str(exported)]) == 0
    assert "chain intact" in capsys.readouterr().out

    # Jiangsu's operator cuts the last two records and deletes the node's own checkpoints too.
    def cut(s: Session) -> None:
        s.execute(delete(AuditRecord).where(col(AuditRecord.seq) > signed.seq - 2))
        s.execute(delete(AuditCheckpoint).where(col(AuditCheckpoint.node_id) == "jiangsu"))

    await js.db.run(cut)
    assert main(["audit", "verify", "--config", toml(fed, "jiangsu")]) == 0  # the chain alone looks fine
    capsys.readouterr()
    assert main(["audit", "verify", "--config", toml(fed, "jiangsu"), "--checkpoint", str(exported)]) == 1
    out = capsys.readouterr().out
    assert f"record {signed.seq}: the chain has no record {signed.seq}" in out and "BROKEN" in out

    before = conflicts("jiangsu")
    await js.checkpoints.exchange("zhejiang")  # the node asks what zhejiang holds of it
    assert conflicts("jiangsu") == before + 1


async def test_a_checkpoint_file_that_does_not_verify_is_refused(
    fed: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    js = fed.nodes["jiangsu"]
    signed = await js.checkpoints.tick()
    assert signed is not None
    doc = json.loads(
        json.dumps({**signed.model_dump(exclude={"received_at_ms"}), "signature": signed.signature.hex()})
    )
    forged = tmp_path / "forged.json"
    for change, field in (
        ({"seq": signed.seq + 5}, "signature"),  # a higher head than was signed
        ({"signature": "00" * 64}, "signature"),
        ({"seq": "7"}, "seq"),
        ({"node_id": "zhejiang"}, "node_id"),
    ):
        forged.write_text(json.dumps({**doc, **change}))
        assert main(["audit", "verify", "--config", toml(fed, "jiangsu"), "--checkpoint", str(forged)]) == 2
        assert field in capsys.readouterr().err
    forged.write_text("{not json")
    assert main(["audit", "verify", "--config", toml(fed, "jiangsu"), "--checkpoint", str(forged)]) == 2
    assert "bad_checkpoint" in capsys.readouterr().err


async def test_a_peer_that_rewrites_its_checkpointed_head_is_flagged(fed: Federation) -> None:
    js, zj = fed.nodes["jiangsu"], fed.nodes["zhejiang"]
    signed = await js.checkpoints.tick()
    assert signed is not None
    await zj.checkpoints.exchange("jiangsu")
    key = js.trust.key
    other = "f" * 64
    message = checkpoints.audit.checkpoint_signing_input("jiangsu", signed.seq, other, signed.at_ms + 1)
    rewritten = peer_pb2.AuditCheckpoint(
        node_id="jiangsu",
        seq=signed.seq,
        head_hash=other,
        at_ms=signed.at_ms + 1,
        key_id=key.key_id,
        signature=key.sign(message),
    )
    checkpoints.check_signature(zj.trust.manifest, rewritten)  # validly signed, and contradicting
    before = conflicts("jiangsu")
    assert await zj.db.run(lambda s: checkpoints.keep(s, rewritten, 0)) is False
    assert conflicts("jiangsu") == before + 1


def test_check_against_finds_a_rewrite_and_accepts_a_longer_chain(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    db.create_all()
    try:
        for i in range(4):
            db.transact(lambda s, i=i: append(s, [AuditEntry("in", "anhui", "/m", bytes([i]) * 32)], i))
        chain = db.transact(load_chain)
    finally:
        db.close()
    assert check_against(chain, 2, chain[1].hash) is None  # records after a checkpoint are fine
    problem = check_against(chain, 2, chain[2].hash)
    assert problem is not None and "rewritten" in problem.problem
    assert check_against(chain, 0, "") is None


def test_replicas_append_one_chain_on_postgres(new_pg_schema: Callable[[], str]) -> None:
    url = new_pg_schema()
    replicas = [Database(url), Database(url)]
    replicas[0].create_all()
    try:

        def writer(db: Database, n: int) -> None:
            for i in range(15):
                db.transact(
                    lambda s, i=i: append(s, [AuditEntry("in", "anhui", "/m", bytes([n, i]) * 16)], i)
                )

        threads = [threading.Thread(target=writer, args=(replicas[n % 2], n)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        chain = replicas[1].transact(load_chain)
    finally:
        for db in replicas:
            db.close()
    assert [r.seq for r in chain] == list(range(1, 61))
    assert list(verify_chain(chain)) == []


def _any_checkpoint() -> st.SearchStrategy[peer_pb2.AuditCheckpoint]:
    return st.builds(
        peer_pb2.AuditCheckpoint,
        node_id=st.sampled_from(["jiangsu", "zhejiang", "", "x" * 40]) | st.text(max_size=20),
        seq=st.integers(0, 2**64 - 1),
        head_hash=st.sampled_from(["0" * 64, "F" * 64]) | st.text(max_size=70),
        at_ms=st.integers(-(2**63), 2**63 - 1),
        key_id=st.text(max_size=20),
        signature=st.binary(max_size=70),
    )


@settings(max_examples=150, deadline=None)
@given(cp=_any_checkpoint())
def test_any_checkpoint_from_a_peer_is_refused_with_a_clear_error_or_verifies(
    cp: peer_pb2.AuditCheckpoint,
) -> None:
    try:
        checkpoints.check_signature(MANIFEST, cp)
    except YrdError as e:
        assert e.code in {
            "malformed_body",
            "bad_signature",
            "unknown_sender",
            "unknown_key",
            "key_revoked",
            "key_not_valid",
        }
    else:
        raise AssertionError("a random checkpoint verified")


@settings(max_examples=150, deadline=None)
@given(
    doc=st.dictionaries(
        st.sampled_from([*FIELDS, "extra"]),
        st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.lists(st.integers(), max_size=2),
    )
)
def test_any_checkpoint_file_is_read_or_refused_naming_the_field(
    doc: dict[str, object], tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("cp") / "cp.json"
    path.write_text(json.dumps(doc))
    try:
        cp = read_checkpoint(path)
    except InvalidInput as e:
        assert e.code == "bad_checkpoint" and e.field
    else:
        assert set(doc) == set(FIELDS) and cp.seq == doc["seq"]


async def test_the_loop_signs_when_due_and_exchanges_once_per_interval(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'n.db'}")
    db.create_all()
    clock = FakeClock()
    members = [SimpleNamespace(node_id=n) for n in ("jiangsu", "zhejiang", "anhui")]
    trust = SimpleNamespace(
        node_id="jiangsu",
        key=NodeKey.generate(),
        manifest=SimpleNamespace(members=members),
        next_hop=lambda peer: peer,
    )
    cps = checkpoints.Checkpoints(
        db=db,
        trust=trust,  # type: ignore[arg-type]
        channels=None,  # type: ignore[arg-type]
        verifier=None,  # type: ignore[arg-type]
        clock=clock,
        interval_s=60.0,
        every_records=5,
    )
    exchanged: list[tuple[float, str]] = []

    async def exchange(peer: str) -> None:
        exchanged.append((clock.monotonic(), peer))

    cps.exchange = exchange  # type: ignore[method-assign]
    start_ms = clock.now_ms()
    records = [AuditEntry("in", "anhui", "/m", b"\x01" * 32)]
    db.transact(lambda s: append(s, records * 2, 1))  # signed at the first tick: none held yet
    signing_tick = cps.tick
    past_two_intervals = asyncio.Event()

    async def tick() -> AuditCheckpoint | None:
        if clock.monotonic() == 30:  # seven more records by now: due before the interval
            await db.run(lambda s: append(s, records * 7, 1))
        if clock.monotonic() > 125:
            past_two_intervals.set()
        return await signing_tick()

    cps.tick = tick  # type: ignore[method-assign]
    task = asyncio.create_task(cps.run())
    try:
        await past_two_intervals.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    held = db.transact(lambda s: s.exec(select(AuditCheckpoint).order_by(col(AuditCheckpoint.seq))).all())
    db.close()
    assert [(c.seq, c.at_ms - start_ms) for c in held][:2] == [(2, 10_000), (9, 30_000)]
    assert [t for t, _ in exchanged] == [60.0, 60.0, 120.0, 120.0]  # twice, to both peers, not every tick
    assert {p for _, p in exchanged} == {"zhejiang", "anhui"}
