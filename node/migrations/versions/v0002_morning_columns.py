"""Dead letters, owner-clerk departments and submission digests.

These were first added by an ad-hoc ``ADD COLUMN`` pass at start-up, so a database stamped at
the baseline may already have some of them: each step adds only what is missing. Every new
column carries a server default, so rows stored before it (applications among them) get a value.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("outbox_entry", sa.Column("dead_reason", sa.String(), server_default="", nullable=False)),
    ("outbox_entry", sa.Column("dead_at_ms", sa.BigInteger(), server_default="0", nullable=False)),
    ("user_account", sa.Column("department", sa.String(), server_default="", nullable=False)),
)


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table, column in _COLUMNS:
        if column.name not in {c["name"] for c in inspector.get_columns(table)}:
            op.add_column(table, column)
    if not inspector.has_table("submission_digest"):
        op.create_table(
            "submission_digest",
            sa.Column("application_id", sa.String(), nullable=False),
            sa.Column("digest", sa.String(), nullable=False),
            sa.PrimaryKeyConstraint("application_id"),
        )
