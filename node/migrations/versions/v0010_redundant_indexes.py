"""Drop three indexes that repeat the leading column of a unique constraint on the same table
(``status_event.application_id``, ``clue_task.clue_id``, ``clue_event.clue_id``): the
constraint's own index answers every look-up by that column, and each insert paid for a second
B-tree, six times per routed application for the status events alone (docs/performance.md,
"Eighth round")."""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_DROPPED = (("status_event", "application_id"), ("clue_task", "clue_id"), ("clue_event", "clue_id"))


def upgrade() -> None:
    for table, column in _DROPPED:
        op.drop_index(f"ix_{table}_{column}", table_name=table)
