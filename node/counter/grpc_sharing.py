"""Data sharing at the gRPC counter: messages to and from the documents of the sharing API.

Kept apart from grpc_server.py, as grpc_clues.py is, so the servicer stays a list of calls. A
request becomes the JSON-shaped document ``POST /api/v1/queries`` (or ``/data-requests``, a
decision, a revocation) would carry, or the query-string filters of a search, and the same
contract (node/counter/sharing_contract.py) checks it, so a limit or a code cannot differ
between the doors. Empty optional fields are left out, because proto3 cannot tell them from
absent ones: a data request sent over HTTP without them has the same request digest, so one
idempotency key means one request at either door. Required fields stay even when empty, so
the contract names them rather than calling them missing.
"""

from __future__ import annotations

import json
from typing import Any

from yrd.counter.v1 import counter_pb2

_DECISIONS = {
    counter_pb2.DATA_DECISION_APPROVE: "approve",
    counter_pb2.DATA_DECISION_REFUSE: "refuse",
}


def _present(**fields: str) -> dict[str, str]:
    return {k: v for k, v in fields.items() if v}


def search_filters(request: counter_pb2.SearchDataResourcesRequest) -> dict[str, str]:
    """The search as ``GET /api/v1/data-resources``' query string."""
    return _present(q=request.query, holder=request.holder, sharing=request.sharing)


def disclosure_filters(request: counter_pb2.ListDisclosuresRequest) -> dict[str, str]:
    """The filter as ``GET /api/v1/disclosures``' query string."""
    return _present(subject_kind=request.subject_kind, subject_id=request.subject_id, side=request.side)


def meter_filters(request: counter_pb2.GetDataMeterRequest) -> dict[str, str]:
    """The filter as ``GET /api/v1/data-meter``'s query string."""
    return _present(since=request.since, until=request.until, resource=request.resource)


def query_document(request: counter_pb2.QueryDataRequest) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "subject": {"kind": request.subject.kind, "id": request.subject.id},
        "purpose": request.purpose,
        "resources": [
            {"id": a.id, "fields": list(a.fields)} if a.fields else {"id": a.id} for a in request.resources
        ],
    }
    if request.HasField("consent"):
        c = request.consent
        consent: dict[str, Any] = {
            "given_by": c.given_by,
            "subject_id": c.subject_id,
            "resources": list(c.resources),
            "purpose": c.purpose,
            "until": c.until,
        }
        consent.update(_present(recorded_at=c.recorded_at))
        doc["consent"] = consent
    if request.deadline_ms:
        doc["deadline_ms"] = request.deadline_ms
    return doc


def data_request_document(request: counter_pb2.FileDataRequestRequest) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "resource_id": request.resource_id,
        "fields": list(request.fields),
        "purpose": request.purpose,
        "legal_basis": request.legal_basis,
        "until": request.until,
    }
    doc.update(_present(department=request.department))
    return doc


def decision_document(request: counter_pb2.DecideDataRequestRequest) -> dict[str, Any]:
    doc: dict[str, Any] = _present(until=request.until, note=request.note)
    if request.decision != counter_pb2.DATA_DECISION_UNSPECIFIED:
        # An enum value this build does not know stays a number, which the model refuses.
        doc["decision"] = _DECISIONS.get(request.decision, request.decision)
    if request.fields:
        doc["fields"] = list(request.fields)
    return doc


def revoke_document(request: counter_pb2.RevokeGrantRequest) -> dict[str, Any]:
    return _present(note=request.note)


# --- answers ----------------------------------------------------------------------------------


def _declared(message: Any, view: dict[str, Any], *nested: str) -> dict[str, Any]:
    """The view's values the message declares, null as empty, less the ``nested`` ones the
    caller builds: a key added to an HTTP view later is not on the wire until the proto names
    it, rather than failing the call."""
    return {
        f.name: "" if view[f.name] is None else view[f.name]
        for f in message.DESCRIPTOR.fields
        if f.name in view and f.name not in nested
    }


def resource_message(view: dict[str, Any]) -> counter_pb2.DataResource:
    """A catalogue entry as registry/data_catalogue.py ``resource_to_api`` shows it."""
    return counter_pb2.DataResource(
        **_declared(counter_pb2.DataResource, view, "fields"),
        fields=[counter_pb2.DataField(**_declared(counter_pb2.DataField, f)) for f in view["fields"]],
    )


def merged_view_message(view: dict[str, Any]) -> counter_pb2.QueryDataResponse:
    """The backend's merged view; the disclosed fields keep their JSON types (a dose count
    stays a number), so they travel as a JSON object, as a form does."""
    items = []
    for i in view["items"]:
        item = counter_pb2.DataQueryItem(**_declared(counter_pb2.DataQueryItem, i))
        if i["fields"] is not None:
            item.fields_json = json.dumps(i["fields"], ensure_ascii=False)
        items.append(item)
    head = _declared(counter_pb2.QueryDataResponse, view, "items")
    return counter_pb2.QueryDataResponse(**head, items=items)


def data_request_message(view: dict[str, Any]) -> counter_pb2.DataRequest:
    """A request as the asker (``request_view``) or the holder (``grant_view``) shows it; what
    one side does not know is empty."""
    return counter_pb2.DataRequest(**_declared(counter_pb2.DataRequest, view))


def disclosure_message(row: dict[str, Any]) -> counter_pb2.DataDisclosure:
    return counter_pb2.DataDisclosure(**_declared(counter_pb2.DataDisclosure, row))


def meter_message(view: dict[str, Any]) -> counter_pb2.GetDataMeterResponse:
    return counter_pb2.GetDataMeterResponse(
        rows=[counter_pb2.DataMeterRow(**_declared(counter_pb2.DataMeterRow, r)) for r in view["rows"]],
        total=view["total"],
    )
