"""E-certificates (电子证照) on the pages: each certificate of an application with its QR
code (status page, receipt, the citizen's /track), a printable certificate page, and the
"verify a certificate" page every counter has (paste the QR text or upload the file).

Verification goes through the backend (the one role check, and a verdict from this node's
manifest alone); the pages only decode what they show. A certificate shows its holder as
issued: masked for a person, so the QR code can be shown to whoever is at the counter.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from core.errors import CertificateRejected
from node.cases.requests import Principal
from node.web.core import WEB_BACKEND, page, qr_svg, render
from registry.certificates import CONTENT_TYPE, MAX_TEXT_CHARS, decode, describe, to_text

routes = web.RouteTableDef()


def certificate_cards(documents: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The certificates among an application's result documents (base64 ``data`` as the API
    gives them), each with what it says, its QR text and the QR code as inline SVG. One that
    does not decode is left out here and stays downloadable as a plain document."""
    cards = []
    for index, doc in enumerate(documents):
        if doc.get("content_type") != CONTENT_TYPE:
            continue
        try:
            cards.append(_card(base64.b64decode(doc["data"]), index))
        except CertificateRejected:
            continue
    return cards


async def checked_cards(
    request: web.Request, principal: Principal, documents: Iterable[dict[str, Any]]
) -> list[dict[str, Any]]:
    """:func:`certificate_cards` with this node's verdict on each, so a certificate that
    does not verify is never shown as if it did."""
    cards = certificate_cards(documents)
    backend = request.app[WEB_BACKEND]
    for card in cards:
        card["verdict"] = await backend.verify_certificate(principal, card["text"].encode(), asked=False)
    return cards


def tracked_cards(certificates: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The cards of the citizen's /track view, which carries QR texts with their verdicts."""
    cards = []
    for c in certificates:
        try:
            card = _card(c["text"].encode(), None)
        except CertificateRejected:
            continue
        card["verdict"] = {"valid": c["valid"], "reason": c["reason"]}
        cards.append(card)
    return cards


def _card(data: bytes, index: int | None) -> dict[str, Any]:
    signed = decode(data)
    text = to_text(signed)
    qr = qr_svg(text, scale=2)
    return {"view": describe(signed), "text": text, "qr": qr, "index": index, "verdict": None}


@routes.get("/web/applications/{id}/certificates/{n}")
@page
async def certificate(request: web.Request, principal: Principal) -> web.StreamResponse:
    """One certificate to print or show on a phone, with the verdict of this node's check."""
    view = await request.app[WEB_BACKEND].get_application(principal, request.match_info["id"])
    try:
        n = int(request.match_info["n"])
        doc = view["documents"][n]
    except (ValueError, IndexError):
        raise web.HTTPNotFound() from None
    cards = await checked_cards(request, principal, [doc])
    if not cards:
        raise web.HTTPNotFound()
    card = {**cards[0], "index": n}  # its place among the documents: the download link
    return render(request, "certificate.html", principal, app=view, card=card)


@routes.get("/web/certificates/verify")
@page
async def verify_form(request: web.Request, principal: Principal) -> web.StreamResponse:
    return _verify_page(request, principal, None, "", missing=False)


@routes.post("/web/certificates/verify")
@page
async def verify(request: web.Request, principal: Principal) -> web.StreamResponse:
    """The pasted QR text, else the uploaded file (either form of a certificate). What is
    too long is cut, and the check calls it malformed: nothing here judges a certificate."""
    form = await request.post()
    text = form.get("text", "")
    text = text[: MAX_TEXT_CHARS + 1].strip() if isinstance(text, str) else ""
    data = text.encode()
    upload = form.get("file")
    if not data and isinstance(upload, web.FileField):
        data = upload.file.read(MAX_TEXT_CHARS + 1)
    if not data:
        return _verify_page(request, principal, None, "", missing=True)
    verdict = await request.app[WEB_BACKEND].verify_certificate(principal, data)
    return _verify_page(request, principal, verdict, text, missing=False)


def _verify_page(
    request: web.Request, principal: Principal, verdict: dict[str, Any] | None, text: str, *, missing: bool
) -> web.Response:
    return render(
        request,
        "certificate_verify.html",
        principal,
        http_status=422 if missing else 200,
        verdict=verdict,
        text=text,
        max_chars=MAX_TEXT_CHARS,
        missing=missing,
    )
