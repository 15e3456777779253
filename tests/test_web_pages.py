"""The pages over real HTTP against an in-process Jiangsu + Zhejiang federation: login with
CSRF and the session cookie, the generated form and its errors at the field, the receipt
and check code, the owner's work queue, the citizen's page, the console, and who sees what.

The browser journey (tests/test_web_browser.py) drives the same pages in Chromium; these
tests pin the rules a browser cannot see (cookie flags, CSRF refusals, status codes)."""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl
from sqlmodel import select

from node.delivery import outbox
from node.models import OutboxEntry
from simulations.local_federation import PROVINCES
from simulations.sample_applications import application_body
from tests.support.federation import PASSWORD, Federation

MARKET = "浙江省市场监督管理局"  # owns zj.industrial-licence at Zhejiang
WORKLIST_SERVICE = "zj.industrial-licence"
AUTO_SERVICE = "zj.medical.cross-region-filing"
HELD_SERVICE = "zj.hangzhou.hukou.migration"
WRONG_ID = "110105194912310021"  # right shape, wrong check digit (X is right)

BUNDLE = """\
node: {node}
revision: test-web
rules:
  - id: hold-hukou
    effect: allow
    when:
      direction: outbound
      service:
        ids: "*.hukou.migration"
    obligations:
      require_second_approval: true
  - id: allow-outbound
    effect: allow
    when:
      direction: outbound
  - id: allow-inbound
    effect: allow
    when:
      direction: inbound
"""

USERS = {
    "clerk-b": ("clerk", ""),
    "owner-market": ("owner_clerk", MARKET),
    "operator": ("operator", ""),
}


async def start_web_federation(root: Path) -> Federation:
    """Jiangsu (the counter) and Zhejiang (the owner) with accounts for every role:
    ``clerk`` and ``supervisor`` (made by Federation), ``clerk-b``, ``owner-market``, ``operator``."""
    specs = []
    for spec in PROVINCES:
        if spec.node_id in ("jiangsu", "zhejiang"):
            bundle = root / f"{spec.node_id}.yaml"
            bundle.write_text(BUNDLE.format(node=spec.node_id))
            specs.append(spec.__class__(**{**vars(spec), "bundle": bundle}))
    fed = await Federation(root, specs).start()
    for node in fed.nodes.values():
        for username, (role, department) in USERS.items():
            await node.users.add_user(username, PASSWORD, role, department)
    return fed


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    f = await start_web_federation(tmp_path)
    try:
        yield f
    finally:
        await f.close()


class Browser:
    """A cookie-keeping client that reads CSRF tokens from the pages, as a browser would."""

    def __init__(self, fed: Federation, node: str) -> None:
        self.fed, self.node = fed, node
        # unsafe=True: the nodes listen on 127.0.0.1, and aiohttp keeps no cookies for IPs otherwise.
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    def url(self, path: str) -> str:
        return self.fed.url(self.node, path)

    async def get(self, path: str, **kw: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.session.get(self.url(path), **kw) as r:
            text = await r.text()
            found = re.search(r'name="csrf" value="([^"]+)"', text)
            if found:
                self.csrf = found.group(1)
            return r.status, text, r

    async def post(self, path: str, data: Any, **kw: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.session.post(self.url(path), data=data, **kw) as r:
            return r.status, await r.text(), r

    async def login(self, username: str, password: str = PASSWORD) -> tuple[int, str, aiohttp.ClientResponse]:
        await self.get("/web/login")
        return await self.post(
            "/web/login",
            {"csrf": self.csrf, "username": username, "password": password},
            allow_redirects=False,
        )

    async def close(self) -> None:
        await self.session.close()


def form_data(fed: Federation, service_id: str, csrf: str, id_number: str | None = None) -> aiohttp.FormData:
    body = application_body(fed.nodes["jiangsu"].index.get(service_id), random.Random(7))
    data = aiohttp.FormData()
    data.add_field("csrf", csrf)
    data.add_field("idem", f"idem-{service_id}-{id_number or 'ok'}")
    data.add_field("applicant.name", body["applicant"]["name"])
    data.add_field("applicant.id_number", id_number or body["applicant"]["id_number"])
    for name, value in body["form"].items():
        if value is True:
            data.add_field(f"form.{name}", "true")
        elif value is not False:
            data.add_field(f"form.{name}", str(value))
    defn = fed.nodes["jiangsu"].index.get(service_id)
    for i, _material in enumerate(defn.materials):
        data.add_field(
            f"file.{i}", b"%PDF-1.4 scan", filename=f"scan-{i}.pdf", content_type="application/pdf"
        )
    data.add_field("consent", "yes")
    return data


async def submit_via_pages(fed: Federation, clerk: Browser, service_id: str) -> str:
    await clerk.get(f"/web/services/{service_id}/apply")
    status, _, r = await clerk.post(
        f"/web/services/{service_id}/apply", form_data(fed, service_id, clerk.csrf), allow_redirects=False
    )
    assert status == 303, _
    return r.headers["Location"].rsplit("/", 1)[1]


async def test_login_sets_a_strict_http_only_cookie_and_needs_the_csrf_token(fed: Federation) -> None:
    b = Browser(fed, "jiangsu")
    try:
        status, _, r = await b.get("/web/services", allow_redirects=False)
        assert status == 302 and r.headers["Location"] == "/web/login"
        await b.get("/web/login")
        status, text, _ = await b.post(
            "/web/login", {"csrf": "forged", "username": "clerk", "password": PASSWORD}
        )
        assert status == 403
        status, text, _ = await b.login("clerk", "wrong-password")
        assert status == 401 and "wrong-password" not in text
        status, _, r = await b.login("clerk")
        assert status == 303 and r.headers["Location"] == "/web/services"
        port = fed.configs["jiangsu"].http_listen.rsplit(":", 1)[1]
        cookie = next(v for v in r.headers.getall("Set-Cookie") if v.startswith(f"yrd_session_{port}="))
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        status, text, r = await b.get("/web/services")
        assert status == 200 and "工业产品生产许可证" in text
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        # Logging out needs the token too, and ends the session on the server.
        old = b.session.cookie_jar.filter_cookies(yarl.URL(b.url("/")))[f"yrd_session_{port}"].value
        await b.post("/web/logout", {"csrf": b.csrf}, allow_redirects=False)
        async with (
            aiohttp.ClientSession(cookies={f"yrd_session_{port}": old}) as replay,
            replay.get(b.url("/web/services"), allow_redirects=False) as r2,
        ):
            assert r2.status == 302
    finally:
        await b.close()


async def test_form_journey_errors_at_the_field_receipt_owner_decision_and_citizen_page(
    fed: Federation,
) -> None:
    clerk, owner, citizen = Browser(fed, "jiangsu"), Browser(fed, "zhejiang"), Browser(fed, "jiangsu")
    try:
        await clerk.login("clerk")
        status, text, _ = await clerk.get("/web/services?q=industrial&owner=33")
        assert status == 200 and WORKLIST_SERVICE in text and MARKET in text and "20" in text
        _, text, _ = await clerk.get("/web/services?department=市场监督")
        assert WORKLIST_SERVICE in text and AUTO_SERVICE not in text
        status, text, _ = await clerk.get(f"/web/services/{WORKLIST_SERVICE}/apply")
        assert 'pattern="[0-9]{17}[0-9Xx]"' in text and "required" in text and 'name="consent"' in text
        # A forged CSRF token is refused before anything is stored.
        status, _, _ = await clerk.post(
            f"/web/services/{WORKLIST_SERVICE}/apply", form_data(fed, WORKLIST_SERVICE, "forged")
        )
        assert status == 403
        status, text, _ = await clerk.post(
            f"/web/services/{WORKLIST_SERVICE}/apply", form_data(fed, WORKLIST_SERVICE, clerk.csrf, WRONG_ID)
        )
        assert status == 422
        assert re.search(r'id="error-applicant.id_number">[^<]*校验', text), text
        assert WRONG_ID in text  # the clerk's input is kept for correcting
        app_id = await submit_via_pages(fed, clerk, WORKLIST_SERVICE)
        await fed.wait_status("jiangsu", app_id, {"in_review"})
        status, text, _ = await clerk.get(f"/web/applications/{app_id}")
        code = re.search(r'id="check-code">([A-Z2-7]{4}-[A-Z2-7]{4})<', text)
        assert status == 200 and code is not None
        status, text, _ = await clerk.get(f"/web/applications/{app_id}/receipt")
        assert status == 200 and "<svg" in text and code.group(1) in text and "@media print" not in text

        await owner.login("owner-market")
        status, text, _ = await owner.get("/web/owner")
        assert status == 200 and app_id[:12] in text
        status, text, _ = await owner.get(f"/web/owner/{app_id}")
        assert status == 200 and 'name="decision"' in text
        status, text, _ = await owner.post(
            f"/web/owner/{app_id}/decision", {"csrf": owner.csrf, "decision": "reject", "reason": ""}
        )
        assert status == 422 and "decision-errors" in text
        data = aiohttp.FormData()
        data.add_field("csrf", owner.csrf)
        data.add_field("decision", "approve")
        data.add_field("reason", "材料齐全")
        data.add_field("document", b"licence", filename="licence.txt", content_type="text/plain")
        status, _, _ = await owner.post(f"/web/owner/{app_id}/decision", data, allow_redirects=False)
        assert status == 303
        await fed.wait_status("jiangsu", app_id, {"completed"})
        status, text, _ = await clerk.get(f"/web/applications/{app_id}")
        assert "已办结" in text and "licence.txt" in text
        status, body, _ = await clerk.get(f"/web/applications/{app_id}/documents/0")
        assert status == 200 and body == "licence"

        await follow_as_citizen(fed, citizen, app_id, code.group(1))
    finally:
        for b in (clerk, owner, citizen):
            await b.close()


async def follow_as_citizen(fed: Federation, citizen: Browser, app_id: str, code: str) -> None:
    """No account, the id and the code: status and dates, no personal data, no reasons."""
    status, text, _ = await citizen.get(f"/track?id={app_id}&code={code}")
    assert status == 200 and "已办结" in text
    assert "材料齐全" not in text
    form = application_body(fed.nodes["jiangsu"].index.get(WORKLIST_SERVICE), random.Random(7))
    assert form["applicant"]["name"] not in text and form["applicant"]["id_number"] not in text
    status, text, _ = await citizen.get(f"/track?id={app_id}&code=AAAA-AAAA")
    assert status == 404 and "已办结" not in text


async def test_auto_decided_inbound_applications_are_visible_at_the_owner(fed: Federation) -> None:
    clerk, supervisor = Browser(fed, "jiangsu"), Browser(fed, "zhejiang")
    try:
        await clerk.login("clerk")
        app_id = await submit_via_pages(fed, clerk, AUTO_SERVICE)
        await fed.wait_status("jiangsu", app_id, {"completed"})
        await supervisor.login("supervisor")
        status, text, _ = await supervisor.get("/web/owner?status=completed")
        assert status == 200 and app_id[:12] in text and "auto" in text
    finally:
        await clerk.close()
        await supervisor.close()


async def test_counter_queue_filters_and_a_held_application_is_released_by_a_supervisor(
    fed: Federation,
) -> None:
    clerk, other, supervisor = Browser(fed, "jiangsu"), Browser(fed, "jiangsu"), Browser(fed, "jiangsu")
    try:
        await clerk.login("clerk")
        held = await submit_via_pages(fed, clerk, HELD_SERVICE)
        done = await submit_via_pages(fed, clerk, AUTO_SERVICE)
        await fed.wait_status("jiangsu", done, {"completed"})
        status, text, _ = await clerk.get("/web/queue?status=awaiting_approval")
        assert status == 200 and held[:12] in text and done[:12] not in text
        status, text, _ = await clerk.get(f"/web/queue?service={AUTO_SERVICE}")
        assert done[:12] in text and held[:12] not in text
        # Another clerk sees none of it; a clerk cannot release.
        await other.login("clerk-b")
        status, text, _ = await other.get("/web/queue")
        assert status == 200 and held[:12] not in text
        status, _, _ = await other.get(f"/web/applications/{held}")
        assert status == 404
        status, _, _ = await clerk.post(f"/web/applications/{held}/release", {"csrf": clerk.csrf})
        assert status == 403
        await supervisor.login("supervisor")
        status, text, _ = await supervisor.get("/web/queue?status=awaiting_approval")
        assert held[:12] in text and "release" in text
        status, _, _ = await supervisor.post(
            f"/web/applications/{held}/release", {"csrf": supervisor.csrf}, allow_redirects=False
        )
        assert status == 303
        await fed.wait_status("jiangsu", held, {"in_review", "delivered", "completed"})
    finally:
        for b in (clerk, other, supervisor):
            await b.close()


async def test_console_for_operators_only_without_personal_data_and_dead_letters_re_driven(
    fed: Federation,
) -> None:
    clerk, operator = Browser(fed, "jiangsu"), Browser(fed, "jiangsu")
    try:
        await clerk.login("clerk")
        app_id = await submit_via_pages(fed, clerk, WORKLIST_SERVICE)
        await fed.wait_status("jiangsu", app_id, {"in_review"})
        status, _, _ = await clerk.get("/web/console")
        assert status == 403
        node = fed.nodes["jiangsu"]

        def bury_one(s: Any) -> int:
            outbox.enqueue(
                s,
                next_hop="zhejiang",
                destination="zhejiang",
                method="Deliver",
                item_id="x",
                body=b"",
                now_ms=0,
            )
            s.flush()
            entry = s.exec(select(OutboxEntry).where(OutboxEntry.item_id == "x")).one()
            assert entry.id is not None
            outbox.bury(s, [entry.id], "peer_refused", "test", 0)
            return entry.id

        entry_id = await node.db.run(bury_one)
        await operator.login("operator")
        status, text, _ = await operator.get("/web/console")
        assert status == 200
        assert fed.nodes["jiangsu"].trust.manifest.fingerprint in text and 'data-peer="zhejiang"' in text
        assert f"redrive-{entry_id}" in text and "<svg" in text
        body = application_body(fed.nodes["jiangsu"].index.get(WORKLIST_SERVICE), random.Random(7))
        assert body["applicant"]["name"] not in text and app_id not in text
        for path in ("/web/queue", f"/web/applications/{app_id}", "/web/owner"):
            status, _, _ = await operator.get(path)
            assert status in (403, 404), path
        status, _, _ = await operator.post(
            f"/web/console/dead-letters/{entry_id}/redrive", {"csrf": operator.csrf}, allow_redirects=False
        )
        assert status == 303
        assert await node.db.run(lambda s: s.get(OutboxEntry, entry_id).state) == "pending"
        status, _, _ = await operator.post(
            f"/web/console/dead-letters/{entry_id}/redrive", {"csrf": operator.csrf}
        )
        assert status == 404
    finally:
        await clerk.close()
        await operator.close()


async def test_the_language_switch_and_the_login_pages_csrf_cookie(fed: Federation) -> None:
    b = Browser(fed, "jiangsu")
    try:
        _, text, _ = await b.get("/web/login")
        assert "登录" in text
        await b.get("/web/lang/en?next=/web/login")
        _, text, _ = await b.get("/web/login")
        assert "Log in" in text
        _, _, r = await b.get("/web/lang/en?next=//evil.example/", allow_redirects=False)
        assert r.headers["Location"] == "/web/"
    finally:
        await b.close()


async def test_an_ended_session_sends_the_page_to_the_login_with_a_notice(fed: Federation) -> None:
    b = Browser(fed, "jiangsu")
    try:
        await b.login("clerk")
        status, _, _ = await b.get("/web/queue")
        assert status == 200

        # The session ends elsewhere (a logout in another tab, or an operator ending it): the
        # node forgets it at once, cache included (node/counter/users.py).
        tokens = [c.value for c in b.session.cookie_jar if c.key.startswith("yrd_session")]
        assert len(tokens) == 1, tokens
        await fed.nodes["jiangsu"].users.logout(tokens[0])
        status, _, r = await b.get("/web/queue", allow_redirects=False)
        assert status == 302 and r.headers["Location"] == "/web/login?expired=1"
        _, text, _ = await b.get("/web/login?expired=1")
        assert "会话已过期" in text
    finally:
        await b.close()
