"""CounterService: the gRPC twin of the HTTP counter API, over the same backend, so
both doors behave the same (validation, limits, policy, roles, idempotency, errors).

Each message is turned into the JSON-shaped document the HTTP door reads and validated by
the same contract models (node.counter.contract): one set of limits, one set of error
codes, and the same request digest for idempotency.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import grpc
from yrd.counter.v1 import counter_pb2, counter_pb2_grpc
from yrd.peer.v1 import peer_pb2

from core.errors import RateLimited, Unauthenticated
from core.json_doc import parse_json_object
from core.ratelimit import RateLimiter
from node import metrics
from node.cases.requests import Principal
from node.cases.statuses import TO_WIRE
from node.counter import grpc_certificates, grpc_clues, grpc_sharing
from node.counter.api import submit_or_replay
from node.counter.backend import NodeBackend
from node.counter.certificate_contract import parse_verify
from node.counter.clue_contract import parse_clue_action, parse_submit_clue
from node.counter.contract import (
    CounterLimits,
    check_idempotency_key,
    parse_decision,
    parse_resubmit,
    request_digest,
)
from node.counter.sharing_contract import (
    parse_data_request,
    parse_disclosure_filter,
    parse_meter_filter,
    parse_query,
    parse_revoke,
    parse_search,
)
from node.counter.sharing_contract import parse_decision as parse_data_decision
from node.counter.users import UserStore
from node.grpc_errors import grpc_errors

Context = grpc.aio.ServicerContext[Any, Any]

_DECISIONS = {
    counter_pb2.DECISION_APPROVE: "approve",
    counter_pb2.DECISION_REJECT: "reject",
    counter_pb2.DECISION_NEED_MATERIALS: "need_materials",
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def submit_document(request: counter_pb2.SubmitApplicationRequest) -> dict[str, Any]:
    """The request as the HTTP door's JSON body; absent proto3 fields stay absent."""
    doc: dict[str, Any] = {
        "service_id": request.service_id,
        "applicant": {"name": request.applicant.name, "id_number": request.applicant.id_number},
        "form": parse_json_object(request.form_json or "{}", field="form_json"),
        "consent": request.consent,
    }
    if request.attachments:
        doc["attachments"] = [
            {
                "material": a.material,
                "filename": a.filename,
                "content_type": a.content_type,
                "data": _b64(a.data),
            }
            for a in request.attachments
        ]
    if request.purpose:
        doc["purpose"] = request.purpose
    return doc


def resubmit_document(request: counter_pb2.ResubmitComponentRequest) -> dict[str, Any]:
    """The correction as the HTTP door's JSON body."""
    doc: dict[str, Any] = {"form": parse_json_object(request.form_json or "{}", field="form_json")}
    if request.attachments:
        doc["attachments"] = [
            {
                "material": a.material,
                "filename": a.filename,
                "content_type": a.content_type,
                "data": _b64(a.data),
            }
            for a in request.attachments
        ]
    return doc


def decision_document(request: counter_pb2.DecideApplicationRequest) -> dict[str, Any]:
    doc: dict[str, Any] = {"reason": request.reason}
    if request.decision != counter_pb2.DECISION_UNSPECIFIED:
        # An enum value this build does not know stays a number, which the model refuses.
        doc["decision"] = _DECISIONS.get(request.decision, request.decision)
    if request.documents:
        doc["documents"] = [
            {"name": d.name, "content_type": d.content_type, "data": _b64(d.data)} for d in request.documents
        ]
    return doc


def _status(name: str) -> peer_pb2.ApplicationStatus.ValueType:
    return TO_WIRE[name]  # type: ignore[return-value]


class CounterServicer(counter_pb2_grpc.CounterServiceServicer):
    def __init__(
        self, backend: NodeBackend, users: UserStore, limits: CounterLimits, clerks: RateLimiter
    ) -> None:
        """``clerks`` is the HTTP door's per-account limiter itself, so an account has one
        budget of requests whichever door it uses."""
        self.backend, self.users, self.limits, self.clerks = backend, users, limits, clerks

    async def _principal(self, context: Context) -> Principal:
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                principal = await self.users.authenticate(value.removeprefix("Bearer ").strip())
                try:
                    self.clerks.check(f"account:{principal.username}", "requests")
                except RateLimited:
                    metrics.COUNTER_CALLS_LIMITED.inc()
                    raise
                return principal
        raise Unauthenticated("send 'authorization: Bearer <token>' metadata", code="missing_token")

    @grpc_errors
    async def SubmitApplication(
        self, request: counter_pb2.SubmitApplicationRequest, context: Context
    ) -> counter_pb2.SubmitApplicationResponse:
        principal = await self._principal(context)
        key = check_idempotency_key(request.idempotency_key, "idempotency_key")
        result = await submit_or_replay(self.backend, principal, key, submit_document(request), self.limits)
        return counter_pb2.SubmitApplicationResponse(
            id=result["id"], owner_node=result["owner_node"], status=_status(result["status"])
        )

    @grpc_errors
    async def GetApplication(
        self, request: counter_pb2.GetApplicationRequest, context: Context
    ) -> counter_pb2.GetApplicationResponse:
        principal = await self._principal(context)
        view = await self.backend.get_application(principal, request.id)
        return counter_pb2.GetApplicationResponse(
            id=view["id"],
            service_id=view["service_id"],
            owner_node=view["owner_node"],
            status=_status(view["status"]),
            overdue=view["overdue"],
            history=[
                counter_pb2.HistoryEntry(status=_status(h["status"]), reason=h["reason"], at_ms=h["at_ms"])
                for h in view["history"]
            ],
            receipts=[
                peer_pb2.Receipt(reason_code=r["reason_code"], reason=r["reason"], rule_id=r["rule_id"])
                for r in view["receipts"]
            ],
            documents=[
                peer_pb2.Document(
                    name=d["name"], content_type=d["content_type"], data=base64.b64decode(d["data"])
                )
                for d in view["documents"]
            ],
            components=[_component(c) for c in view.get("components") or []],
            bundle_due_at=view.get("bundle_due_at") or "",
        )

    @grpc_errors
    async def ListServices(
        self, request: counter_pb2.ListServicesRequest, context: Context
    ) -> counter_pb2.ListServicesResponse:
        await self._principal(context)
        found = self.backend.catalogue.search(request.query or None, request.owner or None)
        return counter_pb2.ListServicesResponse(services=found)

    @grpc_errors
    async def ReleaseApplication(
        self, request: counter_pb2.ReleaseApplicationRequest, context: Context
    ) -> counter_pb2.ReleaseApplicationResponse:
        principal = await self._principal(context)
        result = await self.backend.release(principal, request.id)
        return counter_pb2.ReleaseApplicationResponse(
            id=result["id"], owner_node=result["owner_node"], status=_status(result["status"])
        )

    @grpc_errors
    async def ListWorklist(
        self, request: counter_pb2.ListWorklistRequest, context: Context
    ) -> counter_pb2.ListWorklistResponse:
        principal = await self._principal(context)
        items = await self.backend.worklist(principal)
        return counter_pb2.ListWorklistResponse(applications=[_work_item(i) for i in items])

    @grpc_errors
    async def DecideApplication(
        self, request: counter_pb2.DecideApplicationRequest, context: Context
    ) -> counter_pb2.DecideApplicationResponse:
        principal = await self._principal(context)
        decision, reason, documents = parse_decision(decision_document(request), self.limits)
        result = await self.backend.decide(principal, request.id, decision, reason, documents)
        return counter_pb2.DecideApplicationResponse(id=result["id"], status=_status(result["status"]))

    @grpc_errors
    async def ResubmitComponent(
        self, request: counter_pb2.ResubmitComponentRequest, context: Context
    ) -> counter_pb2.ResubmitComponentResponse:
        principal = await self._principal(context)
        form, attachments = parse_resubmit(resubmit_document(request), self.limits)
        result = await self.backend.resubmit_component(
            principal, request.id, request.component, form, attachments
        )
        return counter_pb2.ResubmitComponentResponse(
            id=result["id"], component=result["component"], attempt=result["attempt"], status=result["status"]
        )

    # -- supervision clues (docs/clues.md); node/http/clue_routes.py is the HTTP twin --------

    @grpc_errors
    async def SubmitClue(
        self, request: counter_pb2.SubmitClueRequest, context: Context
    ) -> counter_pb2.SubmitClueResponse:
        principal = await self._principal(context)
        key = check_idempotency_key(request.idempotency_key, "idempotency_key")
        doc = grpc_clues.submit_clue_document(request)
        digest = request_digest(doc)
        created = await self.backend.submit_clue(principal, key, parse_submit_clue(doc, self.limits, digest))
        return counter_pb2.SubmitClueResponse(
            id=created["id"], owner_node=created["owner_node"], status=created["status"]
        )

    @grpc_errors
    async def GetClue(
        self, request: counter_pb2.GetClueRequest, context: Context
    ) -> counter_pb2.GetClueResponse:
        principal = await self._principal(context)
        view = await self.backend.get_clue(principal, request.id)
        return counter_pb2.GetClueResponse(clue=grpc_clues.clue_message(view))

    @grpc_errors
    async def ListClues(
        self, request: counter_pb2.ListCluesRequest, context: Context
    ) -> counter_pb2.ListCluesResponse:
        principal = await self._principal(context)
        views = await self.backend.list_clues(principal)
        return counter_pb2.ListCluesResponse(clues=[grpc_clues.clue_message(v) for v in views])

    @grpc_errors
    async def AcknowledgeClue(
        self, request: counter_pb2.AcknowledgeClueRequest, context: Context
    ) -> counter_pb2.AcknowledgeClueResponse:
        clue = await self._act(context, request.id, "acknowledge", grpc_clues.acknowledge_document(request))
        return counter_pb2.AcknowledgeClueResponse(clue=clue)

    @grpc_errors
    async def RecordClueFindings(
        self, request: counter_pb2.RecordClueFindingsRequest, context: Context
    ) -> counter_pb2.RecordClueFindingsResponse:
        clue = await self._act(context, request.id, "findings", grpc_clues.findings_document(request))
        return counter_pb2.RecordClueFindingsResponse(clue=clue)

    @grpc_errors
    async def CloseClue(
        self, request: counter_pb2.CloseClueRequest, context: Context
    ) -> counter_pb2.CloseClueResponse:
        clue = await self._act(context, request.id, "close", grpc_clues.close_document(request))
        return counter_pb2.CloseClueResponse(clue=clue)

    async def _act(
        self, context: Context, clue_id: str, action: str, doc: dict[str, Any]
    ) -> counter_pb2.Clue:
        principal = await self._principal(context)
        kwargs = parse_clue_action(action, doc, self.limits)
        view = await self.backend.act_on_clue(principal, clue_id, action, **kwargs)
        return grpc_clues.clue_message(view)

    # -- data sharing (docs/sharing.md); node/http/sharing_routes.py is the HTTP twin ---------

    @grpc_errors
    async def SearchDataResources(
        self, request: counter_pb2.SearchDataResourcesRequest, context: Context
    ) -> counter_pb2.SearchDataResourcesResponse:
        principal = await self._principal(context)
        filters = parse_search(grpc_sharing.search_filters(request))
        found = await self.backend.list_data_resources(principal, *filters)
        return counter_pb2.SearchDataResourcesResponse(
            resources=[grpc_sharing.resource_message(r) for r in found]
        )

    @grpc_errors
    async def QueryData(
        self, request: counter_pb2.QueryDataRequest, context: Context
    ) -> counter_pb2.QueryDataResponse:
        principal = await self._principal(context)
        query = parse_query(grpc_sharing.query_document(request), self.limits)
        return grpc_sharing.merged_view_message(await self.backend.query_data(principal, query))

    @grpc_errors
    async def FileDataRequest(
        self, request: counter_pb2.FileDataRequestRequest, context: Context
    ) -> counter_pb2.FileDataRequestResponse:
        principal = await self._principal(context)
        # Optional here, as the Idempotency-Key header is for data requests over HTTP.
        key = None
        if request.idempotency_key:
            key = check_idempotency_key(request.idempotency_key, "idempotency_key")
        doc = grpc_sharing.data_request_document(request)
        body = parse_data_request(doc, self.limits, request_digest(doc))
        created = await self.backend.request_data(principal, body, key)
        return counter_pb2.FileDataRequestResponse(request=grpc_sharing.data_request_message(created))

    @grpc_errors
    async def ListDataRequests(
        self, request: counter_pb2.ListDataRequestsRequest, context: Context
    ) -> counter_pb2.ListDataRequestsResponse:
        principal = await self._principal(context)
        found = await self.backend.list_data_requests(principal)
        return counter_pb2.ListDataRequestsResponse(
            sent=[grpc_sharing.data_request_message(r) for r in found["sent"]],
            received=[grpc_sharing.data_request_message(r) for r in found["received"]],
        )

    @grpc_errors
    async def DecideDataRequest(
        self, request: counter_pb2.DecideDataRequestRequest, context: Context
    ) -> counter_pb2.DecideDataRequestResponse:
        principal = await self._principal(context)
        kwargs = parse_data_decision(grpc_sharing.decision_document(request), self.limits)
        decided = await self.backend.decide_data_request(principal, request.id, **kwargs)
        return counter_pb2.DecideDataRequestResponse(request=grpc_sharing.data_request_message(decided))

    @grpc_errors
    async def RevokeGrant(
        self, request: counter_pb2.RevokeGrantRequest, context: Context
    ) -> counter_pb2.RevokeGrantResponse:
        principal = await self._principal(context)
        note = parse_revoke(grpc_sharing.revoke_document(request), self.limits)
        revoked = await self.backend.revoke_grant(principal, request.id, note)
        return counter_pb2.RevokeGrantResponse(request=grpc_sharing.data_request_message(revoked))

    @grpc_errors
    async def ListDisclosures(
        self, request: counter_pb2.ListDisclosuresRequest, context: Context
    ) -> counter_pb2.ListDisclosuresResponse:
        principal = await self._principal(context)
        filters = parse_disclosure_filter(grpc_sharing.disclosure_filters(request))
        found = await self.backend.disclosures(principal, *filters)
        return counter_pb2.ListDisclosuresResponse(
            disclosures=[grpc_sharing.disclosure_message(d) for d in found]
        )

    @grpc_errors
    async def GetDataMeter(
        self, request: counter_pb2.GetDataMeterRequest, context: Context
    ) -> counter_pb2.GetDataMeterResponse:
        principal = await self._principal(context)
        filters = parse_meter_filter(grpc_sharing.meter_filters(request))
        return grpc_sharing.meter_message(await self.backend.data_meter(principal, *filters))

    @grpc_errors
    async def VerifyCertificate(
        self, request: counter_pb2.VerifyCertificateRequest, context: Context
    ) -> counter_pb2.VerifyCertificateResponse:
        principal = await self._principal(context)
        data = parse_verify(grpc_certificates.verify_document(request), self.limits)
        return grpc_certificates.verdict_message(await self.backend.verify_certificate(principal, data))


def _component(c: dict[str, Any]) -> counter_pb2.Component:
    return counter_pb2.Component(
        name=c["name"],
        service_id=c["service_id"],
        service_name=c["service_name"],
        department=c["department"],
        owner=c["owner"],
        owner_node=c["owner_node"],
        after=c["after"],
        status=c["status"],
        attempt=c["attempt"],
        application_id=c["application_id"],
        due_at=c["due_at"],
        reason=c["reason"],
        results={k: v if isinstance(v, str) else json.dumps(v) for k, v in c["results"].items()},
    )


def _work_item(item: dict[str, Any]) -> counter_pb2.WorkItem:
    return counter_pb2.WorkItem(
        id=item["id"],
        service_id=item["service_id"],
        origin_node=item["origin_node"],
        status=_status(item["status"]),
        handler=item["handler"],
        received_at=item["received_at"],
        due_at=item["due_at"],
        overdue=item["overdue"],
        purpose=item["purpose"],
        applicant=counter_pb2.Applicant(**item["applicant"]),
        form_json=json.dumps(item["form"], ensure_ascii=False),
        attachments=[counter_pb2.AttachmentInfo(**a) for a in item["attachments"]],
    )
