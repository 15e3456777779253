"""The counter contract of data sharing (docs/sharing.md), in the style of
node/counter/contract.py: request bodies are closed pydantic models checked for shape only;
meaning (resident id check digits, consent coverage, sharing classes, grants) belongs to
node/sharing/checks.py, which the holder runs again on what arrives from a peer."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, WithJsonSchema

from core.errors import InvalidInput
from node.counter.contract import CounterLimits, Reason, _Closed, _Open, validate
from node.sharing.checks import (
    DEFAULT_DEADLINE_MS,
    MAX_ASKS,
    MAX_DEADLINE_MS,
    MAX_FIELDS,
    MIN_DEADLINE_MS,
    Ask,
    Consent,
    DataRequestIn,
    QueryRequest,
)

SubjectKind = Literal["person", "company"]
Sharing = Literal["unconditional", "conditional", "not_shared"]
Outcome = Literal["answered", "no_record", "refused", "missing"]
RequestStatus = Literal["pending", "approved", "refused", "revoked"]
FieldName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
ResourceId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{2,127}$")]
PurposeCode = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]


def _instant(text: str) -> str:
    """An ISO 8601 date-time with its offset: a time without a zone means nothing across provinces."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("an ISO 8601 date-time such as 2026-12-31T23:59:59+08:00") from None
    if parsed.tzinfo is None:
        raise ValueError("give the UTC offset, e.g. +08:00")
    return text


Instant = Annotated[
    str,
    Field(max_length=40),
    AfterValidator(_instant),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


def instant_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


# --- requests ---------------------------------------------------------------------------------


class Subject(_Closed):
    kind: SubjectKind
    id: str = Field(
        min_length=1, max_length=18, description="resident id (person) or 统一社会信用代码 (company)"
    )


class ConsentIn(_Closed):
    given_by: str = Field(min_length=1, max_length=200, description="the person's name as they consented")
    subject_id: str = Field(min_length=1, max_length=18, description="the consenting person's resident id")
    resources: list[ResourceId] = Field(min_length=1, max_length=MAX_ASKS)
    purpose: PurposeCode
    until: Instant
    recorded_at: Instant | None = None


class AskIn(_Closed):
    id: ResourceId
    fields: list[FieldName] = Field(default=[], max_length=MAX_FIELDS, description="empty: all")


class QueryIn(_Closed):
    subject: Subject
    purpose: PurposeCode
    resources: list[AskIn] = Field(min_length=1, max_length=MAX_ASKS)
    consent: ConsentIn | None = None
    deadline_ms: int = Field(default=DEFAULT_DEADLINE_MS, ge=MIN_DEADLINE_MS, le=MAX_DEADLINE_MS)

    def value(self) -> QueryRequest:
        c = self.consent
        consent = None
        if c is not None:
            consent = Consent(
                given_by=c.given_by,
                subject_id=c.subject_id,
                resources=tuple(c.resources),
                purpose=c.purpose,
                until_ms=instant_ms(c.until),
                recorded_at_ms=instant_ms(c.recorded_at) if c.recorded_at else 0,
            )
        return QueryRequest(
            subject_kind=self.subject.kind,
            subject_id=self.subject.id,
            purpose=self.purpose,
            asks=tuple(Ask(a.id, tuple(a.fields)) for a in self.resources),
            consent=consent,
            deadline_ms=self.deadline_ms,
        )


class DataRequestBody(_Closed):
    resource_id: ResourceId
    fields: list[FieldName] = Field(min_length=1, max_length=MAX_FIELDS)
    purpose: PurposeCode
    legal_basis: str = Field(min_length=1, max_length=500, description="the law, regulation or agreement")
    until: Instant = Field(description="when the grant asked for ends")
    department: str = Field(
        default="", max_length=200, description="a supervisor files for a department; others for their own"
    )

    def value(self, digest: str) -> DataRequestIn:
        return DataRequestIn(
            resource_id=self.resource_id,
            fields=tuple(self.fields),
            purpose=self.purpose,
            legal_basis=self.legal_basis,
            until_ms=instant_ms(self.until),
            department=self.department,
            digest=digest,
        )


class DecisionBody(_Closed):
    decision: Literal["approve", "refuse"]
    fields: list[FieldName] = Field(
        default=[], max_length=MAX_FIELDS, description="approve: empty grants all asked"
    )
    until: Instant | None = Field(default=None, description="approve: a shorter term than asked")
    note: Reason = ""


class RevokeBody(_Closed):
    note: Reason = ""


# --- answers ----------------------------------------------------------------------------------


class DataFieldView(_Open):
    name: str
    label: str
    type: str
    personal: bool


class DataResourceView(_Open):
    id: str
    name: str
    name_en: str
    holder: str
    holder_node: str
    department: str
    subject_kind: SubjectKind
    update_frequency: str
    sharing: Sharing
    sharing_name: str
    legal_reason: str
    version: int
    fields: list[DataFieldView]


class DataResources(_Open):
    resources: list[DataResourceView]


class QueryItem(_Open):
    resource_id: str
    name: str = ""
    department: str = ""
    holder: str = Field(default="", description="GB/T 2260 code of the holding jurisdiction")
    holder_node: str
    outcome: Outcome
    reason_code: str
    reason: str
    basis: str = Field(description="consent, request, or with +grant:<request id>")
    rule_id: str
    fields: dict[str, Any] | None
    updated_at: str | None = Field(json_schema_extra={"format": "date-time"})
    answered_at: str | None = Field(json_schema_extra={"format": "date-time"})


class MergedView(_Open):
    query_id: str
    subject_kind: SubjectKind
    purpose: str
    asked_at: str = Field(json_schema_extra={"format": "date-time"})
    complete: bool = Field(description="every holder answered (with a record or without one)")
    items: list[QueryItem]


class DataRequestView(_Open):
    id: str
    side: Literal["asker", "holder"]
    resource_id: str
    department: str
    fields: list[str]
    purpose: str
    legal_basis: str
    until: str
    requested_by: str
    requested_at: str
    status: RequestStatus
    granted_fields: list[str]
    granted_until: str | None
    note: str
    holder_node: str | None = None
    asker_node: str | None = None


class DataRequests(_Open):
    sent: list[DataRequestView]
    received: list[DataRequestView]


class Disclosure(_Open):
    side: Literal["asker", "holder"]
    query_id: str
    at: str = Field(json_schema_extra={"format": "date-time"})
    asker_node: str
    asker_department: str
    asked_by: str
    holder_node: str
    resource_id: str
    purpose: str
    basis: str
    fields: list[str]
    outcome: Outcome
    reason_code: str


class Disclosures(_Open):
    disclosures: list[Disclosure]


class MeterRow(_Open):
    day: str
    resource_id: str
    asker_node: str
    outcome: str
    calls: int


class Meter(_Open):
    rows: list[MeterRow]
    total: int


def parse_query(doc: dict[str, Any], limits: CounterLimits) -> QueryRequest:
    return validate(QueryIn, doc, limits).value()


def parse_data_request(doc: dict[str, Any], limits: CounterLimits, digest: str = "") -> DataRequestIn:
    return validate(DataRequestBody, doc, limits).value(digest)


def parse_decision(doc: dict[str, Any], limits: CounterLimits) -> dict[str, Any]:
    """The keyword arguments of the backend's ``decide_data_request``."""
    d = validate(DecisionBody, doc, limits)
    if d.decision == "refuse" and (d.fields or d.until):
        raise InvalidInput("a refusal grants no fields and no term", code="bad_value", field="fields")
    return {
        "approve": d.decision == "approve",
        "fields": tuple(d.fields),
        "until_ms": instant_ms(d.until) if d.until else None,
        "note": d.note,
    }


def parse_revoke(doc: dict[str, Any], limits: CounterLimits) -> str:
    return validate(RevokeBody, doc, limits).note


# --- filters (query strings over HTTP, message fields over gRPC) --------------------------------

SHARING_CLASSES = ("unconditional", "conditional", "not_shared")
SIDES = ("asker", "holder")
SUBJECT_KIND_NAMES = ("person", "company")
_HOLDER_PREFIX = re.compile(r"\d{2,12}")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def param(
    params: Mapping[str, str], name: str, limit: int = 200, pattern: re.Pattern[str] | None = None
) -> str | None:
    """One optional text filter; empty is absent, as proto3 cannot tell them apart."""
    value = params.get(name)
    if value is None or value == "":
        return None
    if len(value) > limit or (pattern is not None and not pattern.fullmatch(value)):
        raise InvalidInput(f"not a valid {name}", code="bad_value", field=name)
    return value


def choice(params: Mapping[str, str], name: str, choices: tuple[str, ...], default: str | None) -> str | None:
    value = params.get(name) or default
    if value is not None and value not in choices:
        raise InvalidInput(f"one of {', '.join(choices)}", code="bad_value", field=name)
    return value


def parse_search(params: Mapping[str, str]) -> tuple[str | None, str | None, str | None]:
    """``q``, ``holder`` (a division prefix) and ``sharing`` of the data catalogue search."""
    return (
        param(params, "q"),
        param(params, "holder", 12, _HOLDER_PREFIX),
        choice(params, "sharing", SHARING_CLASSES, None),
    )


def parse_meter_filter(params: Mapping[str, str]) -> tuple[str | None, str | None, str | None]:
    """``since`` and ``until`` (days, inclusive) and ``resource`` of the data meter."""
    return param(params, "since", 10, _DAY), param(params, "until", 10, _DAY), param(params, "resource", 128)


def parse_disclosure_filter(params: Mapping[str, str]) -> tuple[str, str | None, str | None]:
    """``subject_kind`` (default person), ``subject_id`` and ``side`` of the disclosure log;
    the subject id's check character is the backend's to check, with the role."""
    return (
        choice(params, "subject_kind", SUBJECT_KIND_NAMES, "person") or "person",
        param(params, "subject_id", 18),
        choice(params, "side", SIDES, None),
    )
