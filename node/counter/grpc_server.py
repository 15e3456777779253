"""CounterService: the gRPC twin of the HTTP counter API, over the same backend, so
both doors behave the same (validation, policy, idempotency, errors)."""

from __future__ import annotations

import base64
import json
from typing import Any

import grpc
from yrd.counter.v1 import counter_pb2, counter_pb2_grpc
from yrd.peer.v1 import peer_pb2

from core.errors import InvalidInput, Unauthenticated
from node.cases.requests import Attachment, Principal, SubmitRequest
from node.cases.statuses import TO_WIRE
from node.counter.backend import NodeBackend
from node.counter.users import UserStore
from node.grpc_errors import grpc_errors

Context = grpc.aio.ServicerContext[Any, Any]


class CounterServicer(counter_pb2_grpc.CounterServiceServicer):
    def __init__(self, backend: NodeBackend, users: UserStore) -> None:
        self.backend, self.users = backend, users

    async def _principal(self, context: Context) -> Principal:
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                return await self.users.authenticate(value.removeprefix("Bearer ").strip())
        raise Unauthenticated("send 'authorization: Bearer <token>' metadata", code="missing_token")

    @grpc_errors
    async def SubmitApplication(
        self, request: counter_pb2.SubmitApplicationRequest, context: Context
    ) -> counter_pb2.SubmitApplicationResponse:
        principal = await self._principal(context)
        if not request.idempotency_key:
            raise InvalidInput("an idempotency key is required", field="idempotency_key")
        try:
            form = json.loads(request.form_json or "{}")
        except json.JSONDecodeError as e:
            raise InvalidInput(f"form_json is not JSON: {e.msg}", field="form_json") from e
        if not isinstance(form, dict):
            raise InvalidInput("form_json must be a JSON object", field="form_json")
        submit = SubmitRequest(
            service_id=request.service_id,
            applicant_name=request.applicant.name,
            applicant_id_number=request.applicant.id_number,
            form=form,
            attachments=tuple(
                Attachment(a.material, a.filename, a.content_type, a.data) for a in request.attachments
            ),
            consent=request.consent,
            purpose=request.purpose or "service-delivery",
        )
        result = await self.backend.submit(principal, request.idempotency_key, submit)
        return counter_pb2.SubmitApplicationResponse(
            id=result["id"],
            owner_node=result["owner_node"],
            status=TO_WIRE[result["status"]],  # type: ignore[arg-type]
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
            status=TO_WIRE[view["status"]],  # type: ignore[arg-type]
            overdue=view["overdue"],
            history=[
                counter_pb2.HistoryEntry(
                    status=TO_WIRE[h["status"]],  # type: ignore[arg-type]
                    reason=h["reason"],
                    at_ms=h["at_ms"],
                )
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
        )

    @grpc_errors
    async def ListServices(
        self, request: counter_pb2.ListServicesRequest, context: Context
    ) -> counter_pb2.ListServicesResponse:
        await self._principal(context)
        found = self.backend.catalogue.search(request.query or None, request.owner or None)
        return counter_pb2.ListServicesResponse(services=found)
