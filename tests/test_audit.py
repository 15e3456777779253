"""The hash-chained audit log: any altered, removed or reordered record is detected."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import Session, col, delete

from core.db import Database
from node.cli.main import main
from node.models import AuditRecord
from node.trust.audit import AuditEntry, append, load_chain, verify_chain


@pytest.fixture
def db(tmp_path: Path) -> Database:
    d = Database(f"sqlite:///{tmp_path / 'a.db'}")
    d.create_all()

    def fill(s: Session) -> None:
        for i in range(5):
            append(
                s,
                [AuditEntry("in" if i % 2 else "out", "zhejiang", "/m", bytes([i]) * 32, f"item{i}")],
                1000 + i,
            )

    d.transact(fill)
    return d


def problems(db: Database) -> list[str]:
    return [p.problem for p in verify_chain(db.transact(load_chain))]


def test_an_intact_chain_verifies(db: Database) -> None:
    assert problems(db) == []


def test_an_altered_record_is_detected(db: Database) -> None:
    db.transact(
        lambda s: s.execute(update(AuditRecord).where(col(AuditRecord.seq) == 3).values(peer="anhui"))
    )
    assert any("altered" in p for p in problems(db))


def test_a_removed_record_is_detected(db: Database) -> None:
    db.transact(lambda s: s.execute(delete(AuditRecord).where(col(AuditRecord.seq) == 2)))
    assert problems(db)


def test_reordered_records_are_detected(db: Database) -> None:
    def swap(s: Session) -> None:
        a, b = s.get(AuditRecord, 2), s.get(AuditRecord, 3)
        assert a and b
        a.detail, b.detail = b.detail, a.detail
        a.envelope_digest, b.envelope_digest = b.envelope_digest, a.envelope_digest
        s.add_all([a, b])

    db.transact(swap)
    assert problems(db)


def test_cli_reports_ok_and_broken(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", "--database-url", db.url]) == 0
    assert "chain intact" in capsys.readouterr().out
    db.transact(lambda s: s.execute(update(AuditRecord).where(col(AuditRecord.seq) == 5).values(at_ms=1)))
    assert main(["audit", "verify", "--database-url", db.url]) == 1
    assert "record 5" in capsys.readouterr().out


def test_cli_names_an_unreadable_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", "--database-url", f"sqlite:///{tmp_path / 'empty.db'}"]) == 2
    assert "audit_unreadable" in capsys.readouterr().err
