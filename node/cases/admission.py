"""What makes an application admissible for a service: one set of checks, run by the
origin's counter before anything is stored or sent and again by the owner after it opens
the sealed payload (docs/protocol.md §10). A member's key proves who sent an item, not
that the item is right, so the owner believes nothing it can check; running the very same
function on both sides means a counter can never send what its owner would refuse because
of a second, drifting copy of the rules.

Every failure is an InvalidInput whose ``code`` is what a counter shows a clerk and what
an owner puts in its signed REJECTED receipt.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from yrd.catalogue.v1 import catalogue_pb2
from yrd.peer.v1 import peer_pb2

from core.errors import InvalidInput, NotFound, Unavailable, clip
from registry.forms import validate_applicant, validate_form

# What a node may call an application: what origins generate (12 hex digits of milliseconds,
# 16 of randomness), UUIDs and the vectors' ``app-0001`` all fit; a path, a newline or a
# 4,000-character id does not, so an id is safe in a log line, a URL path and a file name.
APPLICATION_ID_PATTERN = re.compile(r"[0-9a-z][0-9a-z-]{0,63}")
# How long an application may take from the counter to its owner: retries and a relay's
# outbox may hold it for days; older than this, its dates are not believed.
MAX_APPLICATION_AGE_MS = 30 * 86_400_000
# An origin whose clock ran ahead stamped its applications in our future. Up to this far
# ahead that is a clock to wait for (RETRY ``stamped_ahead``), not a forgery; beyond, bad_time.
MAX_AHEAD_MS = 3_600_000
# A purpose is a name policy rules match on (``service-delivery``), not free text.
PURPOSE_PATTERN = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,63}")


@dataclass(frozen=True)
class Admitted:
    """The application as it will be sealed and stored: names trimmed, the form normalised."""

    applicant_name: str
    applicant_id_number: str
    form: dict[str, Any]


def is_application_id(value: str) -> bool:
    return APPLICATION_ID_PATTERN.fullmatch(value) is not None


def check_materials(defn: catalogue_pb2.ServiceDefinition, materials: Sequence[str]) -> None:
    """Every attachment names a material of the service and every required one is there."""
    known = {m.name for m in defn.materials}
    for i, material in enumerate(materials):
        if material not in known:
            raise InvalidInput(
                f"material {clip(material)} is not one this service accepts ({', '.join(sorted(known))})",
                code="unknown_material",
                field=f"attachments[{i}].material",
            )
    given = set(materials)
    missing = [m.name for m in defn.materials if m.required and m.name not in given]
    if missing:
        raise InvalidInput(
            f"required materials are missing: {', '.join(missing)}",
            code="missing_material",
            field="attachments",
        )


def admit(
    defn: catalogue_pb2.ServiceDefinition,
    *,
    applicant_name: object,
    applicant_id_number: object,
    form: object,
    materials: Sequence[str],
    consent: bool,
    purpose: str,
) -> Admitted:
    """The admitted application, or InvalidInput for the first problem, in this order:
    applicant, form (the owner's published schema), materials, consent, purpose."""
    name, id_number = validate_applicant(applicant_name, applicant_id_number)
    cleaned = validate_form(list(defn.form), form)
    check_materials(defn, materials)
    if not consent:
        raise InvalidInput(
            "the applicant's consent to send the data to the owner is required",
            code="consent_required",
            field="consent",
        )
    if PURPOSE_PATTERN.fullmatch(purpose) is None:
        raise InvalidInput(
            "purpose must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            code="invalid_purpose",
            field="purpose",
        )
    return Admitted(name, id_number, cleaned)


def check_sender(t: peer_pb2.ApplicationTransfer, sender: str) -> None:
    """The checks an owner makes before it looks for an earlier copy (protocol §10.3 steps 1-2)."""
    if t.origin_node != sender:
        raise InvalidInput("sender is not the origin", code="origin_mismatch", field="origin_node")
    if not is_application_id(t.application_id):
        raise InvalidInput(
            "an application id is 1 to 64 characters of [0-9a-z-], starting with [0-9a-z]",
            code="invalid_application_id",
            field="application_id",
        )


def check_transfer(
    t: peer_pb2.ApplicationTransfer,
    defn: catalogue_pb2.ServiceDefinition | None,
    *,
    now_ms: int,
    max_skew_ms: int,
) -> catalogue_pb2.ServiceDefinition:
    """The owner's own definition of the service, checked against the transfer (§10.3 steps 4-6).

    The catalogue keeps no history, so the version in force is the one published now.
    """
    if defn is None:
        raise NotFound("this node owns no such service", code="unknown_service", field="service_id")
    if t.service_version != defn.version:
        raise InvalidInput(
            f"this node publishes version {defn.version} of the service",
            code="unknown_version",
            field="service_version",
        )
    check_stamp(t.submitted_at_ms, "submitted_at_ms", now_ms=now_ms, max_skew_ms=max_skew_ms)
    return defn


def check_stamp(at_ms: int, field: str, *, now_ms: int, max_skew_ms: int) -> None:
    """A time the sender's clock stamped (protocol §10.1): within [now - 30 days, now + skew]
    (else ``bad_time``), except that a stamp up to an hour ahead is a sender whose clock runs
    ahead: ``Unavailable`` ``stamped_ahead``, answered RETRY, taken once our clock catches up."""
    ahead = at_ms - now_ms
    if max_skew_ms < ahead <= MAX_AHEAD_MS:
        raise Unavailable(
            f"{field} is {ahead} ms ahead of this node's clock (allowed {max_skew_ms}); retry later",
            code="stamped_ahead",
            field=field,
        )
    if not now_ms - MAX_APPLICATION_AGE_MS <= at_ms <= now_ms + max_skew_ms:
        raise InvalidInput(
            f"{field} must lie within [now - {MAX_APPLICATION_AGE_MS}, now + {max_skew_ms}]",
            code="bad_time",
            field=field,
        )


def check_fields_present(t: peer_pb2.ApplicationTransfer, form: dict[str, Any]) -> list[str]:
    """The form's field names, sorted, when fields_present names exactly them, each once."""
    fields = sorted(form)
    if sorted(t.fields_present) != fields:
        raise InvalidInput(
            "fields_present does not name exactly the fields of the form",
            code="fields_present_mismatch",
            field="fields_present",
        )
    return fields
