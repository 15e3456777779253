"""One-matter bundles (node/cases/bundles/): result values an owner's status change carried,
and at the lead node each bundle's run and its parts."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "application_result",
        sa.Column("application_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("value", sa.String(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("application_id", "name"),
    )
    op.create_table(
        "bundle_run",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("service_id", sa.String(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("due_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("wanted", sa.Integer(), nullable=False),
        sa.Column("handled", sa.Integer(), nullable=False),
        sa.Column("sent_digest", sa.String(), nullable=False),
    )
    op.create_index("ix_bundle_run_wanted", "bundle_run", ["wanted"])
    op.create_table(
        "bundle_part",
        sa.Column("bundle_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("service_id", sa.String(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("application_id", sa.String(), nullable=False),
        sa.Column("failure", sa.String(), nullable=False),
        sa.Column("sealed_correction", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("bundle_id", "name"),
    )
    op.create_index("ix_bundle_part_application_id", "bundle_part", ["application_id"])
