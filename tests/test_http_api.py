"""The HTTP front on a real loopback server, with a fake core behind the backend protocol."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher
from prometheus_client import REGISTRY

from core.clock import FakeClock
from core.db import Database
from core.errors import NotFound, PolicyDenied, Unprocessable
from node.cases.requests import Attachment, Document, Principal, SubmitRequest
from node.counter.contract import CounterLimits, request_digest
from node.counter.users import SESSION_TTL_MS, UserStore
from node.http import build_http_app

PASSWORD = "correct horse battery"
LIMITS = CounterLimits(max_body_bytes=64 * 1024, max_attachments=3, max_attachment_bytes=1024)
SERVICE = {
    "id": "js-001",
    "name": "生育登记",
    "name_en": "Birth registration",
    "owner": "320000",
    "department": "卫健委",
    "time_limit_days": 5,
    "form_schema": {"type": "object"},
    "materials": [{"name": "出生医学证明", "required": True}],
}
APPLICATION = {
    "id": "app-1",
    "service_id": "js-001",
    "owner_node": "jiangsu",
    "status": "submitted",
    "submitted_at": "2026-01-01T00:00:00Z",
    "overdue": False,
    "history": [{"status": "submitted", "sequence": 0, "reason": "", "at": "2026-01-01T00:00:00Z"}],
    "receipts": [],
    "documents": [],
}


class FakeBackend:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.health_answer: tuple[bool, dict[str, Any]] | Exception = (True, {"database": "ok"})
        self.accepted: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        self.replays: list[tuple[str, str]] = []

    async def replay(self, principal: Principal, idempotency_key: str, digest: str) -> dict[str, Any] | None:
        self.replays.append((principal.username, idempotency_key))
        found = self.accepted.get((principal.username, idempotency_key))
        if found is not None and found[0] != digest:
            raise Unprocessable("key reused", code="idempotency_key_reused")
        return None if found is None else found[1]

    async def list_services(self, q: str | None, owner: str | None) -> list[dict[str, Any]]:
        self.calls.append(("list_services", (q, owner)))
        return [SERVICE]

    async def submit(
        self, principal: Principal, idempotency_key: str, request: SubmitRequest
    ) -> dict[str, Any]:
        self.calls.append(("submit", (principal, idempotency_key, request)))
        # As the real one: a retry is answered by the submit itself (node/cases/origin.py).
        found = self.accepted.get((principal.username, idempotency_key))
        if found is not None:
            if found[0] != request.digest:
                raise Unprocessable("key reused", code="idempotency_key_reused")
            return found[1]
        if request.service_id == "denied":
            raise PolicyDenied("applications for this service may not leave", rule_id="no-export")
        if request.service_id == "bug":
            raise RuntimeError("secret internal state")
        if request.service_id == "quota":
            raise PolicyDenied("quota exhausted", code="quota")
        result = {"id": "app-1", "owner_node": "jiangsu", "status": "submitted"}
        self.accepted[(principal.username, idempotency_key)] = (request.digest, result)
        return result

    async def release(self, principal: Principal, app_id: str) -> dict[str, Any]:
        self.calls.append(("release", (principal, app_id)))
        return {"id": app_id, "owner_node": "jiangsu", "status": "submitted"}

    async def get_application(self, principal: Principal, app_id: str) -> dict[str, Any]:
        if app_id != "app-1":
            raise NotFound("no such application", field="id")
        return APPLICATION

    async def resubmit_component(
        self,
        principal: Principal,
        app_id: str,
        component: str,
        form: dict[str, Any],
        attachments: tuple[Attachment, ...],
    ) -> dict[str, Any]:
        self.calls.append(("resubmit_component", (principal, app_id, component, form, attachments)))
        if app_id != "app-1":
            raise NotFound("no such application", field="id")
        return {"id": app_id, "component": component, "attempt": 2, "status": "resubmitted"}

    async def worklist(self, principal: Principal) -> list[dict[str, Any]]:
        self.calls.append(("worklist", principal))
        return [APPLICATION]

    async def decide(
        self,
        principal: Principal,
        app_id: str,
        decision: str,
        reason: str,
        documents: list[Document],
        results: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        self.calls.append(("decide", (principal, app_id, decision, reason, documents)))
        return {"id": app_id, "status": "approved"}

    async def health(self) -> tuple[bool, dict[str, Any]]:
        if isinstance(self.health_answer, Exception):
            raise self.health_answer
        return self.health_answer

    async def policy_decisions(
        self, principal: Principal, limit: int, since_ms: int | None
    ) -> list[dict[str, Any]]:
        self.calls.append(("policy_decisions", (limit, since_ms)))
        return [{"decision_id": "d-1", "effect": "permit"}]

    # Clues (node/http/clue_routes.py): the front's side only; the real steps are in test_clues_*.
    async def submit_clue(self, principal: Principal, idempotency_key: str, request: Any) -> dict[str, Any]:
        self.calls.append(("submit_clue", (principal, idempotency_key, request)))
        return {"id": "clue-1", "owner_node": "jiangsu", "status": "submitted"}

    async def get_clue(self, principal: Principal, clue_id: str) -> dict[str, Any]:
        raise NotFound("no such clue", code="unknown_clue", field="id")

    async def list_clues(self, principal: Principal) -> list[dict[str, Any]]:
        return []

    async def act_on_clue(
        self, principal: Principal, clue_id: str, action: str, **kwargs: Any
    ) -> dict[str, Any]:
        self.calls.append(("act_on_clue", (clue_id, action, kwargs)))
        raise NotFound("no such clue", code="unknown_clue", field="id")

    # Data sharing (node/http/sharing_routes.py): the front's side only; the real work is in
    # tests/test_sharing_*.
    async def list_data_resources(self, principal: Principal, *args: Any) -> list[dict[str, Any]]:
        return []

    async def query_data(self, principal: Principal, request: Any) -> dict[str, Any]:
        self.calls.append(("query_data", request))
        return {
            "query_id": "q-1",
            "subject_kind": request.subject_kind,
            "purpose": request.purpose,
            "asked_at": "2026-01-05T02:00:00Z",
            "complete": True,
            "items": [],
        }

    async def request_data(
        self, principal: Principal, request: Any, key: str | None = None
    ) -> dict[str, Any]:
        raise NotFound("no such resource", code="unknown_resource", field="resource_id")

    async def list_data_requests(self, principal: Principal) -> dict[str, Any]:
        return {"sent": [], "received": []}

    async def decide_data_request(
        self, principal: Principal, request_id: str, **kwargs: Any
    ) -> dict[str, Any]:
        raise NotFound("no such request", code="unknown_request")

    async def revoke_grant(self, principal: Principal, grant_id: str, note: str) -> dict[str, Any]:
        raise NotFound("no such request", code="unknown_request")

    async def disclosures(self, principal: Principal, *args: Any) -> list[dict[str, Any]]:
        return []

    async def data_meter(self, principal: Principal, *args: Any) -> dict[str, Any]:
        return {"rows": [], "total": 0}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def users(tmp_path: Path, clock: FakeClock) -> Iterator[UserStore]:
    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    db.create_all()
    yield UserStore(db, clock, PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    db.close()


@pytest.fixture
async def client(
    backend: FakeBackend, users: UserStore, clock: FakeClock
) -> AsyncIterator[TestClient[Any, Any]]:
    await users.add_user("li.clerk", PASSWORD, "clerk")
    await users.add_user("wang.ops", PASSWORD, "operator")
    app = build_http_app(backend, users, clock, LIMITS)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


async def login(client: TestClient[Any, Any], username: str = "li.clerk") -> dict[str, str]:
    resp = await client.post("/api/v1/session", json={"username": username, "password": PASSWORD})
    assert resp.status == 200
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


async def problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status
    assert resp.content_type == "application/problem+json"
    body: dict[str, Any] = await resp.json()
    assert body["status"] == status
    return body


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def submission(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "service_id": "js-001",
        "applicant": {"name": "张三", "id_number": "11010519491231002X"},
        "form": {"child_name": "张小三"},
        "attachments": [
            {
                "material": "出生医学证明",
                "filename": "birth.pdf",
                "content_type": "application/pdf",
                "data": b64(b"%PDF"),
            }
        ],
        "consent": True,
    }
    body.update(overrides)
    return body


# --- sessions -------------------------------------------------------------------------------


async def test_login_returns_token_expiry_and_role(client: TestClient[Any, Any], clock: FakeClock) -> None:
    resp = await client.post("/api/v1/session", json={"username": "wang.ops", "password": PASSWORD})
    body = await resp.json()
    assert resp.status == 200
    assert body["role"] == "operator"
    assert body["expires_at"] == "2026-01-01T12:00:00Z"
    assert len(body["token"]) >= 40


async def test_wrong_password_and_unknown_user_get_the_same_401(client: TestClient[Any, Any]) -> None:
    bodies = []
    for creds in (
        {"username": "li.clerk", "password": "not the password"},
        {"username": "ghost", "password": PASSWORD},
    ):
        resp = await client.post("/api/v1/session", json=creds)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        bodies.append(await problem(resp, 401))
    assert bodies[0] == bodies[1]
    assert bodies[0]["type"] == "urn:yrd:problem:unauthenticated"


async def test_login_needs_both_credentials(client: TestClient[Any, Any]) -> None:
    body = await problem(await client.post("/api/v1/session", json={"username": "li.clerk"}), 400)
    assert body["field"] == "password"


async def test_api_needs_a_valid_unexpired_token(client: TestClient[Any, Any], clock: FakeClock) -> None:
    assert (await problem(await client.get("/api/v1/services"), 401))["code"] == "missing_token"
    bad = {"Authorization": "Bearer nope"}
    assert (await problem(await client.get("/api/v1/services", headers=bad), 401))["code"] == "invalid_token"
    basic = {"Authorization": "Basic bGk6cHc="}
    assert (await problem(await client.get("/api/v1/services", headers=basic), 401))[
        "code"
    ] == "invalid_token"
    auth = await login(client)
    clock.advance(SESSION_TTL_MS / 1000)
    assert (await problem(await client.get("/api/v1/services", headers=auth), 401))["code"] == "token_expired"


async def test_logout_revokes_the_token(client: TestClient[Any, Any]) -> None:
    auth = await login(client)
    assert (await client.delete("/api/v1/session", headers=auth)).status == 204
    await problem(await client.get("/api/v1/worklist", headers=auth), 401)


# --- counter routes -------------------------------------------------------------------------


async def test_services_pass_search_terms(client: TestClient[Any, Any], backend: FakeBackend) -> None:
    auth = await login(client)
    resp = await client.get("/api/v1/services", params={"q": "生育", "owner": "32"}, headers=auth)
    assert await resp.json() == {"services": [SERVICE]}
    await client.get("/api/v1/services", params={"q": " "}, headers=auth)
    assert [args for name, args in backend.calls] == [("生育", "32"), (None, None)]


async def test_submit_hands_the_parsed_request_to_the_backend(
    client: TestClient[Any, Any], backend: FakeBackend
) -> None:
    auth = await login(client)
    resp = await client.post(
        "/api/v1/applications", json=submission(), headers={**auth, "Idempotency-Key": "k-1"}
    )
    assert resp.status == 201
    assert await resp.json() == {"id": "app-1", "owner_node": "jiangsu", "status": "submitted"}
    assert resp.headers["Location"] == "/api/v1/applications/app-1"
    ((name, (principal, key, request)),) = backend.calls
    assert (name, principal, key) == ("submit", Principal("li.clerk", "clerk"), "k-1")
    assert request.applicant_id_number == "11010519491231002X"
    assert request.attachments[0].data == b"%PDF"
    assert request.purpose == "service-delivery"


async def test_submit_requires_an_idempotency_key(client: TestClient[Any, Any], backend: FakeBackend) -> None:
    auth = await login(client)
    body = await problem(await client.post("/api/v1/applications", json=submission(), headers=auth), 400)
    assert body["field"] == "Idempotency-Key"
    headers = {**auth, "Idempotency-Key": "x" * 129}
    body = await problem(await client.post("/api/v1/applications", json=submission(), headers=headers), 400)
    assert body["field"] == "Idempotency-Key"
    assert backend.calls == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (submission(applicant={"name": "张三"}), "applicant.id_number"),
        (submission(form=["not", "an", "object"]), "form"),
        (submission(consent="yes"), "consent"),
        (
            submission(
                attachments=[submission()["attachments"][0], {**submission()["attachments"][0], "data": "%%"}]
            ),
            "attachments[1].data",
        ),
        (submission(attachments=submission()["attachments"] * 4), "attachments"),
        (
            submission(attachments=[{**submission()["attachments"][0], "data": b64(b"x" * 1025)}]),
            "attachments[0].data",
        ),
        (submission(consnet=True), "consnet"),
    ],
)
async def test_submit_shape_errors_name_the_field(
    client: TestClient[Any, Any], backend: FakeBackend, body: dict[str, Any], field: str
) -> None:
    headers = {**await login(client), "Idempotency-Key": "k-1"}
    problem_body = await problem(await client.post("/api/v1/applications", json=body, headers=headers), 400)
    assert problem_body["type"] == "urn:yrd:problem:invalid_input"
    assert problem_body["field"] == field
    assert backend.calls == []


async def test_malformed_json_is_a_400_on_body(client: TestClient[Any, Any]) -> None:
    headers = {**await login(client), "Idempotency-Key": "k-1", "Content-Type": "application/json"}
    body = await problem(
        await client.post("/api/v1/applications", data=b'{"service_id": ', headers=headers), 400
    )
    assert (body["field"], body["code"]) == ("body", "malformed_json")
    body = await problem(await client.post("/api/v1/applications", json=[1, 2], headers=headers), 400)
    assert body["field"] == "body"


async def test_too_large_body_is_a_413_problem(client: TestClient[Any, Any], backend: FakeBackend) -> None:
    headers = {**await login(client), "Idempotency-Key": "k-1"}
    big = submission(form={"notes": "x" * LIMITS.max_body_bytes})
    body = await problem(await client.post("/api/v1/applications", json=big, headers=headers), 413)
    assert (body["type"], body["field"]) == ("urn:yrd:problem:body_too_large", "body")
    assert backend.calls == []


async def test_policy_denial_is_a_403_naming_the_rule(client: TestClient[Any, Any]) -> None:
    headers = {**await login(client), "Idempotency-Key": "k-1"}
    resp = await client.post("/api/v1/applications", json=submission(service_id="denied"), headers=headers)
    body = await problem(resp, 403)
    assert (body["type"], body["rule_id"]) == ("urn:yrd:problem:policy_denied", "no-export")


async def test_a_bug_is_a_bare_500_and_is_logged(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    headers = {**await login(client), "Idempotency-Key": "k-1"}
    with caplog.at_level(logging.ERROR, logger="node.http.problems"):
        resp = await client.post("/api/v1/applications", json=submission(service_id="bug"), headers=headers)
        body = await problem(resp, 500)
    assert body == {"type": "urn:yrd:problem:internal", "title": "internal error", "status": 500}
    assert "secret" not in await resp.text()
    assert any(r.exc_info and "secret internal state" in str(r.exc_info[1]) for r in caplog.records)


async def test_get_application_and_not_found(client: TestClient[Any, Any]) -> None:
    auth = await login(client)
    resp = await client.get("/api/v1/applications/app-1", headers=auth)
    assert (resp.status, await resp.json()) == (200, APPLICATION)
    body = await problem(await client.get("/api/v1/applications/app-2", headers=auth), 404)
    assert body["type"] == "urn:yrd:problem:not_found"


async def test_worklist_and_decision(client: TestClient[Any, Any], backend: FakeBackend) -> None:
    auth = await login(client)
    assert await (await client.get("/api/v1/worklist", headers=auth)).json() == {
        "applications": [APPLICATION]
    }
    doc = {"name": "证书", "content_type": "application/pdf", "data": b64(b"cert")}
    resp = await client.post(
        "/api/v1/applications/app-1/decision", json={"decision": "approve", "documents": [doc]}, headers=auth
    )
    assert (resp.status, await resp.json()) == (200, {"id": "app-1", "status": "approved"})
    _, (principal, app_id, decision, reason, documents) = backend.calls[-1]
    assert (principal.username, app_id, decision, reason) == ("li.clerk", "app-1", "approve", "")
    assert documents == [Document("证书", "application/pdf", b"cert")]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"decision": "reject"}, "reason"),
        ({"decision": "need_materials", "reason": "  "}, "reason"),
        ({"decision": "maybe", "reason": "?"}, "decision"),
        (
            {"decision": "approve", "documents": [{"name": "a", "content_type": "text/plain"}]},
            "documents[0].data",
        ),
    ],
)
async def test_decision_shape_errors_name_the_field(
    client: TestClient[Any, Any], body: dict[str, Any], field: str
) -> None:
    auth = await login(client)
    resp = await client.post("/api/v1/applications/app-1/decision", json=body, headers=auth)
    assert (await problem(resp, 400))["field"] == field


# --- operator routes ------------------------------------------------------------------------


async def test_policy_decisions_query(client: TestClient[Any, Any], backend: FakeBackend) -> None:
    # Who may read the log is the backend's to decide (tests/test_roles.py).
    ops = await login(client, "wang.ops")
    resp = await client.get("/api/v1/policy/decisions", params={"limit": "5", "since": "1000"}, headers=ops)
    assert await resp.json() == {"decisions": [{"decision_id": "d-1", "effect": "permit"}]}
    await client.get("/api/v1/policy/decisions", headers=ops)
    assert [args for name, args in backend.calls] == [(5, 1000), (100, None)]

    for params in ({"limit": "0"}, {"limit": "ten"}, {"since": "-1"}):
        resp = await client.get("/api/v1/policy/decisions", params=params, headers=ops)
        assert (await problem(resp, 400))["field"] == next(iter(params))


@pytest.mark.parametrize(
    ("answer", "status", "label"),
    [
        ((True, {"database": "ok"}), 200, "ok"),
        ((False, {"database": "down"}), 503, "fail"),
        (RuntimeError("db exploded"), 503, "fail"),
    ],
)
async def test_healthz_fails_closed(
    client: TestClient[Any, Any], backend: FakeBackend, answer: Any, status: int, label: str
) -> None:
    backend.health_answer = answer
    resp = await client.get("/healthz")
    assert resp.status == status
    assert (await resp.json())["status"] == label


async def test_requests_are_counted_by_route_template(client: TestClient[Any, Any]) -> None:
    def count(route: str, method: str, status: str) -> float:
        labels = {"route": route, "method": method, "status": status}
        return REGISTRY.get_sample_value("yrd_http_requests_total", labels) or 0.0

    auth = await login(client)
    before = count("/api/v1/applications/{id}", "GET", "404"), count("<unmatched>", "GET", "404")
    await client.get("/api/v1/applications/app-9", headers=auth)
    await client.get("/no/such/page")
    after = count("/api/v1/applications/{id}", "GET", "404"), count("<unmatched>", "GET", "404")
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)

    text = await (await client.get("/metrics")).text()
    assert 'yrd_http_request_duration_seconds_count{route="/api/v1/applications/{id}"}' in text
    assert "app-9" not in text


# --- aiohttp's own errors -------------------------------------------------------------------


async def test_unknown_route_and_wrong_method_are_problems(client: TestClient[Any, Any]) -> None:
    body = await problem(await client.get("/no/such/page"), 404)
    assert body["type"] == "urn:yrd:problem:not_found"
    resp = await client.put("/api/v1/services", headers=await login(client))
    body = await problem(resp, 405)
    assert body["type"] == "urn:yrd:problem:method_not_allowed"
    assert "GET" in resp.headers["Allow"]


async def test_openapi_document_is_public(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/v1/openapi.json")
    assert resp.status == 200
    assert (await resp.json())["openapi"].startswith("3.1")


# --- bad input is a 4xx, never a 500 (issue 8) ---------------------------------------------


def _raw(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


_SURROGATE = "\udc80"
_ATTACHMENT = submission()["attachments"][0]


@pytest.mark.parametrize(
    ("path", "raw", "status", "code", "field"),
    [
        (
            "/api/v1/applications",
            _raw(submission(attachments=[{**_ATTACHMENT, "data": "QUJD\u00e9"}])),
            400,
            "bad_base64",
            "attachments[0].data",
        ),
        (
            "/api/v1/applications/app-1/decision",
            _raw(
                {"decision": "approve", "documents": [{"name": "n", "content_type": "a/b", "data": "\u00e9"}]}
            ),
            400,
            "bad_base64",
            "documents[0].data",
        ),
        ("/api/v1/applications", _raw(submission(form={"notes": _SURROGATE})), 400, "bad_text", "form.notes"),
        ("/api/v1/applications", _raw(submission(purpose=_SURROGATE)), 400, "bad_text", "purpose"),
        (
            "/api/v1/applications",
            _raw(submission(attachments=[{**_ATTACHMENT, "filename": _SURROGATE}])),
            400,
            "bad_text",
            "attachments[0].filename",
        ),
        (
            "/api/v1/applications/app-1/decision",
            _raw({"decision": "reject", "reason": _SURROGATE}),
            400,
            "bad_text",
            "reason",
        ),
        (
            "/api/v1/applications/app-1/decision",
            _raw(
                {
                    "decision": "approve",
                    "documents": [{"name": _SURROGATE, "content_type": "a/b", "data": ""}],
                }
            ),
            400,
            "bad_text",
            "documents[0].name",
        ),
        ("/api/v1/applications", b'{"consent": false, "consent": true}', 400, "duplicate_key", "body"),
        (
            "/api/v1/applications",
            b'{"form": ' + b"[" * 40 + b"]" * 40 + b"}",
            400,
            "too_deep",
            None,
        ),
    ],
)
async def test_bad_text_and_bytes_are_400s_naming_the_field(
    client: TestClient[Any, Any],
    backend: FakeBackend,
    path: str,
    raw: bytes,
    status: int,
    code: str,
    field: str | None,
) -> None:
    headers = {**await login(client), "Idempotency-Key": "k-1", "Content-Type": "application/json"}
    body = await problem(await client.post(path, data=raw, headers=headers), status)
    assert body["code"] == code
    if field is not None:
        assert body["field"] == field
    assert [name for name, _ in backend.calls if name in ("submit", "decide")] == []


@pytest.mark.parametrize(
    ("key", "value", "code"),
    [
        ("filename", "../../etc/passwd", "bad_filename"),
        ("filename", "a\\b.pdf", "bad_filename"),
        ("filename", "a\x00.pdf", "bad_text"),
        ("filename", "a\r\nX-Evil: 1", "bad_text"),
        ("content_type", "../../\x00;;", "bad_content_type"),
        ("content_type", "text/plain; charset=utf-8\r\n", "bad_content_type"),
        ("content_type", "pdf", "bad_content_type"),
    ],
)
async def test_attachment_names_and_media_types_are_checked(
    client: TestClient[Any, Any], key: str, value: str, code: str
) -> None:
    headers = {**await login(client), "Idempotency-Key": "k-1"}
    doc = submission(attachments=[{**_ATTACHMENT, key: value}])
    body = await problem(await client.post("/api/v1/applications", json=doc, headers=headers), 400)
    assert (body["code"], body["field"]) == (code, f"attachments[0].{key}")


async def test_a_body_that_is_not_json_is_a_415(client: TestClient[Any, Any], backend: FakeBackend) -> None:
    headers = {**await login(client), "Idempotency-Key": "k-1", "Content-Type": "text/plain"}
    resp = await client.post("/api/v1/applications", data=json.dumps(submission()), headers=headers)
    assert (await problem(resp, 415))["code"] == "unsupported_media_type"
    assert backend.calls == []


async def test_error_details_echo_at_most_a_clipped_id(client: TestClient[Any, Any]) -> None:
    headers = {**await login(client), "Idempotency-Key": "k-1"}
    long_key = "k" * 5000
    resp = await client.post("/api/v1/applications", json=submission(**{long_key: 1}), headers=headers)
    body = await problem(resp, 400)
    assert body["code"] == "unknown_field"
    assert len(body["detail"]) < 200 and len(body["field"]) <= 80


async def test_an_over_long_url_is_a_4xx_without_a_traceback(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        resp = await client.get("/api/v1/services?q=" + "x" * 20_000)
    assert 400 <= resp.status < 500
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


# --- idempotency (issue 8) ------------------------------------------------------------------


async def test_a_retry_is_answered_from_the_stored_result_even_if_validation_refuses_it(
    client: TestClient[Any, Any], backend: FakeBackend
) -> None:
    headers = {**await login(client), "Idempotency-Key": "k-1"}
    first = await client.post("/api/v1/applications", json=submission(), headers=headers)
    assert first.status == 201
    # The same body again: the stored answer, from the submit itself, without a look-up
    # of its own before it (one database transaction per submit).
    again = await client.post("/api/v1/applications", json=submission(), headers=headers)
    assert (again.status, await again.json()) == (201, await first.json())
    assert backend.replays == []
    # Accepted once under rules since tightened (here: a filename the contract now refuses):
    # the retry still gets its stored answer, not a 400 that would make a counter resubmit.
    old = submission(attachments=[{**_ATTACHMENT, "filename": "../old.pdf"}])
    digest = request_digest(json.loads(json.dumps(old)))
    backend.accepted[("li.clerk", "k-old")] = (digest, APPLICATION)
    resp = await client.post(
        "/api/v1/applications", json=old, headers={**headers, "Idempotency-Key": "k-old"}
    )
    assert (resp.status, await resp.json()) == (201, APPLICATION)
    assert backend.replays == [("li.clerk", "k-old")]


async def test_a_key_reused_for_another_request_is_a_422(client: TestClient[Any, Any]) -> None:
    headers = {**await login(client), "Idempotency-Key": "k-1"}
    assert (await client.post("/api/v1/applications", json=submission(), headers=headers)).status == 201
    other = submission(service_id="js-002")
    body = await problem(await client.post("/api/v1/applications", json=other, headers=headers), 422)
    assert body["code"] == "idempotency_key_reused"
