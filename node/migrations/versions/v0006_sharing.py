"""Data sharing (node/sharing/, docs/sharing.md): the subject-digest key, held records, data
requests at both ends (the holder's approved ones are the grants), the disclosure logs and the
call meter."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "data_secret",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "data_record",
        sa.Column("resource_id", sa.String(), nullable=False),
        sa.Column("subject_ref", sa.String(), nullable=False),
        sa.Column("fields_json", sa.String(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("resource_id", "subject_ref"),
    )
    op.create_table(
        "data_request_sent",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("holder_node", sa.String(), nullable=False),
        sa.Column("resource_id", sa.String(), nullable=False),
        sa.Column("department", sa.String(), nullable=False),
        sa.Column("fields", sa.String(), nullable=False),
        sa.Column("purpose", sa.String(), nullable=False),
        sa.Column("legal_basis", sa.String(), nullable=False),
        sa.Column("until_ms", sa.BigInteger(), nullable=False),
        sa.Column("requested_by", sa.String(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("granted_fields", sa.String(), nullable=False),
        sa.Column("granted_until_ms", sa.BigInteger(), nullable=False),
        sa.Column("note", sa.String(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_key", sa.String(), nullable=True),
        sa.Column("digest", sa.String(), nullable=False),
        sa.UniqueConstraint("requested_by", "idempotency_key", name="uq_data_request_idem"),
    )
    op.create_index("ix_data_request_sent_status", "data_request_sent", ["status"])
    op.create_table(
        "data_grant",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("asker_node", sa.String(), nullable=False),
        sa.Column("asker_department", sa.String(), nullable=False),
        sa.Column("resource_id", sa.String(), nullable=False),
        sa.Column("fields", sa.String(), nullable=False),
        sa.Column("purpose", sa.String(), nullable=False),
        sa.Column("legal_basis", sa.String(), nullable=False),
        sa.Column("until_ms", sa.BigInteger(), nullable=False),
        sa.Column("requested_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("requested_by", sa.String(), nullable=False),
        sa.Column("received_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("granted_fields", sa.String(), nullable=False),
        sa.Column("granted_until_ms", sa.BigInteger(), nullable=False),
        sa.Column("decided_by", sa.String(), nullable=False),
        sa.Column("decided_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("note", sa.String(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
    )
    op.create_index("ix_data_grant_asker_node", "data_grant", ["asker_node"])
    op.create_index("ix_data_grant_resource_id", "data_grant", ["resource_id"])
    op.create_index("ix_data_grant_status", "data_grant", ["status"])
    op.create_table(
        "data_disclosure",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("side", sa.String(), nullable=False),
        sa.Column("query_id", sa.String(), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("asker_node", sa.String(), nullable=False),
        sa.Column("asker_department", sa.String(), nullable=False),
        sa.Column("asked_by", sa.String(), nullable=False),
        sa.Column("holder_node", sa.String(), nullable=False),
        sa.Column("resource_id", sa.String(), nullable=False),
        sa.Column("subject_ref", sa.String(), nullable=False),
        sa.Column("purpose", sa.String(), nullable=False),
        sa.Column("basis", sa.String(), nullable=False),
        sa.Column("fields", sa.String(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("reason_code", sa.String(), nullable=False),
    )
    op.create_index("ix_data_disclosure_query_id", "data_disclosure", ["query_id"])
    op.create_index("ix_data_disclosure_subject_ref", "data_disclosure", ["subject_ref"])
    op.create_table(
        "data_meter",
        sa.Column("day", sa.String(), nullable=False),
        sa.Column("resource_id", sa.String(), nullable=False),
        sa.Column("asker_node", sa.String(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "resource_id", "asker_node", "outcome"),
    )
