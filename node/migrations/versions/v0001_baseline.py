"""Baseline: the schema every node database had before versioned migrations (the tables as
they stood before dead letters, owner-clerk departments and submission digests; commit d5ad50f).

A database made before alembic has no ``alembic_version`` row; ``yrd db upgrade`` stamps it at
this revision and runs the rest, which is why 0002 tolerates columns that are already there.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "application",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("service_id", sa.String(), nullable=False),
        sa.Column("owner_node", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("status_sequence", sa.Integer(), nullable=False),
        sa.Column("submitted_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("due_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("submitted_by", sa.String(), nullable=False),
        sa.Column("idempotency_key", sa.String(), nullable=False),
        sa.Column("purpose", sa.String(), nullable=False),
        sa.Column("policy_decision_id", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("submitted_by", "idempotency_key", name="uq_application_idem"),
    )
    op.create_index(op.f("ix_application_status"), "application", ["status"], unique=False)
    op.create_table(
        "audit_record",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("direction", sa.String(), nullable=False),
        sa.Column("peer", sa.String(), nullable=False),
        sa.Column("method", sa.String(), nullable=False),
        sa.Column("envelope_digest", sa.String(), nullable=False),
        sa.Column("detail", sa.String(), nullable=False),
        sa.Column("prev_hash", sa.String(), nullable=False),
        sa.Column("hash", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_table(
        "inbound_application",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("origin_node", sa.String(), nullable=False),
        sa.Column("service_id", sa.String(), nullable=False),
        sa.Column("service_version", sa.Integer(), nullable=False),
        sa.Column("handler", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("received_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("due_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("purpose", sa.String(), nullable=False),
        sa.Column("sealed_payload", sa.LargeBinary(), nullable=False),
        sa.Column("fields_present", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("rule_id", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_inbound_application_origin_node"), "inbound_application", ["origin_node"], unique=False
    )
    op.create_index(op.f("ix_inbound_application_status"), "inbound_application", ["status"], unique=False)
    op.create_table(
        "outbox_entry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("next_hop", sa.String(), nullable=False),
        sa.Column("destination", sa.String(), nullable=False),
        sa.Column("method", sa.String(), nullable=False),
        sa.Column("item_id", sa.String(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("next_attempt_ms", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("last_error", sa.String(), nullable=False),
        sa.Column("claimed_until_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_outbox_entry_item_id"), "outbox_entry", ["item_id"], unique=False)
    op.create_index(
        op.f("ix_outbox_entry_next_attempt_ms"), "outbox_entry", ["next_attempt_ms"], unique=False
    )
    op.create_index(op.f("ix_outbox_entry_next_hop"), "outbox_entry", ["next_hop"], unique=False)
    op.create_index(op.f("ix_outbox_entry_state"), "outbox_entry", ["state"], unique=False)
    op.create_table(
        "peer_catalogue",
        sa.Column("node_id", sa.String(), nullable=False),
        sa.Column("digest", sa.LargeBinary(), nullable=False),
        sa.Column("catalogue", sa.LargeBinary(), nullable=False),
        sa.Column("fetched_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("node_id"),
    )
    op.create_table(
        "peer_state",
        sa.Column("node_id", sa.String(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("backoff_until_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_error", sa.String(), nullable=False),
        sa.Column("last_success_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("node_id"),
    )
    op.create_table(
        "policy_decision",
        sa.Column("decision_id", sa.String(length=40), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("deciding_rule", sa.String(length=80), nullable=False),
        sa.Column("rule_ids", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("obligations", sa.String(), nullable=False),
        sa.Column("bundle_revision", sa.String(length=160), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("peer_node", sa.String(length=32), nullable=False),
        sa.Column("peer_jurisdiction", sa.String(length=12), nullable=False),
        sa.Column("service_id", sa.String(length=128), nullable=False),
        sa.Column("service_owner", sa.String(length=12), nullable=False),
        sa.Column("service_department", sa.String(length=128), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=64), nullable=False),
        sa.Column("fields", sa.String(), nullable=False),
        sa.Column("consent", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("decision_id"),
    )
    op.create_index(op.f("ix_policy_decision_at_ms"), "policy_decision", ["at_ms"], unique=False)
    op.create_table(
        "receipt_record",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("application_id", sa.String(), nullable=False),
        sa.Column("from_node", sa.String(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("reason_code", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("rule_id", sa.String(), nullable=False),
        sa.Column("received_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_receipt_record_application_id"), "receipt_record", ["application_id"], unique=False
    )
    op.create_table(
        "result_document",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("application_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("content_type", sa.String(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_result_document_application_id"), "result_document", ["application_id"], unique=False
    )
    op.create_table(
        "seen_nonce",
        sa.Column("sender", sa.String(), nullable=False),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("sender", "nonce"),
    )
    op.create_index(op.f("ix_seen_nonce_created_at_ms"), "seen_nonce", ["created_at_ms"], unique=False)
    op.create_table(
        "session_token",
        sa.Column("token_hash", sa.String(), nullable=False),
        sa.Column("username", sa.String(), nullable=False),
        sa.Column("expires_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index(op.f("ix_session_token_expires_at_ms"), "session_token", ["expires_at_ms"], unique=False)
    op.create_index(op.f("ix_session_token_username"), "session_token", ["username"], unique=False)
    op.create_table(
        "status_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("application_id", sa.String(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("rule_id", sa.String(), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("application_id", "sequence", name="uq_status_seq"),
    )
    op.create_index(op.f("ix_status_event_application_id"), "status_event", ["application_id"], unique=False)
    op.create_table(
        "user_account",
        sa.Column("username", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("password_hash", sa.String(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("username"),
    )
