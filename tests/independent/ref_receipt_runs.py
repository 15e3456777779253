"""Section 10.6 of docs/protocol.md, the origin's side: a status run carried on the `Deliver` receipt.

Written from the document alone, like the rest of this package; each rule cites its section. Where
the document leaves a choice open, the choice is named in a comment.

The receipt has already verified as a response (4) to the `Deliver` envelope that carried the
origin's application, sent directly and with `status_on_receipt` true (10.1 field 10). What an
origin that did not ask does with a run is not said; it would be taken in the same way here
(RECEIPT_RUN_GAPS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.independent import wire
from tests.independent.primitives import Rejected
from tests.independent.ref_status import Origin, check_changes, check_held, read_run, record

# 10.4: ReceiptOutcome values.
ACCEPTED, DUPLICATE, REJECTED, RETRY = 1, 2, 3, 4
SETTLING = frozenset({ACCEPTED, DUPLICATE, REJECTED})  # 4.1: what settles an item
STATUS_RUN_FIELD = 7  # 10.4: `7 status_run StatusRun`

USABLE = "usable"
NOT_SETTLED = "not_settled"


@dataclass(frozen=True)
class Receipt:
    """A Receipt by the field numbers of 10.4 (only what the origin reads here).

    `status_run` is None when field 7 is absent and the run's bytes otherwise, b"" for a field 7
    set to an empty run: 10.6 tells the two apart ("field 7 set, even to an empty run").
    `item_id` is not read: the receipt is bound to the `Deliver` envelope by `in_reply_to` (4 step
    9), 10.6 checks the run's first change against the application instead, and the document does
    not say what an `item_id` other than the application's would do.
    """

    outcome: int
    status_run: bytes | None


def read_receipt(raw: bytes) -> Receipt:
    """Fields 2 and 7 of a serialized Receipt; the others are skipped like unknown fields."""
    outcome = 0
    runs: list[bytes] = []
    for number, value in wire.known_fields(raw, {2: wire.VARINT, STATUS_RUN_FIELD: wire.LENGTH_DELIMITED}):
        if number == 2:
            assert isinstance(value, int)
            outcome = wire.as_int32(value)  # section 8: enums are open
        else:
            assert isinstance(value, bytes)
            runs.append(value)
    # Section 8: a singular message field that occurs twice is merged. Merging a message whose
    # only field is repeated is concatenating its encodings, so the run is the join of them all.
    return Receipt(outcome, b"".join(runs) if runs else None)


def take_receipt(origin: Origin, raw: bytes, sender: str) -> tuple[str, list[int]]:
    """10.6, the origin's table: ("usable" or the code that makes the receipt unusable, or
    "not_settled" for an outcome that settles nothing, and the sequences the run records).

    `sender` is the receipt envelope's sender, the member that answered the `Deliver` (4 step 7
    made it the request's destination). A receipt that is not usable changes nothing (4.1).
    """
    receipt = read_receipt(raw)
    if receipt.outcome not in SETTLING:
        # 10.6 reads a run only on an ACCEPTED, DUPLICATE or REJECTED receipt, so a RETRY
        # receipt is handled as 10.4 says whatever it carries. The document is silent on an
        # outcome outside 1-4 (the enum is open, section 8); it is read here as settling nothing.
        return NOT_SETTLED, []
    applied: list[int] = []
    if receipt.status_run is not None:
        changes = read_run(receipt.status_run)
        try:
            check_changes(changes)  # steps 1-4
            # Step 5 comes before 6, so a run of another application is malformed_status here,
            # where a NotifyStatus item of it would be unknown_application (10.2 step 5).
            if changes[0].application_id != origin.application_id:
                raise Rejected("malformed_status", "step 5: the run names another application")
            check_held(origin, changes, sender)  # step 6
        except Rejected as refused:
            return refused.code, []
        applied = record(origin, changes)  # step 7
    # 10.4 (ACCEPTED: "its status changes follow ..., the first of them perhaps on this
    # receipt"), read with 10.3's last paragraph and section 9 (`receipt_runs`, `shows`): a usable
    # receipt from the owner is itself the application's first change, sequence 1 (`DELIVERED`,
    # or `REFUSED` for a REJECTED one). A receipt from anyone else (a relay's `relayed`) is not.
    # The run is recorded first: its own change 1 carries the owner's reason, time and documents,
    # and the vectors list it among the sequences the run records.
    if sender == origin.owner:
        origin.recorded.add(1)  # recorded unless already held (10.2 step 6)
    return USABLE, applied
