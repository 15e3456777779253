"""The owner's side: everything routed here for the clerk's department (automatic decisions
included) and the work queue's decisions, with documents to attach."""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from core.errors import YrdError
from node.cases.requests import Principal
from node.counter.contract import parse_decision
from node.web.core import WEB_BACKEND, WEB_LIMITS, page, redirect, render

routes = web.RouteTableDef()


@routes.get("/web/owner")
@page
async def owner_queue(request: web.Request, principal: Principal) -> web.StreamResponse:
    status = request.query.get("status", "").strip()[:32]
    rows = await request.app[WEB_BACKEND].owner_queue(principal, status or None)
    return render(request, "owner_queue.html", principal, rows=rows, status=status)


async def _detail(
    request: web.Request, principal: Principal, errors: dict[str, str], http_status: int = 200
) -> web.Response:
    view = await request.app[WEB_BACKEND].owner_view(principal, request.match_info["id"])
    return render(request, "owner_detail.html", principal, http_status=http_status, app=view, errors=errors)


@routes.get("/web/owner/{id}")
@page
async def owner_detail(request: web.Request, principal: Principal) -> web.StreamResponse:
    return await _detail(request, principal, {})


@routes.post("/web/owner/{id}/decision")
@page
async def owner_decide(request: web.Request, principal: Principal) -> web.StreamResponse:
    data = await request.post()
    doc: dict[str, Any] = {"decision": str(data.get("decision", "")), "reason": str(data.get("reason", ""))}
    upload: Any = data.get("document")
    if isinstance(upload, web.FileField):
        content = upload.file.read()
        if content:
            # The API's contract checks the document too (name, type, size): one set of limits.
            doc["documents"] = [
                {
                    "name": upload.filename or "document",
                    "content_type": upload.content_type or "application/octet-stream",
                    "data": base64.b64encode(content).decode(),
                }
            ]
    try:
        decision, reason, documents = parse_decision(doc, request.app[WEB_LIMITS])
        await request.app[WEB_BACKEND].decide(
            principal, request.match_info["id"], decision, reason, documents
        )
    except YrdError as e:
        if e.http_status not in (400, 409, 413, 422):
            raise
        return await _detail(request, principal, {e.field or "decision": e.reason}, 422)
    return redirect("/web/owner")
