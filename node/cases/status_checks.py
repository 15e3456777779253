"""What an owner's status changes may hold, checked before anything is read or written.

A change crosses a trust boundary: the owner's signature says who sent it, not that it is
sound. A single ``StatusUpdate`` is checked as a run of one, so a run and a lone change are
held to the same rules by the same code (docs/protocol.md 10.2): a run is refused whole
when any of its changes would be refused alone, or when its changes are not one
application's consecutive changes in order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from yrd.peer.v1 import peer_pb2

from core.errors import clip
from node.cases.statuses import FIRST_OWNER_SEQUENCE, FROM_WIRE

# At most this many changes in one run. An owner decides an application in a handful of
# steps (the automatic handler: four), so 16 leaves room and bounds the work one item asks for.
MAX_RUN = 16
# At most this many bytes (the serialized StatusRun) ride on one Deliver receipt (protocol 10.6,
# "Sizes"): with the 64 receipts of a full batch a DeliverResponse stays near 4 MiB, inside any
# member's message limit. A larger run (large result documents) goes by NotifyStatus, whose
# batches are bounded by the peer's limit and halved when refused.
MAX_RUN_BYTES_ON_RECEIPT = 64 * 1024
MAX_RESULTS = 120
MAX_RESULT_NAME = 100
MAX_RESULT_VALUE = 2000
MAX_SNAPSHOT_VALUE = 64 * 1024
# The highest sequence the sequence columns hold (INTEGER: 32 bits on PostgreSQL). The wire's
# uint64 allows more, which would fail the whole batch's transaction rather than refuse one item.
MAX_SEQUENCE = 2**31 - 1
# The key under which a bundle's lead sends its parts' snapshot (node/cases/bundles/status.py),
# the one result allowed to be long.
COMPONENTS_KEY = "yrd.components"


def results_problem(results: Mapping[str, str]) -> str | None:
    """Why a status change's results are not acceptable from a peer, or None."""
    if len(results) > MAX_RESULTS:
        return f"more than {MAX_RESULTS} results"
    for name, value in results.items():
        limit = MAX_SNAPSHOT_VALUE if name == COMPONENTS_KEY else MAX_RESULT_VALUE
        if not name or len(name) > MAX_RESULT_NAME or len(value) > limit:
            return f"result {clip(name)} is empty, or its name or value too long"
    return None


def _change_problem(update: peer_pb2.StatusUpdate) -> str | None:
    if update.status not in FROM_WIRE:
        return "unknown status"
    if not FIRST_OWNER_SEQUENCE <= update.sequence <= MAX_SEQUENCE:
        return "sequence 0, or over 2^31 - 1"
    return results_problem(update.results)


def run_problem(updates: Sequence[peer_pb2.StatusUpdate]) -> str | None:
    """Why these changes (a run, or one change alone) are refused as ``malformed_status``,
    or None: empty or over :data:`MAX_RUN`, more than one application, sequences that do
    not go up by one, or a change that would be refused on its own."""
    if not updates:
        return "an empty run"
    if len(updates) > MAX_RUN:
        return f"more than {MAX_RUN} changes in one run"
    first = updates[0]
    for i, update in enumerate(updates):
        if update.application_id != first.application_id:
            return "a run of more than one application"
        if update.sequence != first.sequence + i:
            return "sequences not consecutive and increasing"
        problem = _change_problem(update)
        if problem is not None:
            return problem if len(updates) == 1 else f"change {i + 1}: {problem}"
    return None
