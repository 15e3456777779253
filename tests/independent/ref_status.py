"""Sections 10.2, 10.4 and 10.5 of docs/protocol.md: the origin taking in an owner's status changes,
one `status` or a `run` of them.

Written from the document alone, like the rest of this package; each rule cites its section. Where
the document leaves a choice open, the choice is named in a comment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.independent import wire
from tests.independent.primitives import Rejected

# 10.2, field 2: the ApplicationStatus values 1 to 9; any other value (0 included) is unknown.
KNOWN_STATUSES = frozenset(range(1, 10))
MAX_CHANGES = 16  # 10.2 step 1
MAX_SEQUENCE = 2**31 - 1  # 10.2, field 5
# 10.5: results bounds. "64 KiB" for yrd.components is read as 65,536 characters, the unit the
# other bounds of that sentence use (the document does not say characters or bytes).
MAX_RESULTS = 120
MAX_NAME = 100
MAX_VALUE = 2000
MAX_COMPONENTS_VALUE = 64 * 1024
COMPONENTS = "yrd.components"

STATUS_FIELD, RUN_FIELD = 1, 5  # 3.4: StatusItem fields 1 `status` and 5 `run`


@dataclass
class Change:
    """A StatusUpdate by the field numbers of the 10.2 table (only what the checks read)."""

    application_id: str = ""
    status: int = 0
    sequence: int = 0
    results: dict[str, str] = field(default_factory=dict)


def read_change(raw: bytes) -> Change:
    change = Change()
    schema = {1: wire.LENGTH_DELIMITED, 2: wire.VARINT, 5: wire.VARINT, 8: wire.LENGTH_DELIMITED}
    for number, value in wire.known_fields(raw, schema):
        if number == 1:
            assert isinstance(value, bytes)
            change.application_id = wire.as_string(value)
        elif number == 2:
            assert isinstance(value, int)
            change.status = wire.as_int32(value)
        elif number == 5:
            assert isinstance(value, int)
            change.sequence = value
        else:
            # A map entry is a message {1 key, 2 value}; a key given twice keeps the last value
            # (protobuf's map rule; section 8 does not name maps).
            assert isinstance(value, bytes)
            entry = {1: "", 2: ""}
            for n, v in wire.known_fields(value, {1: wire.LENGTH_DELIMITED, 2: wire.LENGTH_DELIMITED}):
                assert isinstance(v, bytes)
                entry[n] = wire.as_string(v)
            change.results[entry[1]] = entry[2]
    return change


def read_status_item(raw: bytes) -> list[Change]:
    """The changes a StatusItem carries (3.4, 10.2): its `run`'s, or its one `status`. Of the
    oneof, the field that occurs last is the one set, and a message field that occurs more than
    once in a row is merged (section 8), which for protobuf is reading the encodings joined."""
    number = 0
    parts: list[bytes] = []
    for seen, value in wire.known_fields(
        raw, {STATUS_FIELD: wire.LENGTH_DELIMITED, RUN_FIELD: wire.LENGTH_DELIMITED}
    ):
        assert isinstance(value, bytes)
        parts = [*parts, value] if seen == number else [value]
        number = seen
    if not parts:
        raise wire.WireError("neither status nor run")  # malformed_body, 3.4; no vector has it
    if number == STATUS_FIELD:
        return [read_change(b"".join(parts))]
    return read_run(b"".join(parts))


def read_run(raw: bytes) -> list[Change]:
    """The changes of a StatusRun (3.4: `repeated StatusUpdate updates = 1`), in the order carried."""
    updates = wire.known_fields(raw, {1: wire.LENGTH_DELIMITED})
    return [read_change(raw_change) for _, raw_change in updates if isinstance(raw_change, bytes)]


def _results_within_bounds(results: dict[str, str]) -> bool:
    """10.5: at most 120 results, names of 1 to 100 characters, values of at most 2,000."""
    if len(results) > MAX_RESULTS:
        return False
    for name, value in results.items():
        limit = MAX_COMPONENTS_VALUE if name == COMPONENTS else MAX_VALUE
        if not 1 <= len(name) <= MAX_NAME or len(value) > limit:
            return False
    return True


def check_changes(changes: list[Change]) -> None:
    """10.2 steps 1 to 4, which read nothing but the item."""
    if not 1 <= len(changes) <= MAX_CHANGES:
        raise Rejected("malformed_status", "step 1: 1 to 16 changes")
    first = changes[0]
    if any(c.application_id != first.application_id for c in changes):
        raise Rejected("malformed_status", "step 2: one application")
    if any(c.sequence != first.sequence + i for i, c in enumerate(changes)):
        raise Rejected("malformed_status", "step 3: consecutive sequences")
    for c in changes:
        if c.status not in KNOWN_STATUSES or not 1 <= c.sequence <= MAX_SEQUENCE:
            raise Rejected("malformed_status", "step 4: status or sequence")
        if not _results_within_bounds(c.results):
            raise Rejected("malformed_status", "step 4: results")


@dataclass
class Origin:
    """The origin's state the vectors describe: one application, its owner, its recorded sequences."""

    application_id: str
    owner: str
    recorded: set[int]

    def shows(self) -> int:
        return max(self.recorded, default=0)


def check_held(origin: Origin, changes: list[Change], sender: str) -> None:
    """10.2 step 5: the origin holds the application, and its owner is the authenticated sender."""
    if changes[0].application_id != origin.application_id or sender != origin.owner:
        raise Rejected("unknown_application", "step 5")


def record(origin: Origin, changes: list[Change]) -> list[int]:
    """10.2 step 6: record each change the origin lacks; return their sequences, in order."""
    applied = [c.sequence for c in changes if c.sequence not in origin.recorded]
    origin.recorded.update(applied)
    return applied


def apply_status_item(origin: Origin, raw: bytes, sender: str) -> tuple[str, str, list[int]]:
    """10.2 and 10.4: (outcome or reason code, the receipt's item_id, the sequences recorded)."""
    changes = read_status_item(raw)
    # 10.4: item_id is the first change's application_id, empty for an empty run.
    item_id = changes[0].application_id if changes else ""
    try:
        check_changes(changes)
        check_held(origin, changes, sender)
    except Rejected as refused:
        return refused.code, item_id, []
    applied = record(origin, changes)
    return ("accepted" if applied else "duplicate"), item_id, applied
