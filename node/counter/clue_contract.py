"""The counter contract of supervision clues (docs/clues.md), in the style of
node/counter/contract.py: request bodies are closed pydantic models checked for shape only;
meaning (division codes, the credit code's check character, deadlines) is
node/cases/clue_checks.py's, which the receiving member runs again."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from core.errors import InvalidInput
from node.cases import requests
from node.cases.clue_checks import (
    MAX_DESCRIPTION_CHARS,
    MAX_PLACE_CHARS,
    MAX_REPORTER_CHARS,
    ClueRequest,
)
from node.counter.contract import (
    CounterLimits,
    Document,
    Reason,
    Text,
    _Closed,
    _Open,
    validate,
)
from registry.dispatch import DOMAINS

# The code lists of registry/dispatch.py, spelt out for the type checker and the schema;
# tests/test_clues_units.py keeps them equal.
Domain = Literal["work_safety", "eco_environment", "food_drug", "grain_farmland", "epidemic", "finance"]
ClueSource = Literal["national", "provincial_department", "citizen_report"]
Severity = Literal["low", "medium", "high", "critical"]
DivisionCode = Annotated[str, Field(pattern=r"^\d{6}$")]


class Subject(_Closed):
    credit_code: str = Field(default="", max_length=18, description="统一社会信用代码 (GB 32100-2015)")
    place: str = Field(
        default="", max_length=MAX_PLACE_CHARS, description="a place, when no company is named"
    )


class Reporter(_Closed):
    name: str = Field(default="", max_length=MAX_REPORTER_CHARS)
    contact: str = Field(default="", max_length=MAX_REPORTER_CHARS)


class SubmitClue(_Closed):
    source: ClueSource
    region_code: DivisionCode = Field(description="GB/T 2260 code, down to county level")
    domains: list[Domain] = Field(
        min_length=1, max_length=len(DOMAINS), description="more than one: a joint inspection"
    )
    subject: Subject
    severity: Severity
    description: str = Field(min_length=1, max_length=MAX_DESCRIPTION_CHARS)
    reporter: Reporter = Reporter()
    acknowledge_within_hours: int = Field(ge=1, le=24 * 30)
    close_within_days: int = Field(ge=1, le=365)
    documents: list[Document] = Field(default=[], max_length=10)

    def value(self, digest: str) -> ClueRequest:
        return ClueRequest(
            source=self.source,
            region_code=self.region_code,
            domains=tuple(self.domains),
            subject_credit_code=self.subject.credit_code,
            subject_place=self.subject.place,
            severity=self.severity,
            description=self.description,
            acknowledge_within_hours=self.acknowledge_within_hours,
            close_within_days=self.close_within_days,
            reporter_name=self.reporter.name,
            reporter_contact=self.reporter.contact,
            documents=tuple(d.value() for d in self.documents),
            digest=digest,
        )


class ClueAction(_Closed):
    department: str = Field(
        default="", max_length=200, description="required of a supervisor on a joint task"
    )


class ClueFindings(_Closed):
    department: str = Field(default="", max_length=200)
    text: Text
    rectification: Reason = Field(default="", description="an order to rectify, when one is given")
    documents: list[Document] = Field(default=[], max_length=10)


class ClueClose(_Closed):
    department: str = Field(default="", max_length=200)
    note: Reason = ""


# --- answers ----------------------------------------------------------------------------------


class ClueSubmitted(_Open):
    id: str
    owner_node: str
    status: str


class ClueStep(_Open):
    sequence: int
    step: str
    department: str
    level: str
    note: str
    at: str = Field(json_schema_extra={"format": "date-time"})
    findings: dict[str, Any] | None = None


class ClueTaskView(_Open):
    domain: str
    department: str
    level: str
    status: str
    overdue: bool
    escalations: int


class Clue(_Open):
    id: str
    region_code: str
    domains: list[str]
    severity: str
    status: str
    joint: bool
    owner_node: str
    history: list[ClueStep]
    tasks: list[ClueTaskView] | None = None


class Clues(_Open):
    clues: list[Clue]


def _documents_within(documents: tuple[requests.Document, ...], limits: CounterLimits) -> None:
    """The HTTP body bounds documents together; the gRPC door, which carries raw bytes, is
    held to what such a body can decode to (``CounterLimits.max_total_attachment_bytes``)."""
    if sum(len(d.data) for d in documents) > limits.max_total_attachment_bytes:
        raise InvalidInput(
            f"documents hold more than {limits.max_total_attachment_bytes} bytes together",
            code="attachments_too_large",
            field="documents",
        )


def parse_submit_clue(doc: dict[str, Any], limits: CounterLimits, digest: str) -> ClueRequest:
    clue = validate(SubmitClue, doc, limits).value(digest)
    _documents_within(clue.documents, limits)
    return clue


def parse_clue_action(action: str, doc: dict[str, Any], limits: CounterLimits) -> dict[str, Any]:
    """The keyword arguments of the backend's ``act_on_clue`` for ``action``."""
    if action == "acknowledge":
        return {"department": validate(ClueAction, doc, limits).department}
    if action == "findings":
        f = validate(ClueFindings, doc, limits)
        documents = tuple(d.value() for d in f.documents)
        _documents_within(documents, limits)
        return {
            "department": f.department,
            "text": f.text,
            "rectification": f.rectification,
            "documents": documents,
        }
    if action == "close":
        c = validate(ClueClose, doc, limits)
        return {"department": c.department, "text": c.note}
    raise InvalidInput("unknown action", code="bad_value", field="action")
