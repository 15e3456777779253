"""Supervision clues at the gRPC counter: messages to and from the documents of the clue API.

Kept apart from grpc_server.py so the servicer stays a list of calls. A request becomes the
JSON-shaped document ``POST /api/v1/clues`` (or an action's body) would carry, which the same
contract models (node/counter/clue_contract.py) check, so a limit or a code cannot differ
between the doors. Empty optional fields are left out, because proto3 cannot tell them from
absent ones: a clue sent over HTTP without them has the same request digest, so one
idempotency key means one clue at either door.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from typing import Any

from yrd.counter.v1 import counter_pb2
from yrd.peer.v1 import peer_pb2


def _documents(documents: Iterable[peer_pb2.Document]) -> list[dict[str, Any]]:
    return [
        {"name": d.name, "content_type": d.content_type, "data": base64.b64encode(d.data).decode()}
        for d in documents
    ]


def _present(**fields: str) -> dict[str, str]:
    return {k: v for k, v in fields.items() if v}


def submit_clue_document(request: counter_pb2.SubmitClueRequest) -> dict[str, Any]:
    """The request as the HTTP door's JSON body. Required fields stay even when empty, so
    the contract names them (``description: ...``) rather than calling them missing."""
    doc: dict[str, Any] = {
        "source": request.source,
        "region_code": request.region_code,
        "domains": list(request.domains),
        "subject": _present(credit_code=request.subject.credit_code, place=request.subject.place),
        "severity": request.severity,
        "description": request.description,
        "acknowledge_within_hours": request.acknowledge_within_hours,
        "close_within_days": request.close_within_days,
    }
    reporter = _present(name=request.reporter.name, contact=request.reporter.contact)
    if reporter:
        doc["reporter"] = reporter
    if request.documents:
        doc["documents"] = _documents(request.documents)
    return doc


def acknowledge_document(request: counter_pb2.AcknowledgeClueRequest) -> dict[str, Any]:
    return _present(department=request.department)


def findings_document(request: counter_pb2.RecordClueFindingsRequest) -> dict[str, Any]:
    doc: dict[str, Any] = {"text": request.text}
    doc.update(_present(department=request.department, rectification=request.rectification))
    if request.documents:
        doc["documents"] = _documents(request.documents)
    return doc


def close_document(request: counter_pb2.CloseClueRequest) -> dict[str, Any]:
    return _present(department=request.department, note=request.note)


# --- answers ----------------------------------------------------------------------------------


def _wire_documents(documents: Sequence[dict[str, Any]]) -> list[peer_pb2.Document]:
    return [
        peer_pb2.Document(name=d["name"], content_type=d["content_type"], data=base64.b64decode(d["data"]))
        for d in documents
    ]


def _findings(findings: dict[str, Any] | None) -> counter_pb2.ClueFindingsRecord | None:
    if findings is None:
        return None
    return counter_pb2.ClueFindingsRecord(
        text=findings["text"], documents=_wire_documents(findings["documents"])
    )


def clue_message(view: dict[str, Any]) -> counter_pb2.Clue:
    """The backend's view of a clue (node/cases/clues.py ``_view``); what the caller's role
    does not see is absent there and empty here."""
    clue = counter_pb2.Clue(
        id=view["id"],
        region_code=view["region_code"],
        region_name=view["region_name"],
        domains=view["domains"],
        severity=view["severity"],
        source=view["source"],
        status=view["status"],
        joint=view["joint"],
        acknowledge_by=view["acknowledge_by"],
        close_by=view["close_by"],
        owner_node=view["owner_node"],
        source_node=view["source_node"],
        subject=view.get("subject", ""),
        history=[
            counter_pb2.ClueStep(
                sequence=h["sequence"],
                step=h["step"],
                department=h["department"],
                level=h["level"],
                note=h["note"],
                at=h["at"],
                findings=_findings(h.get("findings")),
            )
            for h in view["history"]
        ],
        receipts=[
            counter_pb2.ClueReceipt(
                from_node=r["from_node"],
                outcome=r["outcome"],
                reason_code=r["reason_code"],
                reason=r["reason"],
                received_at=r["received_at"],
                envelope=base64.b64decode(r["envelope"]),
            )
            for r in view.get("receipts", ())
        ],
        tasks=[
            counter_pb2.ClueTask(
                domain=t["domain"],
                department=t["department"],
                level=t["level"],
                status=t["status"],
                acknowledge_by=t["acknowledge_by"],
                close_by=t["close_by"],
                escalations=t["escalations"],
                overdue=t["overdue"],
                rectification=t["rectification"],
                findings=_findings(t["findings"]),
            )
            for t in view.get("tasks", ())
        ],
    )
    detail = view.get("detail")
    if detail is not None:
        clue.file.CopyFrom(
            counter_pb2.ClueFile(
                description=detail["description"],
                reporter=counter_pb2.ClueReporter(**detail["reporter"]),
                documents=_wire_documents(detail["documents"]),
            )
        )
    return clue
