"""The only door from the fronts (HTTP and the gRPC counter) into the node core.

The fronts parse and shape-check requests (:mod:`node.counter.contract`, one set of models
for both) into the values of :mod:`node.cases.requests`
and hand them to a :class:`CounterBackend`; everything deeper (form schemas, resident ID
check digits, policy, routing) belongs to the backend, which reports failures as YrdError
subclasses that each front maps once (problem+json, gRPC status). Keeping the seam this
narrow lets the HTTP front be tested against a fake. Every method that takes a
``Principal`` checks its role itself (see node/counter/backend.py), so a front never does.
"""

from __future__ import annotations

from typing import Any, Protocol

from core.errors import InvalidInput
from node.cases.clue_checks import ClueRequest
from node.cases.requests import Attachment, Document, Principal, SubmitRequest
from node.counter.contract import CounterLimits, parse_submit, request_digest
from node.sharing.checks import DataRequestIn, QueryRequest


class CounterBackend(Protocol):
    async def list_services(self, q: str | None, owner: str | None) -> list[dict[str, Any]]:
        """Catalogue entries: id, name, name_en, owner, department, time_limit_days,
        form_schema and materials ([{name, required}])."""
        ...

    async def replay(self, principal: Principal, idempotency_key: str, digest: str) -> dict[str, Any] | None:
        """The answer already given under this key (as submit's), None if none; refuses a key
        reused with a request of another digest (Unprocessable ``idempotency_key_reused``).
        For a request refused before ``submit`` (:func:`submit_or_replay`)."""
        ...

    async def submit(
        self, principal: Principal, idempotency_key: str, request: SubmitRequest
    ) -> dict[str, Any]:
        """Store the application once per idempotency key; ``{id, owner_node, status}``. A
        retry gets the first answer, a key reused with another request is refused as by
        ``replay``."""
        ...

    async def release(self, principal: Principal, app_id: str) -> dict[str, Any]:
        """A supervisor (not the submitter) releases an application held for four-eyes approval."""
        ...

    async def get_application(self, principal: Principal, app_id: str) -> dict[str, Any]:
        """``{id, service_id, owner_node, status, submitted_at, overdue, history: [{status,
        reason, at}], receipts: [...], documents: [{name, content_type, data (base64)}]}``."""
        ...

    async def resubmit_component(
        self,
        principal: Principal,
        app_id: str,
        component: str,
        form: dict[str, Any],
        attachments: tuple[Attachment, ...],
    ) -> dict[str, Any]:
        """Send a bundle's failed part, corrected, to the lead; ``{id, component, attempt, status}``."""
        ...

    async def worklist(self, principal: Principal) -> list[dict[str, Any]]: ...

    async def decide(
        self,
        principal: Principal,
        app_id: str,
        decision: str,
        reason: str,
        documents: list[Document],
        results: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``results``: an approval's named result values (the service's declared results)."""
        ...

    async def health(self) -> tuple[bool, dict[str, Any]]:
        """``(ok, details)``; details are shown to anyone who can reach /healthz."""
        ...

    async def policy_decisions(
        self, principal: Principal, limit: int, since_ms: int | None
    ) -> list[dict[str, Any]]: ...

    # -- supervision clues (node/counter/backend.py says who may do what) ---------------------

    async def submit_clue(
        self, principal: Principal, idempotency_key: str, request: ClueRequest
    ) -> dict[str, Any]: ...

    async def get_clue(self, principal: Principal, clue_id: str) -> dict[str, Any]: ...

    async def list_clues(self, principal: Principal) -> list[dict[str, Any]]: ...

    async def act_on_clue(
        self,
        principal: Principal,
        clue_id: str,
        action: str,
        department: str,
        text: str = "",
        rectification: str = "",
        documents: tuple[Document, ...] = (),
    ) -> dict[str, Any]: ...

    async def verify_certificate(
        self, principal: Principal, data: bytes, *, asked: bool = True
    ) -> dict[str, Any]:
        """An e-certificate (its file or QR text) checked against this node's manifest
        offline: ``valid`` or the reason code, and what it says (docs/protocol.md, 15).
        ``asked`` False: the verdict a page shows beside a certificate it displays, not a
        check someone asked for, so the checks metric does not count page views."""
        ...

    # -- data sharing (docs/sharing.md; node/counter/backend.py says who may do what) ----------

    async def list_data_resources(
        self, principal: Principal, q: str | None, holder: str | None, sharing: str | None
    ) -> list[dict[str, Any]]: ...

    async def query_data(self, principal: Principal, request: QueryRequest) -> dict[str, Any]:
        """The merged view: ``{query_id, complete, items: [{resource_id, holder_node, outcome,
        reason_code, fields, updated_at, ...}]}``, one item per resource asked."""
        ...

    async def request_data(
        self, principal: Principal, request: DataRequestIn, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Send a data request (once per idempotency key when one is given); 201 and its view."""
        ...

    async def list_data_requests(self, principal: Principal) -> dict[str, Any]:
        """``{sent: [...], received: [...]}``: requests this node made, and those made of it."""
        ...

    async def decide_data_request(
        self,
        principal: Principal,
        request_id: str,
        *,
        approve: bool,
        fields: tuple[str, ...],
        until_ms: int | None,
        note: str,
    ) -> dict[str, Any]: ...

    async def revoke_grant(self, principal: Principal, grant_id: str, note: str) -> dict[str, Any]: ...

    async def disclosures(
        self, principal: Principal, subject_kind: str, subject_id: str | None, side: str | None
    ) -> list[dict[str, Any]]: ...

    async def data_meter(
        self, principal: Principal, since: str | None, until: str | None, resource: str | None
    ) -> dict[str, Any]: ...

    # -- what the pages (node/web/) read and do; each checks the role as the methods above --

    async def check_code(self, principal: Principal, app_id: str) -> str:
        """The short code printed on the receipt, for whoever may read the application."""
        ...

    async def track(self, app_id: str, code: str) -> dict[str, Any]:
        """No account: status and dates for an id plus its check code, no personal data;
        NotFound for a wrong code as for an unknown id."""
        ...

    async def counter_queue(
        self, principal: Principal, status: str | None, service_id: str | None, limit: int = 200
    ) -> list[dict[str, Any]]: ...

    async def owner_queue(
        self, principal: Principal, status: str | None, limit: int = 200
    ) -> list[dict[str, Any]]: ...

    async def owner_view(self, principal: Principal, app_id: str) -> dict[str, Any]: ...

    async def console(self, principal: Principal) -> dict[str, Any]: ...

    async def refresh_gauges(self) -> None:
        """Read queue depths and open work from the database into the metrics gauges."""
        ...

    async def dead_letters(self, principal: Principal, limit: int = 100) -> list[dict[str, Any]]: ...

    async def redrive(self, principal: Principal, entry_id: int) -> None: ...


async def submit_or_replay(
    backend: CounterBackend, principal: Principal, key: str, doc: dict[str, Any], limits: CounterLimits
) -> dict[str, Any]:
    """Submit a counter's request document, as every front does.

    A document the contract refuses may be the retry of one accepted under rules since
    tightened: that one gets its first answer, not a 400 that would make a counter submit
    again. It is looked up only then: a document that parses goes straight to ``submit``,
    which answers a retry in the transaction that would store it, so an ordinary submit
    costs no look-up of its own."""
    digest = request_digest(doc)
    try:
        request = parse_submit(doc, limits, digest)
    except InvalidInput:
        replayed = await backend.replay(principal, key, digest)
        if replayed is None:
            raise
        return replayed
    return await backend.submit(principal, key, request)
