"""Application statuses: the names the counter API shows and their wire enum.

Sequence numbers order the changes of one application. The origin's own
``submitted`` is 0 (``awaiting_approval``, when a policy holds it for a second clerk,
is -1); the owner numbers its changes from 1, and its first change is always
``delivered`` or ``refused``. A direct receipt produces exactly that first
event too, so whichever arrives first wins and the other is a no-op.
"""

from __future__ import annotations

from yrd.peer.v1 import peer_pb2

S = peer_pb2.ApplicationStatus

TO_WIRE: dict[str, int] = {
    "submitted": S.APPLICATION_STATUS_SUBMITTED,
    "delivered": S.APPLICATION_STATUS_DELIVERED,
    "in_review": S.APPLICATION_STATUS_IN_REVIEW,
    "needs_materials": S.APPLICATION_STATUS_NEEDS_MATERIALS,
    "approved": S.APPLICATION_STATUS_APPROVED,
    "rejected": S.APPLICATION_STATUS_REJECTED,
    "completed": S.APPLICATION_STATUS_COMPLETED,
    "refused": S.APPLICATION_STATUS_REFUSED,
    "awaiting_approval": S.APPLICATION_STATUS_AWAITING_APPROVAL,
}
FROM_WIRE: dict[int, str] = {v: k for k, v in TO_WIRE.items()}

FINAL = frozenset({"rejected", "completed", "refused"})
FIRST_OWNER_SEQUENCE = 1
# A held application starts one below ``submitted`` so its release still moves forward.
HELD_SEQUENCE = -1
