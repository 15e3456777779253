"""Dead letters: outbox entries that delivery gave up on, kept for an operator.

An entry becomes a dead letter when sending it again unchanged cannot succeed, so that it
neither blocks the entries behind it nor disappears in silence:

- ``too_large``: its envelope alone exceeds the peer's message limit (found when claiming,
  or when the peer refuses a batch of one as too large);
- a REJECTED receipt that is a delivery failure rather than a decision: the peer could not
  take the item in (``unknown_application``, ``malformed_status``, ``malformed_body``,
  ``unknown_service``, ``id_taken``, ``origin_mismatch``, ``sealed_payload_invalid``, a
  validation code, ...), or refused its envelope (an envelope reason code, for one envelope
  of a batch whose others verified: a sender signs a whole batch alike, so this is no
  passing condition).

Not dead letters: REJECTED receipts that carry the owner's *decision*, from its policy
(``rule_deny``, ``default_deny``, ``consent_required``, ``quota``) or a repeat of such a
refusal (``refused``). Those are final answers about the application, not failures of the
link: the origin already shows them to the clerk as the ``refused`` status with its reason
code, and an operator re-driving them would only be refused again. Everything else that is
REJECTED is a dead letter, new codes included: an unknown refusal is louder as a dead
letter than silently done. A whole call that fails (a peer down, every envelope of it
refused) is not a dead letter either: it is retried with backoff, and a link that stays
stuck turns ``/healthz`` degraded (:func:`node.delivery.outbox.stalled_hops`).

An operator lists them with ``yrd outbox dead`` and re-drives one with ``yrd outbox retry ID``
after fixing the cause; a re-driven entry is signed afresh and goes to the back of nothing: it
is due at once, in its original place by id.
"""

from __future__ import annotations

import logging
from typing import Final

from yrd.peer.v1 import peer_pb2

from core.errors import ENVELOPE_REASONS
from node import metrics
from node.delivery.outbox import TOO_LARGE
from policies.model import CODE_CONSENT_REQUIRED, CODE_DEFAULT_DENY, CODE_QUOTA, CODE_RULE_DENY

log = logging.getLogger(__name__)

# The owner's decisions about an application: final, shown to the clerk, not for an operator.
DECISION_CODES: Final = frozenset(
    {CODE_RULE_DENY, CODE_DEFAULT_DENY, CODE_CONSENT_REQUIRED, CODE_QUOTA, "refused"}
)


KNOWN_REASONS: Final = frozenset(
    {
        TOO_LARGE,
        "unknown_application",
        "malformed_status",
        "malformed_body",
        "unknown_service",
        "id_taken",
        "origin_mismatch",
        "sealed_payload_invalid",
        "no_policy_bundle",
        "nested_forward",
        # The owner's admission checks (docs/protocol.md section 10): the origin sent what its
        # own counter should have refused, a bug an operator must see.
        "invalid_application_id",
        "unknown_version",
        "bad_time",
        "fields_present_mismatch",
        "invalid_form_field",
        "unknown_material",
        "missing_material",
        "invalid_purpose",
        *ENVELOPE_REASONS,
    }
)


def is_dead_letter(receipt: peer_pb2.Receipt) -> bool:
    """Whether a receipt settles its entry as a dead letter rather than as done."""
    return (
        receipt.outcome == peer_pb2.ReceiptOutcome.RECEIPT_OUTCOME_REJECTED
        and receipt.reason_code not in DECISION_CODES
    )


def report(peer: str, entry_id: int, item_id: str, reason: str) -> None:
    """Count and log one new dead letter. ``item_id`` is an application id or an envelope
    digest, never personal data; ``repr`` quotes it and the peer's reason code, so a peer's
    text cannot forge a log line, and a code outside the known set is counted as ``other``,
    so a peer cannot grow the metric's labels without bound."""
    metrics.OUTBOX_DEAD_LETTERED.labels(reason=reason if reason in KNOWN_REASONS else "other").inc()
    log.warning(
        "outbox entry %d (%r) to %s is a dead letter: %r; `yrd outbox retry %d` re-drives it",
        entry_id,
        item_id,
        peer,
        reason,
        entry_id,
    )
