"""A bundle (一件事) on the counter's status page: each part with its owner, status and
deadline, and the correction of a failed part. The correction goes through the backend's
``resubmit_component`` (the one role check) after the JSON API's own contract check, so the
page accepts nothing the API would refuse."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from core.errors import InvalidInput, YrdError
from node.cases.requests import Principal
from node.counter.contract import parse_resubmit
from node.web.core import WEB_BACKEND, WEB_LIMITS, page, redirect, render

routes = web.RouteTableDef()

# The parts a clerk may correct; the lead refuses any other with component_not_failed.
FAILED = frozenset({"rejected", "needs_materials", "refused"})


async def part_inputs(request: web.Request, view: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """For each failed part of ``view``, the inputs of its own service's form (name, label,
    type), so the clerk corrects the very fields the part's owner checks."""
    out: dict[str, list[dict[str, Any]]] = {}
    backend = request.app[WEB_BACKEND]
    for part in view.get("components") or []:
        if part["status"] not in FAILED:
            continue
        found = [
            s for s in await backend.list_services(part["service_id"], None) if s["id"] == part["service_id"]
        ]
        if not found:
            continue  # a part the union catalogue no longer lists: the page still shows it
        props = found[0]["form_schema"].get("properties", {})
        out[part["name"]] = [
            {"name": n, "label": p.get("title", n), "type": p.get("type", "string")} for n, p in props.items()
        ]
    return out


def _typed(kind: str, raw: str) -> Any:
    """The schema's type for a text input; a bad number stays text for the contract to refuse."""
    if kind == "integer":
        try:
            return int(raw)
        except ValueError:
            return raw
    if kind == "boolean":
        return raw in ("true", "yes", "on")
    return raw


@routes.post("/web/applications/{id}/components/{component}/resubmit")
@page
async def resubmit(request: web.Request, principal: Principal) -> web.StreamResponse:
    app_id, component = request.match_info["id"], request.match_info["component"]
    backend = request.app[WEB_BACKEND]
    view = await backend.get_application(principal, app_id)
    parts = {p["name"]: p for p in view.get("components") or []}
    if component not in parts:
        raise web.HTTPNotFound()
    data = await request.post()
    inputs = (await part_inputs(request, view)).get(component, [])
    form: dict[str, Any] = {}
    for field in inputs:
        raw = data.get(f"form.{field['name']}", "")
        if isinstance(raw, str) and raw.strip():
            form[field["name"]] = _typed(field["type"], raw.strip()[:2000])
    try:
        corrected, attachments = parse_resubmit({"form": form}, request.app[WEB_LIMITS])
        await backend.resubmit_component(principal, app_id, component, corrected, attachments)
    except YrdError as e:
        if not (isinstance(e, InvalidInput) or e.http_status in (409, 422)):
            raise
        return render(
            request,
            "message.html",
            principal,
            http_status=e.http_status,
            message_key="error",
            detail=e.reason,
        )
    return redirect(f"/web/applications/{app_id}")
