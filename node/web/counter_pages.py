"""The counter: finding a matter, the generated form, the receipt, the status page and
this counter's queue. Every action goes through the backend, which checks the role; the
form is checked again there by the same contract and admission code as the JSON API."""

from __future__ import annotations

import base64
import secrets
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from core.errors import InvalidInput, YrdError
from node.cases.requests import Principal
from node.counter.api import submit_or_replay
from node.web.bundle_pages import part_inputs
from node.web.certificate_pages import checked_cards
from node.web.core import WEB_BACKEND, WEB_LIMITS, page, qr_svg, redirect, render

routes = web.RouteTableDef()

# What the form's own inputs are called: the backend's error fields use the same names, so
# a refusal lands next to the input at fault.
APPLICANT_NAME, APPLICANT_ID = "applicant.name", "applicant.id_number"


def _text(form: MultiMapping[Any], name: str, limit: int = 200) -> str:
    value = form.get(name, "")
    return value[:limit].strip() if isinstance(value, str) else ""


async def service_by_id(request: web.Request, service_id: str) -> dict[str, Any]:
    if not service_id or len(service_id) > 128:
        raise web.HTTPNotFound()
    found = [
        s for s in await request.app[WEB_BACKEND].list_services(service_id, None) if s["id"] == service_id
    ]
    if not found:
        raise web.HTTPNotFound()
    return found[0]


@routes.get("/web/services")
@page
async def services(request: web.Request, principal: Principal) -> web.StreamResponse:
    q, owner = _text(request.query, "q", 64), _text(request.query, "owner", 6)
    department = _text(request.query, "department", 64)
    error = ""
    try:
        found = await request.app[WEB_BACKEND].list_services(q or None, owner or None)
    except InvalidInput as e:
        found, error = [], e.reason
    if department:
        found = [s for s in found if department.casefold() in s["department"].casefold()]
    return render(
        request,
        "services.html",
        principal,
        services=found,
        q=q,
        owner=owner,
        department=department,
        error=error,
    )


def _field_inputs(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The form's inputs with the browser-side checks the schema allows (required,
    maxlength, pattern, a choice list): the server checks everything again."""
    required = set(schema.get("required", []))
    inputs = []
    for name, prop in schema.get("properties", {}).items():
        inputs.append(
            {
                "name": name,
                "label": prop.get("title", name),
                "required": name in required,
                "type": prop.get("type", "string"),
                "format": prop.get("format", ""),
                "pattern": prop.get("pattern", ""),
                "maxlength": prop.get("maxLength"),
                "choices": prop.get("enum", []),
                "minimum": prop.get("minimum"),
                "maximum": prop.get("maximum"),
                "personal": bool(prop.get("x-personal")),
            }
        )
    return inputs


def _render_form(
    request: web.Request,
    principal: Principal,
    service: dict[str, Any],
    values: dict[str, Any],
    errors: dict[str, str],
    key: str,
    http_status: int = 200,
) -> web.Response:
    return render(
        request,
        "apply.html",
        principal,
        http_status=http_status,
        service=service,
        inputs=_field_inputs(service["form_schema"]),
        values=values,
        errors=errors,
        idem=key,
        max_attachment_bytes=request.app[WEB_LIMITS].max_attachment_bytes,
    )


@routes.get("/web/services/{id}/apply")
@page
async def apply_form(request: web.Request, principal: Principal) -> web.StreamResponse:
    service = await service_by_id(request, request.match_info["id"])
    return _render_form(request, principal, service, {}, {}, secrets.token_urlsafe(16))


def _error_field(field: str | None) -> str:
    if not field:
        return "_form"
    if field.startswith("attachments"):
        return "attachments"
    return field


def _form_value(prop: dict[str, Any], raw: str, present: bool) -> Any:
    """The typed value the schema wants; a bad number stays text for the server to refuse."""
    kind = prop.get("type")
    if kind == "boolean":
        return present
    if kind == "integer" and raw:
        try:
            return int(raw)
        except ValueError:
            return raw
    return raw


@routes.post("/web/services/{id}/apply")
@page
async def submit(request: web.Request, principal: Principal) -> web.StreamResponse:
    service = await service_by_id(request, request.match_info["id"])
    data = await request.post()
    key = _text(data, "idem", 64) or secrets.token_urlsafe(16)
    values: dict[str, Any] = {
        APPLICANT_NAME: _text(data, APPLICANT_NAME),
        APPLICANT_ID: _text(data, APPLICANT_ID),
    }
    form: dict[str, Any] = {}
    for name, prop in service["form_schema"].get("properties", {}).items():
        raw = _text(data, f"form.{name}", 2000)
        values[f"form.{name}"] = raw
        value = _form_value(prop, raw, f"form.{name}" in data)
        if value != "" or prop.get("type") == "boolean":
            form[name] = value
    attachments = []
    for i, material in enumerate(service["materials"]):
        upload = data.get(f"file.{i}")
        if isinstance(upload, web.FileField):
            content = upload.file.read()
            if content:
                attachments.append(
                    {
                        "material": material["name"],
                        "filename": upload.filename[:200] or "upload",
                        "content_type": upload.content_type or "application/octet-stream",
                        "data": base64.b64encode(content).decode(),
                    }
                )
    consent = data.get("consent") == "yes"
    values["consent"] = consent
    doc: dict[str, Any] = {
        "service_id": service["id"],
        "applicant": {"name": values[APPLICANT_NAME], "id_number": values[APPLICANT_ID]},
        "form": form,
        "attachments": attachments,
        "consent": consent,
    }
    try:
        created = await submit_or_replay(
            request.app[WEB_BACKEND], principal, key, doc, request.app[WEB_LIMITS]
        )
    except YrdError as e:
        if isinstance(e, InvalidInput) or e.http_status in (409, 422):
            errors = {_error_field(e.field): e.reason}
            # A corrected form is a new request: it needs a key of its own.
            return _render_form(request, principal, service, values, errors, secrets.token_urlsafe(16), 422)
        raise
    return redirect(f"/web/applications/{created['id']}")


async def _application(request: web.Request, principal: Principal) -> dict[str, Any]:
    return await request.app[WEB_BACKEND].get_application(principal, request.match_info["id"])


@routes.get("/web/applications/{id}")
@page
async def application(request: web.Request, principal: Principal) -> web.StreamResponse:
    view = await _application(request, principal)
    code = await request.app[WEB_BACKEND].check_code(principal, view["id"])
    service = await _maybe_service(request, view["service_id"])
    parts = await part_inputs(request, view)
    certs = await checked_cards(request, principal, view["documents"])
    return render(
        request, "application.html", principal, app=view, code=code, service=service, parts=parts, certs=certs
    )


@routes.get("/web/applications/{id}/status.json")
@page
async def application_status(request: web.Request, principal: Principal) -> web.StreamResponse:
    """What the status page polls: enough to notice a change, nothing more."""
    view = await _application(request, principal)
    return web.json_response(
        {"status": view["status"], "events": len(view["history"])}, headers={"Cache-Control": "no-store"}
    )


async def _maybe_service(request: web.Request, service_id: str) -> dict[str, Any] | None:
    try:
        return await service_by_id(request, service_id)
    except web.HTTPNotFound:
        return None


def track_url(request: web.Request, app_id: str, code: str) -> str:
    return str(request.url.with_path("/track").with_query({"id": app_id, "code": code}))


@routes.get("/web/applications/{id}/receipt")
@page
async def receipt(request: web.Request, principal: Principal) -> web.StreamResponse:
    view = await _application(request, principal)
    code = await request.app[WEB_BACKEND].check_code(principal, view["id"])
    url = track_url(request, view["id"], code)
    qr = qr_svg(url, scale=3)
    service = await _maybe_service(request, view["service_id"])
    certs = await checked_cards(request, principal, view["documents"])
    return render(
        request, "receipt.html", principal, app=view, code=code, qr=qr, url=url, service=service, certs=certs
    )


@routes.get("/web/applications/{id}/documents/{n}")
@page
async def document(request: web.Request, principal: Principal) -> web.StreamResponse:
    view = await _application(request, principal)
    try:
        doc = view["documents"][int(request.match_info["n"])]
    except (ValueError, IndexError):
        raise web.HTTPNotFound() from None
    # Served as a download, never rendered: the owner wrote it, not us.
    safe_name = "".join(c for c in doc["name"] if c.isalnum() or c in "._-")[:100] or "document"
    return web.Response(
        body=base64.b64decode(doc["data"]),
        content_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{safe_name}"',
            "X-Content-Type-Options": "nosniff",
        },
    )


@routes.get("/web/queue")
@page
async def queue(request: web.Request, principal: Principal) -> web.StreamResponse:
    status, service_id = _text(request.query, "status", 32), _text(request.query, "service", 128)
    rows = await request.app[WEB_BACKEND].counter_queue(principal, status or None, service_id or None)
    return render(request, "queue.html", principal, rows=rows, status=status, service=service_id)


@routes.post("/web/applications/{id}/release")
@page
async def release(request: web.Request, principal: Principal) -> web.StreamResponse:
    try:
        await request.app[WEB_BACKEND].release(principal, request.match_info["id"])
    except YrdError as e:
        if e.http_status not in (409,):
            raise
        return render(
            request, "message.html", principal, http_status=409, message_key="error", detail=e.reason
        )
    return redirect("/web/queue?status=awaiting_approval")
