"""Data sharing on the pages (docs/sharing.md): the data catalogue, requests for access and
the holder's decisions and grants, the consented query with its merged view (and the
one-click health-code screen), and the disclosure log.

Every form is parsed by the API's own contract (node/counter/sharing_contract.py) and every
action goes through the backend, which checks the role; a page accepts nothing the JSON API
would refuse, and shows a refusal next to the input at fault or as a message page.
"""

from __future__ import annotations

import re
import secrets
from datetime import date, datetime
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from core.errors import InvalidInput, YrdError
from node.cases.requests import Principal
from node.counter.contract import request_digest
from node.counter.sharing_contract import parse_data_request, parse_decision, parse_query, parse_revoke
from node.counter.users import OPERATOR, SUPERVISOR
from node.web.core import CST, WEB_BACKEND, WEB_CLOCK, WEB_LIMITS, page, redirect, render
from registry.divisions import name_of

routes = web.RouteTableDef()

# The health-code screen of the sample federation (健康码, the latest nucleic-acid result, the
# vaccination record: three departments in three provinces); the button shows the ones the
# data catalogue lists, and none when it lists none of them.
HEALTH_SCREEN = ("sh.health-code", "js.nucleic-acid", "zj.vaccination")
HEALTH_PURPOSE = "health-check"
PURPOSES = ("health-check", "service-delivery")
SHARING_CLASSES = ("unconditional", "conditional", "not_shared")
SUBJECT_KINDS = ("person", "company")
SIDES = ("asker", "holder")
_PROVINCE = re.compile(r"\d{2}")
MAX_ASKED = 16


def _text(form: MultiMapping[Any], name: str, limit: int = 200) -> str:
    value = form.get(name, "")
    return value[:limit].strip() if isinstance(value, str) else ""


def _end_of_day(day: str, field: str) -> str:
    """A date input (YYYY-MM-DD) as the contract's instant: the end of that day in CST."""
    try:
        parsed = date.fromisoformat(day)
    except ValueError:
        raise InvalidInput("a date such as 2026-12-31", code="bad_value", field=field) from None
    return datetime.combine(parsed, datetime.max.time().replace(microsecond=0), CST).isoformat()


def _refusal(e: YrdError) -> bool:
    """What a form shows at its inputs; anything else (403, 404) the page wrapper turns into a page."""
    return isinstance(e, InvalidInput) or e.http_status in (409, 422)


def _message(request: web.Request, principal: Principal, e: YrdError) -> web.Response:
    return render(
        request, "message.html", principal, http_status=e.http_status, message_key="error", detail=e.reason
    )


async def _resources(request: web.Request, principal: Principal) -> list[dict[str, Any]]:
    return await request.app[WEB_BACKEND].list_data_resources(principal, None, None, None)


# -- the data catalogue ------------------------------------------------------------------------


@routes.get("/web/data")
@page
async def catalogue(request: web.Request, principal: Principal) -> web.StreamResponse:
    """Search by name (or id), holding department, province and sharing class."""
    q, department = _text(request.query, "q", 64), _text(request.query, "department", 64)
    province, sharing = _text(request.query, "province", 2), _text(request.query, "sharing", 16)
    error = ""
    if province and not _PROVINCE.fullmatch(province):
        error, province = "province", ""
    if sharing and sharing not in SHARING_CLASSES:
        error, sharing = "sharing", ""
    backend = request.app[WEB_BACKEND]
    found = await backend.list_data_resources(principal, q or None, province or None, sharing or None)
    if department:
        found = [r for r in found if department.casefold() in r["department"].casefold()]
    every = await _resources(request, principal)
    return render(
        request,
        "data_catalogue.html",
        principal,
        http_status=400 if error else 200,
        resources=found,
        provinces=[{"code": c, "name": name_of(c)} for c in _provinces(every)],
        q=q,
        department=department,
        province=province,
        sharing=sharing,
        classes=SHARING_CLASSES,
        error=error,
    )


def _provinces(resources: list[dict[str, Any]]) -> list[str]:
    """The provinces that hold anything, as six-digit codes: the choices of the filter."""
    return sorted({r["holder"][:2] + "0000" for r in resources})


# -- requests for access (有条件共享) and the holder's decisions --------------------------------


@routes.get("/web/data/requests")
@page
async def requests(request: web.Request, principal: Principal) -> web.StreamResponse:
    found = await request.app[WEB_BACKEND].list_data_requests(principal)
    by_id = {r["id"]: r for r in await _resources(request, principal)}
    sent, received = found["sent"], found["received"]
    return render(request, "data_requests.html", principal, sent=sent, received=received, catalogue=by_id)


def _request_form(
    request: web.Request,
    principal: Principal,
    resources: list[dict[str, Any]],
    values: dict[str, Any],
    errors: dict[str, str],
    http_status: int = 200,
    idem: str = "",
) -> web.Response:
    """The request form; ``idem`` is its idempotency key, kept while the same request is
    being filled in, so a double click or a resent form files one request, not two."""
    conditional = [r for r in resources if r["sharing"] == "conditional"]
    chosen = next((r for r in conditional if r["id"] == values.get("resource_id")), None)
    return render(
        request,
        "data_request_new.html",
        principal,
        http_status=http_status,
        resources=conditional,
        chosen=chosen,
        values=values,
        errors=errors,
        purposes=PURPOSES,
        idem=idem or secrets.token_urlsafe(16),
    )


@routes.get("/web/data/requests/new")
@page
async def new_request(request: web.Request, principal: Principal) -> web.StreamResponse:
    resources = await _resources(request, principal)
    values = {"resource_id": _text(request.query, "resource", 128), "fields": []}
    return _request_form(request, principal, resources, values, {})


@routes.post("/web/data/requests")
@page
async def file_request(request: web.Request, principal: Principal) -> web.StreamResponse:
    form = await request.post()
    values: dict[str, Any] = {
        "resource_id": _text(form, "resource_id", 128),
        "fields": [f[:64] for f in form.getall("fields", []) if isinstance(f, str)][:64],
        "purpose": _text(form, "purpose", 64),
        "legal_basis": _text(form, "legal_basis", 500),
        "until": _text(form, "until", 10),
        "department": _text(form, "department"),
    }
    resources = await _resources(request, principal)
    key = _text(form, "idem", 64)
    if _text(form, "choose"):  # only the resource was picked: now its fields can be ticked
        return _request_form(request, principal, resources, values, {}, idem=key)
    try:
        doc = {**values, "until": _end_of_day(values["until"], "until")}
        parsed = parse_data_request(doc, request.app[WEB_LIMITS], request_digest(doc))
        created = await request.app[WEB_BACKEND].request_data(principal, parsed, key or None)
    except YrdError as e:
        if not _refusal(e):
            raise
        where = (e.field or "_form").split("[")[0]  # fields[2] is the fields group
        # A corrected form is a new request: it gets a key of its own.
        return _request_form(request, principal, resources, values, {where: e.reason}, 422)
    return redirect(f"/web/data/requests#request-{created['id']}")


@routes.post("/web/data/requests/{id}/decision")
@page
async def decide(request: web.Request, principal: Principal) -> web.StreamResponse:
    """Approve (a subset of the fields asked, a term no longer than asked) or refuse."""
    form = await request.post()
    doc: dict[str, Any] = {"decision": _text(form, "decision", 16), "note": _text(form, "note", 500)}
    try:
        if doc["decision"] == "approve":
            doc["fields"] = [f[:64] for f in form.getall("fields", []) if isinstance(f, str)][:64]
            if until := _text(form, "until", 10):
                doc["until"] = _end_of_day(until, "until")
        kwargs = parse_decision(doc, request.app[WEB_LIMITS])
        await request.app[WEB_BACKEND].decide_data_request(principal, request.match_info["id"], **kwargs)
    except YrdError as e:
        if not _refusal(e):
            raise
        return _message(request, principal, e)
    return redirect("/web/data/requests")


@routes.post("/web/data/grants/{id}/revoke")
@page
async def revoke(request: web.Request, principal: Principal) -> web.StreamResponse:
    form = await request.post()
    try:
        note = parse_revoke({"note": _text(form, "note", 500)}, request.app[WEB_LIMITS])
        await request.app[WEB_BACKEND].revoke_grant(principal, request.match_info["id"], note)
    except YrdError as e:
        if not _refusal(e):
            raise
        return _message(request, principal, e)
    return redirect("/web/data/requests")


# -- the consented query and its merged view ---------------------------------------------------


def _query_page(
    request: web.Request,
    principal: Principal,
    resources: list[dict[str, Any]],
    values: dict[str, Any],
    errors: dict[str, str],
    view: dict[str, Any] | None = None,
    http_status: int = 200,
    health: bool = False,
) -> web.Response:
    by_id = {r["id"]: r for r in resources}
    return render(
        request,
        "data_query.html",
        principal,
        http_status=http_status,
        resources=[r for r in resources if r["sharing"] != "not_shared"],
        health=[by_id[r] for r in HEALTH_SCREEN if r in by_id],
        catalogue=by_id,
        values=values,
        errors=errors,
        view=view,
        health_view=health,
        purposes=PURPOSES,
        kinds=SUBJECT_KINDS,
    )


@routes.get("/web/data/query")
@page
async def query_form(request: web.Request, principal: Principal) -> web.StreamResponse:
    """The empty form; ``?resource=`` ticks resources (from the catalogue's links), and
    ``?preset=health`` the health-code screen with its purpose."""
    health = request.query.get("preset") == "health"
    asked = list(HEALTH_SCREEN) if health else list(request.query.getall("resource", []))[:MAX_ASKED]
    values = {
        "kind": "person",
        "subject_id": "",
        "purpose": HEALTH_PURPOSE if health else "",
        "resources": asked,
        "consent": False,
        "given_by": "",
        "until": _today(request),
    }
    return _query_page(request, principal, await _resources(request, principal), values, {})


def _today(request: web.Request) -> str:
    """A consent recorded at the counter lasts, unless the clerk says otherwise, to the end of
    the visit's day."""
    return datetime.fromtimestamp(request.app[WEB_CLOCK].now_ms() / 1000, CST).date().isoformat()


@routes.post("/web/data/query")
@page
async def query(request: web.Request, principal: Principal) -> web.StreamResponse:
    """Ask; the consent ticked covers exactly the resources asked, for the purpose asked, and
    names the person by the id asked about (a company's query needs none)."""
    form = await request.post()
    resources = await _resources(request, principal)
    health = _text(form, "preset", 16) == "health"
    values: dict[str, Any] = {
        "kind": _text(form, "kind", 16) or "person",
        "subject_id": _text(form, "subject_id", 18).upper(),
        "purpose": HEALTH_PURPOSE if health else _text(form, "purpose", 64),
        "resources": (
            [r for r in HEALTH_SCREEN if r in {x["id"] for x in resources}]
            if health
            else [r[:128] for r in form.getall("resources", []) if isinstance(r, str) and r][:MAX_ASKED]
        ),
        "consent": form.get("consent") == "yes",
        "given_by": _text(form, "given_by"),
        "until": _text(form, "until", 10),
    }
    doc: dict[str, Any] = {
        "subject": {"kind": values["kind"], "id": values["subject_id"]},
        "purpose": values["purpose"],
        "resources": [{"id": r} for r in values["resources"]],
    }
    try:
        if values["consent"]:
            doc["consent"] = {
                "given_by": values["given_by"],
                "subject_id": values["subject_id"],
                "resources": values["resources"],
                "purpose": values["purpose"],
                "until": _end_of_day(values["until"], "consent.until"),
            }
        view = await request.app[WEB_BACKEND].query_data(principal, parse_query(doc, request.app[WEB_LIMITS]))
    except YrdError as e:
        if not _refusal(e):
            raise
        return _query_page(request, principal, resources, values, {_at(e.field): e.reason}, http_status=422)
    return _query_page(request, principal, resources, values, {}, view=view, health=health)


def _at(field: str | None) -> str:
    """Which input a refusal belongs to: the contract names ``subject.id``, ``resources[2].id``,
    ``consent.given_by``; the form has one input (or group) for each."""
    if not field:
        return "_form"
    if field.startswith(("resources", "consent.resources")):
        return "resources"
    return {"subject.id": "subject_id", "subject.kind": "kind", "subject": "subject_id"}.get(field, field)


# -- the disclosure log ------------------------------------------------------------------------


@routes.get("/web/data/disclosures")
@page
async def disclosures(request: web.Request, principal: Principal) -> web.StreamResponse:
    """A supervisor or operator reads the whole log (by side) and the call meter; a counter
    reads one person's or company's, by the id shown at the counter, and nothing before one
    is given."""
    kind = _text(request.query, "kind", 16) or "person"
    subject_id = _text(request.query, "subject_id", 18).upper()
    side = _text(request.query, "side", 8)
    wide = principal.role in (SUPERVISOR, OPERATOR)
    backend = request.app[WEB_BACKEND]
    rows: list[dict[str, Any]] = []
    error = ""
    if kind not in SUBJECT_KINDS or side not in ("", *SIDES):
        error = f"kind: {' | '.join(SUBJECT_KINDS)}; side: {' | '.join(SIDES)}"
    elif subject_id or wide:
        try:
            rows = await backend.disclosures(principal, kind, subject_id or None, side or None)
        except InvalidInput as e:
            error = e.reason
    # The call meter: what this node answered as holder, per day, resource and asker.
    meter = await backend.data_meter(principal, None, None, None) if wide else None
    return render(
        request,
        "data_disclosures.html",
        principal,
        http_status=400 if error else 200,
        rows=rows,
        kind=kind,
        subject_id=subject_id,
        side=side,
        kinds=SUBJECT_KINDS,
        sides=SIDES,
        wide=wide,
        error=error,
        meter=meter,
    )
