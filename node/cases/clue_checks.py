"""What makes a supervision clue admissible: one set of checks, run by the counter that takes
the clue in before anything is stored or sent, and again by the member that owns its region
after it opens the sealed detail (docs/protocol.md §13). As for applications
(node/cases/admission.py), a member's signature proves who sent a clue, not that it is right;
the same function on both sides keeps a counter from sending what the receiver would refuse.

Every failure is an InvalidInput whose ``code`` is what the counter shows and what the
receiver puts in its signed REJECTED receipt.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from yrd.peer.v1 import peer_pb2

from core.errors import InvalidInput, clip
from node.cases.admission import check_stamp, is_application_id
from node.cases.requests import Document
from registry.dispatch import DOMAINS, SEVERITIES, SOURCES, check_credit_code
from registry.divisions import require_code

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
MAX_ACKNOWLEDGE_MS = 30 * DAY_MS
MAX_CLOSE_MS = 365 * DAY_MS
MAX_PLACE_CHARS = 200
MAX_DESCRIPTION_CHARS = 4000
MAX_REPORTER_CHARS = 100
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class ClueRequest:
    """A clue as the counter takes it in (node/counter/clue_contract.py builds it)."""

    source: str
    region_code: str
    domains: tuple[str, ...]
    subject_credit_code: str
    subject_place: str
    severity: str
    description: str
    acknowledge_within_hours: int
    close_within_days: int
    reporter_name: str = ""
    reporter_contact: str = ""
    documents: tuple[Document, ...] = ()
    digest: str = ""


def _line(value: str, limit: int, code: str, field: str) -> None:
    if len(value) > limit or _CONTROL.search(value):
        raise InvalidInput(f"at most {limit} characters, no control characters", code=code, field=field)


def check_clue(
    *,
    source: str,
    region_code: str,
    domains: Sequence[str],
    credit_code: str,
    place: str,
    severity: str,
    reported_at_ms: int,
    acknowledge_by_ms: int,
    close_by_ms: int,
    description: str,
    reporter_name: str,
    reporter_contact: str,
    now_ms: int,
    max_skew_ms: int,
) -> None:
    """InvalidInput for the first problem, in the order of docs/protocol.md §13.3."""
    if source not in SOURCES:
        raise InvalidInput(
            f"source must be one of {', '.join(SOURCES)}", code="invalid_source", field="source"
        )
    require_code(region_code, "region_code")
    if not 1 <= len(domains) <= len(DOMAINS) or len(set(domains)) != len(domains):
        raise InvalidInput("one to six distinct domains", code="invalid_domain", field="domains")
    for i, domain in enumerate(domains):
        if domain not in DOMAINS:
            raise InvalidInput(
                f"unknown domain {clip(domain)!r} ({', '.join(DOMAINS)})",
                code="invalid_domain",
                field=f"domains[{i}]",
            )
    if bool(credit_code) == bool(place.strip()):
        raise InvalidInput(
            "name the subject by its unified social credit code or by a place, one of them",
            code="invalid_subject",
            field="subject",
        )
    if credit_code:
        check_credit_code(credit_code, "subject.credit_code")
    _line(place, MAX_PLACE_CHARS, "invalid_subject", "subject.place")
    if severity not in SEVERITIES:
        raise InvalidInput(
            f"severity must be one of {', '.join(SEVERITIES)}", code="invalid_severity", field="severity"
        )
    check_stamp(reported_at_ms, "reported_at_ms", now_ms=now_ms, max_skew_ms=max_skew_ms)
    if not reported_at_ms < acknowledge_by_ms <= reported_at_ms + MAX_ACKNOWLEDGE_MS:
        raise InvalidInput(
            "the acknowledgement deadline must fall within 30 days of the report",
            code="bad_deadline",
            field="acknowledge_by",
        )
    if not acknowledge_by_ms < close_by_ms <= reported_at_ms + MAX_CLOSE_MS:
        raise InvalidInput(
            "the closing deadline must fall after the acknowledgement deadline and within a year",
            code="bad_deadline",
            field="close_by",
        )
    if (
        not description.strip()
        or len(description) > MAX_DESCRIPTION_CHARS
        or _TEXT_CONTROL.search(description)
    ):
        raise InvalidInput(
            f"a description of 1 to {MAX_DESCRIPTION_CHARS} characters, no control characters but newlines",
            code="invalid_description",
            field="description",
        )
    _line(reporter_name, MAX_REPORTER_CHARS, "invalid_reporter", "reporter.name")
    _line(reporter_contact, MAX_REPORTER_CHARS, "invalid_reporter", "reporter.contact")
    if source == "citizen_report" and not reporter_name.strip():
        raise InvalidInput(
            "a citizen's report names its reporter (sealed to the receiver)",
            code="reporter_required",
            field="reporter.name",
        )


def check_clue_sender(t: peer_pb2.ClueTransfer, sender: str) -> None:
    """What the receiver checks before it looks for an earlier copy (§13.3 steps 1-2)."""
    if t.source_node != sender:
        raise InvalidInput(
            "sender is not the clue's source node", code="origin_mismatch", field="source_node"
        )
    if not is_application_id(t.clue_id):
        raise InvalidInput(
            "a clue id is 1 to 64 characters of [0-9a-z-], starting with [0-9a-z]",
            code="invalid_clue_id",
            field="clue_id",
        )


def check_transfer(
    t: peer_pb2.ClueTransfer, detail: peer_pb2.ClueDetail, *, now_ms: int, max_skew_ms: int
) -> None:
    """The whole clue as received, by the counter's own checks."""
    check_clue(
        source=t.source,
        region_code=t.region_code,
        domains=list(t.domains),
        credit_code=t.subject_credit_code,
        place=t.subject_place,
        severity=t.severity,
        reported_at_ms=t.reported_at_ms,
        acknowledge_by_ms=t.acknowledge_by_ms,
        close_by_ms=t.close_by_ms,
        description=detail.description,
        reporter_name=detail.reporter_name,
        reporter_contact=detail.reporter_contact,
        now_ms=now_ms,
        max_skew_ms=max_skew_ms,
    )
