"""What every page shares: the typed app keys, the cookie session, CSRF and rendering.

The session cookie carries the same bearer token the JSON API hands out (node/counter/users.py
keeps one session table), but HttpOnly and SameSite=Strict, so page scripts never see it and
another site cannot ride on it. Every POST also carries a CSRF token: for a logged-in page a
digest of the session token (nobody who cannot read the cookie can compute it, and nothing
is stored); for the login form, a random value that must match a cookie of its own
(double submit). Roles are not checked here: every action goes through the backend, which
refuses what a role may not do; the page turns that refusal into a 403 page.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from aiohttp import web

from core.clock import Clock
from core.errors import NotFound, PermissionDenied, Unauthenticated
from node.cases.requests import Principal
from node.counter.api import CounterBackend
from node.counter.contract import CounterLimits
from node.counter.users import UserStore
from node.web import i18n
from node.web.nav import items_for

if TYPE_CHECKING:
    import jinja2

log = logging.getLogger(__name__)

WEB_BACKEND = web.AppKey[CounterBackend]("yrd_web_backend")
WEB_USERS = web.AppKey("yrd_web_users", UserStore)
WEB_CLOCK = web.AppKey[Clock]("yrd_web_clock")
WEB_LIMITS = web.AppKey("yrd_web_limits", CounterLimits)

SESSION_COOKIE = "yrd_session"
LOGIN_CSRF_COOKIE = "yrd_login_csrf"
LANG_COOKIE = "yrd_lang"
CSRF_FIELD = "csrf"

CST = timezone(timedelta(hours=8))

PageHandler = Callable[[web.Request, Principal], Awaitable[web.StreamResponse]]


def cookie_name(request: web.Request, base: str) -> str:
    """Cookies ignore the port, so nodes on one host (the demo's four on 127.0.0.1) would
    overwrite each other's session; the port in the name keeps a login per counter."""
    port = request.url.port
    return f"{base}_{port}" if port else base


def session_token_of(request: web.Request) -> str:
    return request.cookies.get(cookie_name(request, SESSION_COOKIE), "")


def csrf_of(session_token: str) -> str:
    return hashlib.sha256(b"yrd-csrf\0" + session_token.encode()).hexdigest()[:32]


def lang_of(request: web.Request) -> str:
    lang = request.cookies.get(LANG_COOKIE, i18n.DEFAULT)
    return lang if lang in i18n.LANGUAGES else i18n.DEFAULT


def local_time(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, CST).strftime("%Y-%m-%d %H:%M:%S")


def iso_local(value: str | None) -> str:
    """An ISO UTC time from the API, shown in China Standard Time."""
    if not value:
        return "-"
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(CST).strftime("%Y-%m-%d %H:%M")


@functools.cache
def _templates() -> jinja2.Environment:
    """The page templates, built at the first page served: jinja2 (with markupsafe) is ~2 MB
    of resident memory that a node answering only its API and its peers never needs."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("node.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def qr_svg(text: str, scale: int) -> str:
    """``text`` as an inline SVG QR code. segno is imported here, at the first code drawn, not
    with the pages: a node that never shows a receipt or a certificate never loads it."""
    import segno

    return str(segno.make(text, error="m").svg_inline(scale=scale, omitsize=False))


def render(
    request: web.Request,
    template: str,
    principal: Principal | None = None,
    http_status: int = 200,
    **context: Any,
) -> web.Response:
    lang = lang_of(request)
    token = session_token_of(request)
    compiled = _templates().get_template(template)
    page = compiled.render(
        t=functools.partial(i18n.text, lang),
        st=functools.partial(i18n.status_text, lang),
        lang=lang,
        principal=principal,
        nav=items_for(principal.role) if principal else [],
        csrf=csrf_of(token) if principal and token else "",
        path=request.path_qs,
        local_time=local_time,
        iso_local=iso_local,
        **context,
    )
    response = web.Response(text=page, status=http_status, content_type="text/html", charset="utf-8")
    _harden(response)
    return response


def _harden(response: web.StreamResponse) -> None:
    # Inline scripts are not allowed: only our own static files run, so a value that ever
    # slipped past autoescaping still could not execute.
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"


def set_session_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(
        cookie_name(request, SESSION_COOKIE),
        token,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        path="/",
    )


async def principal_or_none(request: web.Request) -> Principal | None:
    token = session_token_of(request)
    if not token:
        return None
    try:
        return await request.app[WEB_USERS].authenticate(token)
    except Unauthenticated:
        return None


def redirect(location: str, status: int = 303) -> web.Response:
    """A redirect returned, not raised: the API's problem middleware turns raised
    exceptions into problem+json, which is right for the API and wrong for a page."""
    return web.Response(status=status, headers={"Location": location})


def page(handler: PageHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A page that needs a session: no session (or an ended one) goes to the login page; a
    POST must carry the CSRF token; the backend's refusals become pages, not tracebacks."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        principal = await principal_or_none(request)
        if principal is None:
            expired = bool(session_token_of(request))
            return redirect("/web/login?expired=1" if expired else "/web/login", 302)
        if request.method == "POST":
            form = await request.post()
            given = str(form.get(CSRF_FIELD, ""))
            if not hmac.compare_digest(given.encode(), csrf_of(session_token_of(request)).encode()):
                return render(request, "message.html", principal, http_status=403, message_key="csrf_failed")
        try:
            return await handler(request, principal)
        except PermissionDenied:
            return render(request, "message.html", principal, http_status=403, message_key="forbidden")
        except (NotFound, web.HTTPNotFound):
            return render(request, "message.html", principal, http_status=404, message_key="not_found")

    return wrapper


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)
