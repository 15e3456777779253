"""Grants over time (docs/sharing.md "Requests and grants"), with an injected clock moved by
the test: a request filed while its holder is down arrives once it is back (through the
outbox, across a restart of the asker too); a grant answers only its purpose and fields and
ends at its term; a consent ends at its own; who may file, decide and revoke."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from simulations.local_federation import PROVINCES
from tests.support.federation import PASSWORD, Federation
from tests.test_clues_federation import SteppedClock

PERSON = "310101199003071230"
SOCIAL = "js.social-insurance.contributions"
JS_HRSS = "江苏省人力资源和社会保障厅"
HOUR_MS = 3_600_000


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    specs = [s for s in PROVINCES if s.node_id in ("shanghai", "jiangsu")]
    f = await Federation(tmp_path, specs, clock=SteppedClock()).start()
    await f.nodes["jiangsu"].users.add_user("hrss", PASSWORD, "owner_clerk", department=JS_HRSS)
    await f.nodes["jiangsu"].users.add_user("other-dept", PASSWORD, "owner_clerk", department="江苏省民政厅")
    await f.nodes["shanghai"].users.add_user("operator", PASSWORD, "operator")
    try:
        yield f
    finally:
        await f.close()


def iso_in(fed: Federation, ms: int) -> str:
    return (datetime.fromtimestamp(fed.clock.now_ms() / 1000, UTC) + timedelta(milliseconds=ms)).isoformat()


def request_body(fed: Federation, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resource_id": SOCIAL,
        "fields": ["insurance_type", "months_paid", "employer"],
        "purpose": "service-delivery",
        "legal_basis": "《社会保险法》第七十三条；长三角社保一体化协议",
        "until": iso_in(fed, 30 * 24 * HOUR_MS),
    }
    body.update(over)
    return body


def social_query(
    fed: Federation, consent_ms: int = 24 * HOUR_MS, purpose: str = "service-delivery"
) -> dict[str, Any]:
    return {
        "subject": {"kind": "person", "id": PERSON},
        "purpose": purpose,
        "resources": [{"id": SOCIAL}],
        "consent": {
            "given_by": "张三",
            "subject_id": PERSON,
            "resources": [SOCIAL],
            "purpose": purpose,
            "until": iso_in(fed, consent_ms),
        },
    }


async def social(fed: Federation, body: dict[str, Any]) -> dict[str, Any]:
    status, view = await fed.call("shanghai", "POST", "/api/v1/queries", json=body)
    assert status == 200, view
    item: dict[str, Any] = view["items"][0]
    return item


async def wait_for(fed: Federation, node: str, side: str, request_id: str, status: str) -> None:
    for _ in range(600):
        code, found = await fed.call(node, "GET", "/api/v1/data-requests", user="supervisor")
        assert code == 200, found
        if any(r["id"] == request_id and r["status"] == status for r in found[side]):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{request_id} never {status} at {node}")


async def test_a_request_waits_out_a_down_holder_and_a_restart(fed: Federation) -> None:
    await fed.stop_node("jiangsu")
    status, sent = await fed.call("shanghai", "POST", "/api/v1/data-requests", json=request_body(fed))
    assert (status, sent["status"]) == (201, "pending"), sent
    await fed.stop_node("shanghai")
    await fed.start_node("shanghai")
    await fed.start_node("jiangsu")
    await wait_for(fed, "jiangsu", "received", sent["id"], "pending")


async def test_a_grant_answers_its_purpose_and_fields_until_its_term(fed: Federation) -> None:
    status, sent = await fed.call("shanghai", "POST", "/api/v1/data-requests", json=request_body(fed))
    assert status == 201, sent
    await wait_for(fed, "jiangsu", "received", sent["id"], "pending")
    path = f"/api/v1/data-requests/{sent['id']}/decision"
    # Only the holding department (or a supervisor) decides; another department sees no such request.
    status, problem = await fed.call("jiangsu", "POST", path, json={"decision": "approve"}, user="other-dept")
    assert (status, problem["code"]) == (404, "unknown_request")
    status, problem = await fed.call(
        "jiangsu", "POST", path, json={"decision": "approve", "fields": ["salary"]}, user="hrss"
    )
    assert (status, problem["code"]) == (400, "fields_not_asked")
    term = {"decision": "approve", "fields": ["months_paid"], "until": iso_in(fed, 2 * HOUR_MS)}
    status, decided = await fed.call("jiangsu", "POST", path, json=term, user="hrss")
    assert (status, decided["granted_fields"]) == (200, ["months_paid"]), decided
    status, problem = await fed.call("jiangsu", "POST", path, json={"decision": "refuse"}, user="hrss")
    assert (status, problem["code"]) == (409, "already_decided")
    await wait_for(fed, "shanghai", "sent", sent["id"], "approved")

    item = await social(fed, social_query(fed))
    assert (item["outcome"], item["fields"]) == ("answered", {"months_paid": 86}), item
    other_purpose = await social(fed, social_query(fed, purpose="health-check"))
    assert other_purpose["reason_code"] == "grant_purpose"
    only_employer = social_query(fed)
    only_employer["resources"] = [{"id": SOCIAL, "fields": ["employer"]}]
    assert (await social(fed, only_employer))["reason_code"] == "fields_not_granted"

    fed.clock.advance(2 * 3600 + 1)  # type: ignore[attr-defined]
    assert (await social(fed, social_query(fed)))["reason_code"] == "no_grant"


async def test_a_consent_ends_at_its_term(fed: Federation) -> None:
    body = {
        "subject": {"kind": "person", "id": PERSON},
        "purpose": "health-check",
        "resources": [{"id": "js.nucleic-acid"}],
        "consent": {
            "given_by": "张三",
            "subject_id": PERSON,
            "resources": ["js.nucleic-acid"],
            "purpose": "health-check",
            "until": iso_in(fed, HOUR_MS),
        },
    }
    assert (await social(fed, body))["outcome"] == "answered"
    fed.clock.advance(3601)  # type: ignore[attr-defined]
    assert (await social(fed, body))["reason_code"] == "consent_expired"


async def test_who_may_do_what(fed: Federation) -> None:
    status, problem = await fed.call(
        "shanghai", "POST", "/api/v1/queries", json=social_query(fed), user="operator"
    )
    assert (status, problem["code"]) == (403, "role_required")
    status, problem = await fed.call(
        "shanghai", "POST", "/api/v1/data-requests", json=request_body(fed, department="上海市民政局")
    )
    assert (status, problem["code"]) == (403, "department_not_yours")
    status, sent = await fed.call(
        "shanghai",
        "POST",
        "/api/v1/data-requests",
        json=request_body(fed, department="上海市民政局"),
        user="supervisor",
    )
    assert (status, sent["department"]) == (201, "上海市民政局")
    status, problem = await fed.call(
        "shanghai", "POST", "/api/v1/data-requests", json=request_body(fed, resource_id="js.nucleic-acid")
    )
    assert (status, problem["code"]) == (422, "not_conditional")
    status, problem = await fed.call(
        "shanghai", "POST", f"/api/v1/grants/{sent['id']}/revoke", json={}, user="supervisor"
    )
    assert (status, problem["code"]) == (404, "unknown_request")
    status, found = await fed.call(
        "shanghai", "GET", "/api/v1/data-resources?sharing=conditional", user="operator"
    )
    assert status == 200
    assert {r["id"] for r in found["resources"]} == {SOCIAL}


async def test_the_askers_policy_keeps_a_subject_from_leaving(fed: Federation) -> None:
    body = social_query(fed, purpose="marketing")
    body["resources"] = [{"id": "js.nucleic-acid"}]
    body["consent"]["resources"] = ["js.nucleic-acid"]
    item = await social(fed, body)
    assert (item["outcome"], item["reason_code"], item["holder_node"]) == (
        "refused",
        "default_deny",
        "jiangsu",
    )
    status, meter = await fed.call("jiangsu", "GET", "/api/v1/data-meter", user="supervisor")
    assert (status, meter["total"]) == (200, 0)  # nothing reached the holder
    status, decisions = await fed.call("shanghai", "GET", "/api/v1/policy/decisions", user="supervisor")
    assert status == 200, decisions
    logged = [d for d in decisions["decisions"] if d["service_id"] == "data:js.nucleic-acid"]
    assert [(d["direction"], d["code"]) for d in logged] == [("outbound", "default_deny")], decisions


async def test_a_retried_request_is_the_same_request(fed: Federation) -> None:
    body = request_body(fed)
    key = {"Idempotency-Key": "req-0001"}
    first = await fed.call("shanghai", "POST", "/api/v1/data-requests", json=body, headers=key)
    again = await fed.call("shanghai", "POST", "/api/v1/data-requests", json=body, headers=key)
    assert first[0] == again[0] == 201
    assert first[1]["id"] == again[1]["id"]
    body["fields"] = ["months_paid"]
    status, problem = await fed.call("shanghai", "POST", "/api/v1/data-requests", json=body, headers=key)
    assert (status, problem["code"]) == (422, "idempotency_key_reused")
    status, found = await fed.call("shanghai", "GET", "/api/v1/data-requests")
    assert [r["id"] for r in found["sent"]] == [first[1]["id"]]


async def test_a_department_of_the_holders_own_node_needs_a_grant_too(fed: Federation) -> None:
    """Jiangsu's own counter asks Jiangsu's conditional resource: no network, the same steps."""
    query = social_query(fed)
    status, view = await fed.call("jiangsu", "POST", "/api/v1/queries", json=query)
    assert (status, view["items"][0]["reason_code"]) == (200, "no_grant"), view
    status, sent = await fed.call("jiangsu", "POST", "/api/v1/data-requests", json=request_body(fed))
    assert (status, sent["holder_node"], sent["status"]) == (201, "jiangsu", "pending"), sent
    status, decided = await fed.call(
        "jiangsu",
        "POST",
        f"/api/v1/data-requests/{sent['id']}/decision",
        json={"decision": "approve", "fields": ["insurance_type"]},
        user="hrss",
    )
    assert status == 200, decided
    status, found = await fed.call("jiangsu", "GET", "/api/v1/data-requests")
    (mine,) = [r for r in found["sent"] if r["id"] == sent["id"]]
    assert (mine["status"], mine["granted_fields"]) == ("approved", ["insurance_type"])
    status, view = await fed.call("jiangsu", "POST", "/api/v1/queries", json=query)
    item = view["items"][0]
    assert (item["outcome"], item["fields"]) == ("answered", {"insurance_type": "城镇职工基本养老保险"}), item
