"""The only door from the HTTP front into the node core.

The front parses and shape-checks requests into the frozen values below and hands them
to a :class:`CounterBackend`; everything deeper (form schemas, resident ID check digits,
policy, routing) belongs to the backend, which reports failures as YrdError subclasses
that the front maps to problem+json. Keeping the seam this narrow lets the front be tested
against a fake and the core be driven by the gRPC twin of this API just the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from node.users import Principal

__all__ = ["Attachment", "CounterBackend", "Document", "Principal", "SubmitRequest"]


@dataclass(frozen=True)
class Attachment:
    material: str  # the name of the service's material this file satisfies
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Document:
    """A result document a department attaches to its decision."""

    name: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class SubmitRequest:
    service_id: str
    applicant_name: str
    applicant_id_number: str
    form: dict[str, Any]
    attachments: tuple[Attachment, ...]
    consent: bool
    purpose: str = "service-delivery"


class CounterBackend(Protocol):
    async def list_services(self, q: str | None, owner: str | None) -> list[dict[str, Any]]:
        """Catalogue entries: id, name, name_en, owner, department, time_limit_days,
        form_schema and materials ([{name, required}])."""
        ...

    async def submit(
        self, principal: Principal, idempotency_key: str, request: SubmitRequest
    ) -> dict[str, Any]:
        """Store the application (once per idempotency key); ``{id, owner_node, status}``."""
        ...

    async def release(self, principal: Principal, app_id: str) -> dict[str, Any]:
        """A second clerk releases an application a policy held for four-eyes approval."""
        ...

    async def get_application(self, principal: Principal, app_id: str) -> dict[str, Any]:
        """``{id, service_id, owner_node, status, submitted_at, overdue, history: [{status,
        reason, at}], receipts: [...], documents: [{name, content_type, data (base64)}]}``."""
        ...

    async def worklist(self, principal: Principal) -> list[dict[str, Any]]: ...

    async def decide(
        self, principal: Principal, app_id: str, decision: str, reason: str, documents: list[Document]
    ) -> dict[str, Any]: ...

    async def health(self) -> tuple[bool, dict[str, Any]]:
        """``(ok, details)``; details are shown to anyone who can reach /healthz."""
        ...

    async def policy_decisions(self, limit: int, since_ms: int | None) -> list[dict[str, Any]]: ...
