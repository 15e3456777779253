"""What makes a data query or a data request admissible: one set of checks, run by the asking
node before anything is sent and again by the holder after it opens the sealed subject
(docs/sharing.md "Checks"). A member's signature proves who asks, not that the question is
well formed; the same functions on both sides keep an asker from sending what the holder would
refuse, and a hostile peer from getting past the holder with what our own counter refuses.

Every failure of the query's shape is an InvalidInput whose ``code`` and ``field`` the counter
shows; the per-resource checks (consent, sharing class, grant) return a reason code instead, so
a holder can answer some resources of a query and refuse others.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass

from yrd.catalogue.v1 import catalogue_pb2
from yrd.peer.v1 import peer_pb2

from core.errors import InvalidInput, clip
from registry.catalogue import FIELD_NAME, SERVICE_ID
from registry.data_catalogue import SHARING, SUBJECT_KINDS
from registry.dispatch import check_credit_code
from registry.forms import check_resident_id

DAY_MS = 86_400_000
MAX_ASKS = 16
MAX_FIELDS = 64
MAX_TEXT = 200
MAX_GRANT_MS = 3 * 365 * DAY_MS  # a grant is renewed at least every three years
MIN_DEADLINE_MS = 100
MAX_DEADLINE_MS = 30_000
DEFAULT_DEADLINE_MS = 5_000
# The asking department of a counter clerk or a supervisor: the node's service counter (窗口).
COUNTER = "counter"
PURPOSE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
QUERY_ID = re.compile(r"q-[0-9a-f]{12}[0-9a-f]{16}")
REQUEST_ID = re.compile(r"dr-[0-9a-f]{12}[0-9a-f]{16}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

Problem = tuple[str, str]  # (reason code, reason)


@dataclass(frozen=True)
class Consent:
    """The consent recorded at the asker's counter: who consented, to what, for which
    purpose, until when."""

    given_by: str
    subject_id: str
    resources: tuple[str, ...]
    purpose: str
    until_ms: int
    recorded_at_ms: int = 0


@dataclass(frozen=True)
class Ask:
    resource_id: str
    fields: tuple[str, ...] = ()  # empty: every field the asker may have


@dataclass(frozen=True)
class QueryRequest:
    """One screen's question: one subject, several resources, perhaps several holders."""

    subject_kind: str
    subject_id: str
    purpose: str
    asks: tuple[Ask, ...]
    consent: Consent | None
    deadline_ms: int = DEFAULT_DEADLINE_MS


@dataclass(frozen=True)
class DataRequestIn:
    """A request for a conditional resource, as the counter takes it in."""

    resource_id: str
    fields: tuple[str, ...]
    purpose: str
    legal_basis: str
    until_ms: int
    department: str = ""  # a supervisor may file for a department; others file for their own
    # sha256 of the body as sent: a retry under the same Idempotency-Key must repeat it.
    digest: str = ""


def subject_ref(secret: bytes, subject_kind: str, subject_id: str) -> str:
    """A keyed digest of a subject, under this node's key: the tables find one person's
    records and disclosures by it without holding anyone's id in the clear."""
    message = b"yrd-data-subject-v1\x00" + subject_kind.encode() + b"\x00" + subject_id.encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:40]


def check_line(value: str, limit: int, code: str, field: str) -> None:
    """One line of text from a person or a peer: not blank, bounded, no control characters."""
    if not value.strip() or len(value) > limit or _CONTROL.search(value):
        raise InvalidInput(f"1 to {limit} characters, no control characters", code=code, field=field)


def check_subject(subject_kind: str, subject_id: str, field: str = "subject.id") -> None:
    """A person by resident id (GB 11643 check digit), a company by credit code (GB 32100)."""
    if subject_kind not in SUBJECT_KINDS:
        raise InvalidInput(
            f"subject kind must be one of {', '.join(SUBJECT_KINDS)}",
            code="invalid_subject_kind",
            field="subject.kind",
        )
    try:
        if subject_kind == "person":
            check_resident_id(subject_id, field)
        else:
            check_credit_code(subject_id, field)
    except InvalidInput as e:
        raise InvalidInput(e.reason, code="invalid_subject", field=field) from e


def check_purpose(purpose: str, field: str = "purpose", code: str = "invalid_purpose") -> None:
    if not PURPOSE.fullmatch(purpose):
        raise InvalidInput("a purpose code of a-z, 0-9, '_', '-' (at most 64)", code=code, field=field)


def check_fields(fields: Sequence[str], field: str) -> None:
    if len(fields) > MAX_FIELDS or len(set(fields)) != len(fields):
        raise InvalidInput(f"at most {MAX_FIELDS} distinct fields", code="invalid_fields", field=field)
    for i, name in enumerate(fields):
        if not FIELD_NAME.fullmatch(name):
            raise InvalidInput(
                f"{clip(name)} is not a field name", code="invalid_fields", field=f"{field}[{i}]"
            )


def check_query(req: QueryRequest, now_ms: int) -> None:
    """InvalidInput for the first problem of a query's shape, in the order of docs/sharing.md."""
    check_subject(req.subject_kind, req.subject_id)
    check_purpose(req.purpose)
    if not 1 <= len(req.asks) <= MAX_ASKS:
        raise InvalidInput(f"between 1 and {MAX_ASKS} resources", code="invalid_resources", field="resources")
    seen: set[str] = set()
    for i, ask in enumerate(req.asks):
        if not SERVICE_ID.fullmatch(ask.resource_id) or ask.resource_id in seen:
            raise InvalidInput(
                f"{clip(ask.resource_id)} is not a resource id, or is asked twice",
                code="invalid_resources",
                field=f"resources[{i}].id",
            )
        seen.add(ask.resource_id)
        check_fields(ask.fields, f"resources[{i}].fields")
    if not MIN_DEADLINE_MS <= req.deadline_ms <= MAX_DEADLINE_MS:
        raise InvalidInput(
            f"deadline between {MIN_DEADLINE_MS} and {MAX_DEADLINE_MS} ms",
            code="invalid_deadline",
            field="deadline_ms",
        )
    if req.consent is not None:
        check_consent_shape(req.consent)


def check_consent_shape(c: Consent) -> None:
    """A consent that is well formed; whether it covers a resource is the holder's per-item check."""
    check_line(c.given_by, MAX_TEXT, "invalid_consent", "consent.given_by")
    if not c.subject_id or len(c.subject_id) > 18:
        raise InvalidInput("the consenting person's id", code="invalid_consent", field="consent.subject_id")
    check_purpose(c.purpose, "consent.purpose", "invalid_consent")  # the consent's code (protocol 14.1)
    if not 1 <= len(c.resources) <= MAX_ASKS or not all(SERVICE_ID.fullmatch(r) for r in c.resources):
        raise InvalidInput(
            f"between 1 and {MAX_ASKS} resource ids", code="invalid_consent", field="consent.resources"
        )
    if c.until_ms <= 0:
        raise InvalidInput("an end time", code="invalid_consent", field="consent.until")


def check_request(req: DataRequestIn, now_ms: int) -> None:
    """InvalidInput for the first problem of a data request's shape."""
    if not SERVICE_ID.fullmatch(req.resource_id):
        raise InvalidInput(
            f"{clip(req.resource_id)} is not a resource id", code="invalid_resources", field="resource_id"
        )
    if not req.fields:
        raise InvalidInput("name the fields asked for", code="invalid_fields", field="fields")
    check_fields(req.fields, "fields")
    check_purpose(req.purpose)
    check_line(req.legal_basis, 500, "invalid_legal_basis", "legal_basis")
    if not now_ms < req.until_ms <= now_ms + MAX_GRANT_MS:
        raise InvalidInput(
            "the grant must end in the future and within three years", code="invalid_until", field="until"
        )
    if req.department:
        check_line(req.department, MAX_TEXT, "invalid_department", "department")


# --- the holder's per-resource checks: a reason code, never an exception ----------------------


def resource_problem(
    res: catalogue_pb2.DataResource, subject_kind: str, fields: Sequence[str]
) -> Problem | None:
    """What the catalogue entry itself refuses: the wrong kind of subject, a field it does not
    have, a resource that is not shared (with the legal reason, quoted to the asker)."""
    if res.sharing == "not_shared":
        return "not_shared", f"{SHARING['not_shared']}: {res.legal_reason}"
    if res.subject_kind != subject_kind:
        return "subject_kind_mismatch", f"{res.resource_id} holds records of a {res.subject_kind}"
    known = {f.name for f in res.fields}
    unknown = [f for f in fields if f not in known]
    if unknown:
        return "unknown_field", f"{res.resource_id} has no field {clip(unknown[0])}"
    return None


def consent_problem(
    consent: Consent | None, subject_id: str, resource_id: str, purpose: str, now_ms: int
) -> Problem | None:
    """A query about a person carries the recorded consent: present, the subject's own, covering
    this resource and this purpose, not expired."""
    if consent is None:
        return "consent_missing", "no consent of the person was recorded"
    if consent.subject_id != subject_id:
        return "consent_subject", "the consent was given by another person than the subject"
    if resource_id not in consent.resources:
        return "consent_scope", f"the consent does not cover {resource_id}"
    if consent.purpose != purpose:
        return "consent_purpose", f"the consent is for {clip(consent.purpose)}, not {clip(purpose)}"
    if consent.until_ms <= now_ms:
        return "consent_expired", "the consent has expired"
    return None


def consent_of(c: peer_pb2.DataConsent | None) -> Consent | None:
    if c is None:
        return None
    return Consent(
        given_by=c.given_by,
        subject_id=c.subject_id,
        resources=tuple(c.resources),
        purpose=c.purpose,
        until_ms=c.until_ms,
        recorded_at_ms=c.recorded_at_ms,
    )


def consent_message(c: Consent) -> peer_pb2.DataConsent:
    return peer_pb2.DataConsent(
        given_by=c.given_by,
        subject_id=c.subject_id,
        resources=list(c.resources),
        purpose=c.purpose,
        until_ms=c.until_ms,
        recorded_at_ms=c.recorded_at_ms,
    )


def split(names: str) -> tuple[str, ...]:
    return tuple(n for n in names.split(",") if n)
