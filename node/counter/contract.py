"""The counter contract, written once: request and response bodies as pydantic models, the
limits both doors enforce, and the one way raw input becomes the values the backend consumes.

The HTTP front validates JSON bodies with these models and derives its OpenAPI document from
them; the gRPC CounterService turns its messages into the same JSON-shaped documents and runs
the same validation, so a limit or a rule cannot hold at one door and not at the other.

Only shape is checked here (types, required keys, text that is real Unicode, base64, counts
and sizes, safe filenames and media types), each failure an InvalidInput naming the exact
input at fault (``applicant.id_number``, ``attachments[1].data``) so a clerk can fix the form.
Meaning (form schema, ID check digits, policy) is the backend's. Unknown keys are refused
rather than ignored: a misspelt ``consent`` must not read as "no".
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from core.errors import InvalidInput, clip
from core.json_doc import is_unicode
from node.cases import requests
from node.cases.statuses import TO_WIRE

MIB = 1024 * 1024
MAX_TEXT_CHARS = 512
MAX_REASON_CHARS = 4000
MAX_FILENAME_CHARS = 255
DECISIONS = ("approve", "reject", "need_materials")
DEFAULT_PURPOSE = "service-delivery"

IDEMPOTENCY_KEY_PATTERN = r"^[\x20-\x7e]{1,128}$"
# No path separators, no "..", no control characters: a filename is shown and may be saved.
FILENAME_PATTERN = r"^(?!.*\.\.)[^/\\\x00-\x1f\x7f-\x9f]+$"
# RFC 6838 restricted names: type "/" subtype, nothing else (no parameters, no spaces).
CONTENT_TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
_FILENAME = re.compile(FILENAME_PATTERN)
_CONTENT_TYPE = re.compile(CONTENT_TYPE_PATTERN)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_REASON_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class CounterLimits:
    """Sizes both doors accept; node config sets them (``[limits]``)."""

    max_body_bytes: int = 8 * MIB
    max_attachments: int = 10
    max_attachment_bytes: int = 5 * MIB

    @property
    def max_total_attachment_bytes(self) -> int:
        """What a body of max_body_bytes can carry once base64 is decoded: the gRPC door,
        which sends raw bytes, gets no more than the HTTP door."""
        return self.max_body_bytes * 3 // 4


# --- field types ------------------------------------------------------------------------------


def _text(value: str) -> str:
    if not is_unicode(value):
        raise PydanticCustomError("bad_text", "must be valid Unicode text (no lone surrogates)")
    if not value.strip():
        raise PydanticCustomError("bad_type", "must be a non-empty string")
    if _CONTROL.search(value):
        raise PydanticCustomError("bad_text", "must not hold control characters")
    return value


def _reason(value: str) -> str:
    if not is_unicode(value):
        raise PydanticCustomError("bad_text", "must be valid Unicode text (no lone surrogates)")
    if _REASON_CONTROL.search(value):
        raise PydanticCustomError("bad_text", "must not hold control characters other than line breaks")
    return value


def _filename(value: str) -> str:
    if not _FILENAME.fullmatch(value):
        raise PydanticCustomError(
            "bad_filename", "a filename must not hold path separators, '..' or control characters"
        )
    return value


def _content_type(value: str) -> str:
    if not _CONTENT_TYPE.fullmatch(value):
        raise PydanticCustomError("bad_content_type", "must be a media type such as application/pdf")
    return value


def _decode_base64(value: object, info: ValidationInfo) -> bytes:
    """Base64 text from JSON; the gRPC door hands raw bytes, which need no decoding."""
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, str):
        try:
            data = base64.b64decode(value, validate=True)
        except ValueError as e:  # binascii.Error, and non-ASCII characters
            raise PydanticCustomError("bad_base64", "data is not valid base64") from e
    else:
        raise PydanticCustomError("bad_type", "data must be a base64 string")
    limit = _limits(info).max_attachment_bytes
    if len(data) > limit:
        raise PydanticCustomError("file_too_large", "file is larger than {limit} bytes", {"limit": limit})
    return data


Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS), AfterValidator(_text)]
Filename = Annotated[
    str,
    Field(min_length=1, max_length=MAX_FILENAME_CHARS),
    AfterValidator(_text),
    AfterValidator(_filename),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": MAX_FILENAME_CHARS, "pattern": FILENAME_PATTERN}
    ),
]
ContentType = Annotated[
    str,
    Field(min_length=3, max_length=255),
    AfterValidator(_content_type),
    WithJsonSchema({"type": "string", "pattern": CONTENT_TYPE_PATTERN}),
]
Reason = Annotated[str, Field(max_length=MAX_REASON_CHARS), AfterValidator(_reason)]
Payload = Annotated[
    bytes,
    BeforeValidator(_decode_base64),
    PlainSerializer(lambda b: base64.b64encode(b).decode(), return_type=str),
    WithJsonSchema({"type": "string", "contentEncoding": "base64"}),
]


def _limits(info: ValidationInfo) -> CounterLimits:
    context = info.context
    return context["limits"] if isinstance(context, dict) else CounterLimits()


def _bounded_list(value: object, info: ValidationInfo) -> object:
    """Counted before the items are looked at, so a thousand bad items cost one check."""
    limit = _limits(info).max_attachments
    if isinstance(value, list) and len(value) > limit and info.field_name:
        raise PydanticCustomError(
            f"too_many_{info.field_name}", "at most {limit} are accepted", {"limit": limit}
        )
    return value


# --- request bodies -------------------------------------------------------------------------


class _Closed(BaseModel):
    # strict: JSON's own types only ("true" is not a boolean, 7 is not a string).
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Applicant(_Closed):
    name: Text
    id_number: Text


class Attachment(_Closed):
    material: Text = Field(description="the name of the service's material this file satisfies")
    filename: Filename
    content_type: ContentType
    data: Payload

    def value(self) -> requests.Attachment:
        return requests.Attachment(self.material, self.filename, self.content_type, self.data)


class Document(_Closed):
    name: Text
    content_type: ContentType
    data: Payload

    def value(self) -> requests.Document:
        return requests.Document(self.name, self.content_type, self.data)


class SubmitApplication(_Closed):
    service_id: Text
    applicant: Applicant
    form: dict[str, Any] = Field(description="valid under the service's form_schema")
    attachments: list[Attachment] = []
    consent: bool
    purpose: Text = DEFAULT_PURPOSE

    _count = field_validator("attachments", mode="before")(_bounded_list)

    def value(self, digest: str) -> requests.SubmitRequest:
        return requests.SubmitRequest(
            service_id=self.service_id,
            applicant_name=self.applicant.name,
            applicant_id_number=self.applicant.id_number,
            form=self.form,
            attachments=tuple(a.value() for a in self.attachments),
            consent=self.consent,
            purpose=self.purpose,
            digest=digest,
        )


class ResubmitComponent(_Closed):
    """A bundle's failed part, corrected: values of that part's own form fields (they
    replace what the bundle mapped into them) and any materials to replace."""

    form: dict[str, Any] = Field(default={}, description="fields of the component's form_schema")
    attachments: list[Attachment] = []

    _count = field_validator("attachments", mode="before")(_bounded_list)


class Decision(_Closed):
    decision: Literal["approve", "reject", "need_materials"]
    reason: Reason = Field(default="", description="required unless approving")
    documents: list[Document] = []
    results: dict[str, str | int | bool] = Field(
        default={}, description="an approval's values of the service's declared results (e.g. credit_code)"
    )

    _count = field_validator("documents", mode="before")(_bounded_list)


def _required(value: str) -> str:
    if not value:
        raise PydanticCustomError("missing_field", "is required")
    return value


Credential = Annotated[
    str,
    Field(max_length=MAX_TEXT_CHARS, json_schema_extra={"minLength": 1}),
    AfterValidator(_required),
]


class SessionRequest(_Closed):
    username: Credential
    password: Credential


# --- response bodies (documented; the backend builds them) -----------------------------------


class _Open(BaseModel):
    # Answers may gain fields; clients must ignore what they do not know.
    model_config = ConfigDict(extra="allow")


# One list of statuses: the wire enum's.
Status = Annotated[str, WithJsonSchema({"enum": list(TO_WIRE)})]


class Problem(_Open):
    """RFC 9457 problem details: every 4xx and 5xx answer."""

    type: str = Field(examples=["urn:yrd:problem:invalid_input"])
    title: str
    status: int
    code: str | None = Field(default=None, description="stable machine-readable reason")
    detail: str | None = None
    field: str | None = Field(default=None, description="the input at fault, e.g. attachments[1].data")
    rule_id: str | None = Field(default=None, description="the deciding policy rule (policy_denied)")


class Session(_Open):
    token: str
    expires_at: str = Field(json_schema_extra={"format": "date-time"})
    role: str


class Material(_Open):
    name: str
    required: bool


class Service(_Open):
    id: str
    name: str
    name_en: str
    owner: str = Field(description="GB/T 2260 division code of the owning jurisdiction")
    department: str
    time_limit_days: int
    form_schema: dict[str, Any] = Field(description="JSON Schema the form must satisfy")
    materials: list[Material]


class Services(_Open):
    services: list[Service]


class Submitted(_Open):
    id: str
    owner_node: str
    status: Status


class HistoryEntry(_Open):
    status: Status
    sequence: int | None = Field(
        default=None, description="order of the change: -1 held, 0 submitted, owner's changes from 1"
    )
    reason: str
    rule_id: str | None = None
    at: str = Field(json_schema_extra={"format": "date-time"})


class ResultDocument(_Open):
    """A decision's document as stored: written by the owner, so described, not constrained."""

    name: str
    content_type: str
    data: str = Field(json_schema_extra={"contentEncoding": "base64"})


class BundleComponent(_Open):
    """One part of a bundle as its lead last reported it."""

    name: str
    service_id: str
    service_name: str
    department: str
    owner: str = Field(description="GB/T 2260 code of the owning jurisdiction")
    owner_node: str
    after: list[str] = Field(description="the parts this one waits for")
    status: str = Field(description="waiting, blocked, or the part's application status")
    attempt: int
    application_id: str
    due_at: str = Field(description="its promised end, projected along the dependencies until it starts")
    reason: str
    results: dict[str, str]


class Application(_Open):
    id: str
    service_id: str
    owner_node: str
    status: Status
    submitted_at: str = Field(json_schema_extra={"format": "date-time"})
    overdue: bool
    history: list[HistoryEntry]
    receipts: list[dict[str, Any]] = Field(description="the owner's signed receipts")
    documents: list[ResultDocument]
    results: dict[str, str] | None = Field(default=None, description="named results of the approval")
    components: list[BundleComponent] | None = Field(default=None, description="a bundle's parts")
    bundle_due_at: str | None = Field(
        default=None, description="a bundle's promise, along its parts' dependencies in working days"
    )


class Resubmitted(_Open):
    id: str
    component: str
    attempt: int
    status: Literal["resubmitted"]


class WorkItem(_Open):
    id: str
    service_id: str | None = None
    status: Status
    submitted_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    overdue: bool | None = None


class Worklist(_Open):
    applications: list[WorkItem]


class Decisions(_Open):
    decisions: list[dict[str, Any]]


# --- raw input to values --------------------------------------------------------------------


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


_CODES = {"missing": "missing_field", "extra_forbidden": "unknown_field", "literal_error": "bad_value"}
# Our validators raise errors already named with the fronts' codes; pydantic's own become bad_type.
_OWN_CODES = ("bad_", "too_many_", "file_", "missing_")


def _invalid(error: ValidationError) -> InvalidInput:
    """The first problem, as the error the fronts already map (problem+json, gRPC status)."""
    first = error.errors(include_url=False, include_input=False)[0]
    field = _path(first["loc"]) or "body"
    kind = first["type"]
    code = _CODES.get(kind, kind if kind.startswith(_OWN_CODES) else "bad_type")
    if field == "decision" and code == "bad_value":
        code = "bad_decision"
    detail = f"{field}: {first['msg']}" if kind != "extra_forbidden" else f"unknown field {clip(field)}"
    return InvalidInput(detail, code=code, field=field)


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], doc: dict[str, Any], limits: CounterLimits) -> M:
    try:
        return model.model_validate(doc, context={"limits": limits})
    except ValidationError as e:
        raise _invalid(e) from None


def check_idempotency_key(value: str | None, field: str) -> str:
    if not value:
        raise InvalidInput("an idempotency key is required", code="missing_header", field=field)
    if not _IDEMPOTENCY_KEY.fullmatch(value):
        raise InvalidInput("must be 1-128 printable ASCII characters", code="bad_header", field=field)
    return value


def request_digest(doc: dict[str, Any]) -> str:
    """What a retry must repeat: a hash of the document as the client sent it, independent
    of key order and spacing, computed before validation so a retry can be answered first.

    Each value is fed as a tagged, length-prefixed record rather than re-serialised as JSON:
    re-escaping megabytes of base64 cost more than everything else about a submission. The
    records are gathered by a loop over a stack and hashed at once, and a scalar's text is
    written directly, where a call per value and ``json.dumps`` per number or boolean cost
    about 3 µs a value: a body of 8 MiB of small numbers took 4 s. The bytes are the same
    (the stored digests of earlier requests still match; tests/test_http_bodies.py)."""
    chunks: list[bytes] = []
    stack: list[Any] = [doc]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            chunks.append(b"{%d:" % len(value))
            for key in sorted(value, reverse=True):  # popped in key order
                stack.append(value[key])
                stack.append(key)
        elif isinstance(value, list):
            chunks.append(b"[%d:" % len(value))
            stack.extend(reversed(value))
        elif isinstance(value, str):
            data = value.encode("utf-8", "surrogatepass")
            chunks.append(b"s%d:" % len(data))
            chunks.append(data)
        else:  # bool, int, float, None: their JSON text, which tells true from 1
            text = _SCALAR_TEXT.get(value) if value is None or type(value) is bool else None
            if text is None:
                text = str(value).encode() if type(value) is int else json.dumps(value).encode()
            chunks.append(b"v%d:" % len(text))
            chunks.append(text)
    return hashlib.sha256(b"".join(chunks)).hexdigest()


# Looked up only for None and booleans (1 == True would find True's text for the integer 1).
_SCALAR_TEXT: dict[object, bytes] = {None: b"null", True: b"true", False: b"false"}


def parse_submit(doc: dict[str, Any], limits: CounterLimits, digest: str) -> requests.SubmitRequest:
    submit = validate(SubmitApplication, doc, limits).value(digest)
    if sum(len(a.data) for a in submit.attachments) > limits.max_total_attachment_bytes:
        raise InvalidInput(
            f"attachments hold more than {limits.max_total_attachment_bytes} bytes together",
            code="attachments_too_large",
            field="attachments",
        )
    return submit


def parse_decision(doc: dict[str, Any], limits: CounterLimits) -> tuple[str, str, list[requests.Document]]:
    """``(decision, reason, documents)``; a refusal or a request for materials must say why."""
    decision = validate(Decision, doc, limits)
    if decision.decision != "approve" and not decision.reason.strip():
        raise InvalidInput(
            f"a reason is required to {decision.decision}", code="missing_field", field="reason"
        )
    return decision.decision, decision.reason, [d.value() for d in decision.documents]


def parse_resubmit(
    doc: dict[str, Any], limits: CounterLimits
) -> tuple[dict[str, Any], tuple[requests.Attachment, ...]]:
    """``(form, attachments)`` of a bundle part's correction."""
    body = validate(ResubmitComponent, doc, limits)
    attachments = tuple(a.value() for a in body.attachments)
    if sum(len(a.data) for a in attachments) > limits.max_total_attachment_bytes:
        raise InvalidInput(
            f"attachments hold more than {limits.max_total_attachment_bytes} bytes together",
            code="attachments_too_large",
            field="attachments",
        )
    return dict(body.form), attachments


def parse_decision_results(doc: dict[str, Any], limits: CounterLimits) -> dict[str, Any]:
    """The named result values a decision carries (checked against the service by the owner)."""
    return dict(validate(Decision, doc, limits).results)
