"""Supervision clues (node/cases/clues.py, docs/clues.md): the clue as its source sees it, the
case at the member that owns its region, one task per department, and every step of it."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_STRING, _BIG, _INT, _BLOB = sa.String(), sa.BigInteger(), sa.Integer(), sa.LargeBinary()


def _index(table: str, *columns: str) -> None:
    for column in columns:
        op.create_index(f"ix_{table}_{column}", table, [column])


def upgrade() -> None:
    op.create_table(
        "clue_sent",
        sa.Column("id", _STRING, primary_key=True),
        *(sa.Column(c, _STRING, nullable=False) for c in ("owner_node", "source", "region_code")),
        *(sa.Column(c, _STRING, nullable=False) for c in ("domains", "severity", "subject", "status")),
        sa.Column("status_sequence", _INT, nullable=False),
        *(sa.Column(c, _BIG, nullable=False) for c in ("created_at_ms", "acknowledge_by_ms", "close_by_ms")),
        *(sa.Column(c, _STRING, nullable=False) for c in ("submitted_by", "idempotency_key", "digest")),
        sa.UniqueConstraint("submitted_by", "idempotency_key", name="uq_clue_idem"),
    )
    _index("clue_sent", "status")
    op.create_table(
        "clue_case",
        sa.Column("id", _STRING, primary_key=True),
        *(sa.Column(c, _STRING, nullable=False) for c in ("source_node", "source", "region_code", "domains")),
        *(
            sa.Column(c, _STRING, nullable=False)
            for c in ("subject_credit_code", "subject_place", "severity")
        ),
        *(
            sa.Column(c, _BIG, nullable=False)
            for c in ("reported_at_ms", "acknowledge_by_ms", "close_by_ms", "received_at_ms")
        ),
        sa.Column("status", _STRING, nullable=False),
        sa.Column("sequence", _INT, nullable=False),
        sa.Column("sealed_detail", _BLOB, nullable=False),
    )
    _index("clue_case", "source_node", "status")
    op.create_table(
        "clue_task",
        sa.Column("id", _INT, primary_key=True, autoincrement=True),
        *(
            sa.Column(c, _STRING, nullable=False)
            for c in ("clue_id", "domain", "department", "level", "status")
        ),
        *(sa.Column(c, _BIG, nullable=False) for c in ("acknowledge_by_ms", "close_by_ms")),
        sa.Column("escalations", _INT, nullable=False),
        sa.Column("findings", _BLOB, nullable=False),
        sa.Column("rectification", _STRING, nullable=False),
        sa.UniqueConstraint("clue_id", "domain", name="uq_clue_task_domain"),
    )
    _index("clue_task", "clue_id", "department", "status")
    op.create_table(
        "clue_event",
        sa.Column("id", _INT, primary_key=True, autoincrement=True),
        sa.Column("clue_id", _STRING, nullable=False),
        sa.Column("sequence", _INT, nullable=False),
        *(sa.Column(c, _STRING, nullable=False) for c in ("step", "department", "level", "note")),
        sa.Column("at_ms", _BIG, nullable=False),
        sa.Column("sealed_findings", _BLOB, nullable=False),
        sa.UniqueConstraint("clue_id", "sequence", name="uq_clue_event_seq"),
    )
    _index("clue_event", "clue_id")
