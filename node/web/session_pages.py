"""Logging in and out of the pages, the language switch, and the citizen's tracking page
(the one page that needs no account)."""

from __future__ import annotations

import hmac

from aiohttp import web

from core.errors import NotFound, RateLimited, Unauthenticated
from node.web.certificate_pages import tracked_cards
from node.web.core import (
    CSRF_FIELD,
    LANG_COOKIE,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    WEB_BACKEND,
    WEB_USERS,
    cookie_name,
    csrf_of,
    new_login_csrf,
    principal_or_none,
    redirect,
    render,
    session_token_of,
    set_session_cookie,
)
from node.web.i18n import LANGUAGES
from node.web.nav import home_of

routes = web.RouteTableDef()


def _login_page(request: web.Request, message_key: str = "", status: int = 200) -> web.Response:
    token = new_login_csrf()
    response = render(
        request, "login.html", None, http_status=status, login_csrf=token, message_key=message_key
    )
    response.set_cookie(
        cookie_name(request, LOGIN_CSRF_COOKIE),
        token,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        path="/web/login",
    )
    return response


@routes.get("/")
@routes.get("/web")
@routes.get("/web/")
async def root(request: web.Request) -> web.StreamResponse:
    principal = await principal_or_none(request)
    return redirect(home_of(principal.role) if principal else "/web/login", 302)


@routes.get("/web/login")
async def login_form(request: web.Request) -> web.StreamResponse:
    principal = await principal_or_none(request)
    if principal is not None:
        return redirect(home_of(principal.role), 302)
    return _login_page(request, "session_expired" if request.query.get("expired") else "")


@routes.post("/web/login")
async def login(request: web.Request) -> web.StreamResponse:
    """The password travels in the POST body only and is never logged or echoed back."""
    form = await request.post()
    given = str(form.get(CSRF_FIELD, ""))
    expected = request.cookies.get(cookie_name(request, LOGIN_CSRF_COOKIE), "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        return _login_page(request, "csrf_failed", 403)
    username, password = str(form.get("username", ""))[:64], str(form.get("password", ""))[:256]
    users = request.app[WEB_USERS]
    try:
        token, _expires = await users.login(username, password, request.remote or "")
        principal = await users.authenticate(token)
    except RateLimited:
        return _login_page(request, "throttled", 429)
    except Unauthenticated:
        return _login_page(request, "bad_login", 401)
    response = redirect(home_of(principal.role))
    set_session_cookie(request, response, token)
    response.del_cookie(cookie_name(request, LOGIN_CSRF_COOKIE), path="/web/login")
    return response


@routes.post("/web/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    token = session_token_of(request)
    form = await request.post()
    if token and hmac.compare_digest(str(form.get(CSRF_FIELD, "")).encode(), csrf_of(token).encode()):
        await request.app[WEB_USERS].logout(token)
    response = redirect("/web/login")
    response.del_cookie(cookie_name(request, SESSION_COOKIE), path="/")
    return response


@routes.get("/web/lang/{lang}")
async def switch_language(request: web.Request) -> web.StreamResponse:
    """A display preference, not an action: a GET that only sets a cookie is harmless."""
    lang = request.match_info["lang"]
    if lang not in LANGUAGES:
        raise web.HTTPNotFound()
    back = request.query.get("next", "/web/")
    if not back.startswith("/") or back.startswith("//"):
        back = "/web/"
    response = redirect(back, 302)
    response.set_cookie(LANG_COOKIE, lang, samesite="Strict", path="/", max_age=365 * 86400)
    return response


@routes.get("/track")
async def track(request: web.Request) -> web.StreamResponse:
    """The citizen's page: status and dates for an id plus its check code; no personal data.
    A wrong code and an unknown id get the same answer, so ids cannot be probed."""
    app_id, code = request.query.get("id", "").strip()[:64], request.query.get("code", "").strip()[:16]
    view, missing = None, False
    if app_id and code:
        try:
            view = await request.app[WEB_BACKEND].track(app_id, code)
        except NotFound:
            missing = True
    principal = await principal_or_none(request)
    return render(
        request,
        "track.html",
        principal,
        http_status=404 if missing else 200,
        view=view,
        app_id=app_id,
        code=code,
        missing=missing,
        certs=tracked_cards(view["certificates"]) if view else [],
    )
