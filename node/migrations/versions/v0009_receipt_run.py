"""The owner keeps the status run that rode on an application's Deliver receipt
(docs/protocol.md 10.6), so a re-sent copy is answered with the same run. Nullable: rows
stored before it sent their changes by NotifyStatus and carry none."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("inbound_application", sa.Column("receipt_run", sa.LargeBinary(), nullable=True))
