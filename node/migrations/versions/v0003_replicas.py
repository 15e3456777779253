"""Replicas: quota buckets shared through the database, and audit checkpoints.

``quota_usage`` holds one token bucket per (quota, peer or service) so replicas of a node
spend one quota together. ``audit_checkpoint`` holds the signed heads of audit chains: this
node's own and the ones its peers handed over (node/delivery/checkpoints.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table("quota_usage"):
        op.create_table(
            "quota_usage",
            sa.Column("quota_id", sa.String(), nullable=False),
            sa.Column("scope_key", sa.String(), nullable=False),
            sa.Column("tokens", sa.Float(), nullable=False),
            sa.Column("updated_ms", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("quota_id", "scope_key"),
        )
    if not inspector.has_table("audit_checkpoint"):
        op.create_table(
            "audit_checkpoint",
            sa.Column("node_id", sa.String(), nullable=False),
            sa.Column("seq", sa.BigInteger(), nullable=False),
            sa.Column("head_hash", sa.String(), nullable=False),
            sa.Column("at_ms", sa.BigInteger(), nullable=False),
            sa.Column("key_id", sa.String(), nullable=False),
            sa.Column("signature", sa.LargeBinary(), nullable=False),
            sa.Column("received_at_ms", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("node_id", "seq"),
        )
