"""The node's own random secret outgrows data sharing: besides the subject digests it now keys
the citizens' check codes (node/trust/secret.py), so its table is named for the node."""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.rename_table("data_secret", "node_secret")
