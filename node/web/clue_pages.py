"""The clue pages (docs/clues.md): take a clue in at the counter, the dispatcher's list with a
clue's closed-loop history, and the regulator's queue with acknowledge, findings and close.

The form posts the same document the JSON API takes and is checked by the same contract
(node/counter/clue_contract.py), so a bad value comes back at its field; every action goes
through the backend, which decides what each role may do.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from core.errors import NotFound, PolicyDenied, YrdError
from node.cases.requests import Principal
from node.counter.clue_contract import parse_clue_action, parse_submit_clue
from node.counter.contract import request_digest
from node.web.core import WEB_BACKEND, WEB_LIMITS, page, redirect, render
from registry.dispatch import DOMAINS, SEVERITIES, SOURCES

routes = web.RouteTableDef()
ACTIONS = ("acknowledge", "findings", "close")
FORM_ERRORS = (400, 409, 413, 422)
# The API's field (contract or check) -> the form's input that shows the error.
FORM_FIELD = {
    "subject.credit_code": "credit_code",
    "subject.place": "place",
    "reporter.name": "reporter_name",
    "reporter.contact": "reporter_contact",
    "reporter": "reporter_name",
    "acknowledge_by": "acknowledge_within_hours",
    "close_by": "close_within_days",
}


def form_field(api_field: str | None) -> str:
    name = (api_field or "form").split("[")[0]
    return FORM_FIELD.get(name, name)


def _number(value: str) -> int | str:
    """A number as the contract wants it; anything else is passed on for the contract to refuse."""
    return int(value) if value.strip().isdigit() else value


def _documents(data: MultiDictProxy[Any]) -> list[dict[str, str]]:
    upload: Any = data.get("document")
    if not isinstance(upload, web.FileField):
        return []
    content = upload.file.read()
    if not content:
        return []
    return [
        {
            "name": upload.filename or "document",
            "content_type": upload.content_type or "application/octet-stream",
            "data": base64.b64encode(content).decode(),
        }
    ]


def clue_document(data: MultiDictProxy[Any]) -> dict[str, Any]:
    """The API's document from the form's fields."""
    doc: dict[str, Any] = {
        "source": str(data.get("source", "")),
        "region_code": str(data.get("region_code", "")).strip(),
        "domains": [str(d) for d in data.getall("domains", [])],
        "subject": {
            "credit_code": str(data.get("credit_code", "")).strip(),
            "place": str(data.get("place", "")).strip(),
        },
        "severity": str(data.get("severity", "")),
        "description": str(data.get("description", "")),
        "reporter": {
            "name": str(data.get("reporter_name", "")),
            "contact": str(data.get("reporter_contact", "")),
        },
        "acknowledge_within_hours": _number(str(data.get("acknowledge_within_hours", ""))),
        "close_within_days": _number(str(data.get("close_within_days", ""))),
    }
    documents = _documents(data)
    if documents:
        doc["documents"] = documents
    return doc


def _form(
    request: web.Request, principal: Principal, values: dict[str, Any], errors: dict[str, str], status: int
) -> web.Response:
    return render(
        request,
        "clue_new.html",
        principal,
        http_status=status,
        values=values,
        errors=errors,
        domains=DOMAINS,
        sources=SOURCES,
        severities=SEVERITIES,
    )


@routes.get("/web/clues")
@page
async def clue_list(request: web.Request, principal: Principal) -> web.StreamResponse:
    rows = await request.app[WEB_BACKEND].list_clues(principal)
    return render(request, "clues.html", principal, rows=rows, domains=DOMAINS)


@routes.get("/web/clues/new")
@page
async def clue_new(request: web.Request, principal: Principal) -> web.StreamResponse:
    # The key makes a double-posted form one clue, as Idempotency-Key does for the API.
    values = {"key": secrets.token_hex(12), "acknowledge_within_hours": 24, "close_within_days": 15}
    return _form(request, principal, values, {}, 200)


@routes.post("/web/clues")
@page
async def clue_submit(request: web.Request, principal: Principal) -> web.StreamResponse:
    data = await request.post()
    doc = clue_document(data)
    key = str(data.get("key", ""))[:128] or secrets.token_hex(12)
    values = {**{k: str(v) for k, v in data.items() if k not in ("document", "csrf")}, "key": key}
    values["domains"] = doc["domains"]
    try:
        request_key = f"web-{key}"
        created = await request.app[WEB_BACKEND].submit_clue(
            principal, request_key, parse_submit_clue(doc, request.app[WEB_LIMITS], request_digest(doc))
        )
    except PolicyDenied as e:  # the clue may not leave: the clerk sees the rule's reason
        return _form(request, principal, values, {"form": e.reason}, 403)
    except YrdError as e:
        if e.http_status not in FORM_ERRORS:
            raise
        return _form(request, principal, values, {form_field(e.field): e.reason}, 422)
    return redirect(f"/web/clues/{created['id']}")


async def _detail(
    request: web.Request, principal: Principal, errors: dict[str, str], http_status: int = 200
) -> web.Response:
    clue = await request.app[WEB_BACKEND].get_clue(principal, request.match_info["id"])
    return render(
        request,
        "clue_detail.html",
        principal,
        http_status=http_status,
        clue=clue,
        errors=errors,
        domains=DOMAINS,
    )


@routes.get("/web/clues/{id}")
@page
async def clue_detail(request: web.Request, principal: Principal) -> web.StreamResponse:
    return await _detail(request, principal, {})


@routes.post("/web/clues/{id}/{action}")
@page
async def clue_act(request: web.Request, principal: Principal) -> web.StreamResponse:
    action = request.match_info["action"]
    if action not in ACTIONS:
        raise NotFound("no such clue action")
    data = await request.post()
    doc: dict[str, Any] = {"department": str(data.get("department", ""))}
    if action == "findings":
        doc |= {"text": str(data.get("text", "")), "rectification": str(data.get("rectification", ""))}
        documents = _documents(data)
        if documents:
            doc["documents"] = documents
    elif action == "close":
        doc["note"] = str(data.get("note", ""))
    try:
        kwargs = parse_clue_action(action, doc, request.app[WEB_LIMITS])
        await request.app[WEB_BACKEND].act_on_clue(principal, request.match_info["id"], action, **kwargs)
    except YrdError as e:
        if e.http_status not in FORM_ERRORS:
            raise
        return await _detail(
            request, principal, {action: f"{e.field}: {e.reason}" if e.field else e.reason}, 422
        )
    return redirect(f"/web/clues/{request.match_info['id']}")
