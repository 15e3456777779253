"""Applications routed between real nodes over gRPC on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlmodel import Session, select

from node.models import Application
from policies.decision_log import PolicyDecisionRow
from simulations.sample_applications import application_body
from tests.support.federation import Federation, allow_all_specs


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    f = await Federation(tmp_path, allow_all_specs(tmp_path)).start()
    try:
        yield f
    finally:
        await f.close()


def body_for(fed: Federation, service_id: str, seed: int = 1) -> dict[str, object]:
    defn = next(iter(fed.nodes.values())).index.get(service_id)
    return application_body(defn, random.Random(seed))


async def test_catalogue_union_is_served_everywhere(fed: Federation) -> None:
    status, body = await fed.call("jiangsu", "GET", "/api/v1/services?owner=33")
    assert status == 200
    ids = {s["id"] for s in body["services"]}
    assert "zj.industrial-licence" in ids
    assert all(s["owner"].startswith("33") for s in body["services"])


async def test_auto_handled_service_completes_at_the_origin(fed: Federation) -> None:
    status, created = await fed.submit("jiangsu", body_for(fed, "zj.medical.cross-region-filing"), "k1")
    assert status == 201, created
    assert created["owner_node"] == "zhejiang"
    view = await fed.wait_status("jiangsu", created["id"], {"completed"})
    statuses = [h["status"] for h in view["history"]]
    assert statuses == ["submitted", "delivered", "in_review", "approved", "completed"]
    assert view["documents"] and view["documents"][0]["name"] == "result-notice.txt"
    assert any(r["from_node"] == "zhejiang" for r in view["receipts"])


async def test_worklist_decision_reaches_the_origin(fed: Federation) -> None:
    status, created = await fed.submit("anhui", body_for(fed, "zj.industrial-licence"), "k2")
    assert status == 201, created
    await fed.wait_status("anhui", created["id"], {"in_review"})
    status, work = await fed.call("zhejiang", "GET", "/api/v1/worklist", user="supervisor")
    assert status == 200
    assert created["id"] in {a["id"] for a in work["applications"]}
    status, decided = await fed.call(
        "zhejiang",
        "POST",
        f"/api/v1/applications/{created['id']}/decision",
        json={"decision": "reject", "reason": "生产地址与营业执照不符"},
        user="supervisor",
    )
    assert status == 200, decided
    view = await fed.wait_status("anhui", created["id"], {"rejected"})
    assert view["history"][-1]["reason"] == "生产地址与营业执照不符"


AUTO_SERVICE = {
    "shanghai": "sh.medical.cross-region-filing",
    "jiangsu": "js.driving-licence.replace",
    "zhejiang": "zj.medical.cross-region-filing",
    "anhui": "ah.driving-licence.replace",
}


async def test_each_province_reaches_each_other_province(fed: Federation) -> None:
    submitted = []
    for i, origin in enumerate(AUTO_SERVICE):
        for owner, service in AUTO_SERVICE.items():
            if owner == origin:
                continue
            status, created = await fed.submit(origin, body_for(fed, service, seed=i), f"{origin}-{owner}")
            assert status == 201, created
            assert created["owner_node"] == owner
            submitted.append((origin, created["id"]))
    for origin, app_id in submitted:
        view = await fed.wait_status(origin, app_id, {"completed", "needs_materials"})
        assert view["status"] == "completed", view


async def test_same_idempotency_key_creates_one_application(fed: Federation) -> None:
    body = body_for(fed, "zj.industrial-licence")
    first = await fed.submit("shanghai", body, "same-key")
    second = await fed.submit("shanghai", body, "same-key")
    assert first[0] == 201 and second[0] == 201
    assert first[1]["id"] == second[1]["id"]
    await fed.wait_status("shanghai", first[1]["id"], {"in_review"})
    _, work = await fed.call("zhejiang", "GET", "/api/v1/worklist", user="supervisor")
    assert [a["id"] for a in work["applications"]].count(first[1]["id"]) == 1


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_racing_copies_of_one_request_store_one_application_and_answer_both(
    tmp_path: Path, request: pytest.FixtureRequest, database: str
) -> None:
    """On SQLite the copies share a group commit, and the second's INSERT finds the first's
    key in the same transaction; on PostgreSQL each has its own, and the later INSERT waits
    for the earlier's key. Either way one application is stored and every copy gets its id."""
    urls = {"jiangsu": request.getfixturevalue("new_pg_schema")()} if database == "postgresql" else {}
    specs = [s for s in allow_all_specs(tmp_path) if s.node_id in ("jiangsu", "zhejiang")]
    fed = await Federation(tmp_path, specs, database_urls=urls).start()
    try:
        body = body_for(fed, "zj.industrial-licence")
        answers = await asyncio.gather(*(fed.submit("jiangsu", body, "raced-key") for _ in range(4)))
        assert [status for status, _ in answers] == [201] * 4, answers
        assert len({created["id"] for _, created in answers}) == 1

        def stored(s: Session) -> int:
            return len(s.exec(select(Application).where(Application.idempotency_key == "raced-key")).all())

        assert await fed.nodes["jiangsu"].db.run(stored) == 1
    finally:
        await fed.close()


async def test_a_peer_down_for_a_while_drains_its_queue_when_back(fed: Federation) -> None:
    await fed.stop_node("zhejiang")
    ids = []
    for i in range(5):
        status, created = await fed.submit(
            "jiangsu", body_for(fed, "zj.medical.cross-region-filing", i), f"d{i}"
        )
        assert status == 201, created
        ids.append(created["id"])
    # Let the sender fail a few times so it is backing off when the owner returns.
    for _ in range(40):
        if fed.nodes["jiangsu"].delivery._failures.get("zhejiang", 0) >= 2:
            break
        await asyncio.sleep(0.1)
    for app_id in ids:
        _, view = await fed.call("jiangsu", "GET", f"/api/v1/applications/{app_id}")
        assert view["status"] == "submitted"
    await fed.start_node("zhejiang")
    for app_id in ids:
        await fed.wait_status("jiangsu", app_id, {"completed"})


async def test_a_policy_free_node_refuses_everything(tmp_path: Path) -> None:
    specs = [dataclasses.replace(s, bundle=None) for s in allow_all_specs(tmp_path)]
    f = await Federation(tmp_path, specs).start()
    try:
        status, problem = await f.submit("jiangsu", body_for(f, "zj.medical.cross-region-filing"), "p")
        assert status == 403
        assert problem["code"] == "no_policy_bundle"
    finally:
        await f.close()


async def test_a_counter_pushes_back_with_retry_after_while_the_outbox_to_a_peer_is_too_deep(
    tmp_path: Path,
) -> None:
    specs = allow_all_specs(tmp_path)
    fed = await Federation(tmp_path, specs, extra={"limits": {"max_outbox_depth": 2}}).start()
    try:
        await fed.stop_node("zhejiang")  # nothing to zhejiang drains while it is down
        created = []
        for i in range(2):
            status, doc = await fed.submit(
                "jiangsu", body_for(fed, "zj.medical.cross-region-filing", i), f"p{i}"
            )
            assert status == 201, doc
            created.append(doc["id"])
        assert fed.http is not None
        async with fed.http.post(
            fed.url("jiangsu", "/api/v1/applications"),
            json=body_for(fed, "zj.medical.cross-region-filing", 9),
            headers={"Authorization": f"Bearer {fed.tokens['jiangsu']}", "Idempotency-Key": "p9"},
        ) as r:
            refused = await r.json(content_type=None)
            assert r.status == 429, refused
            assert r.headers["Retry-After"] == "1"
        assert refused["code"] == "outbox_full"
        # The refused submit's allowing decision is logged all the same, once, like the others.
        outbound = await fed.nodes["jiangsu"].db.run(
            lambda s: s.exec(select(PolicyDecisionRow).where(PolicyDecisionRow.direction == "outbound")).all()
        )
        assert len(outbound) == 3 and all(d.allowed for d in outbound)
        # A retry of an accepted request is still answered, and other peers are not held back.
        status, again = await fed.submit("jiangsu", body_for(fed, "zj.medical.cross-region-filing", 0), "p0")
        assert (status, again["id"]) in {(200, created[0]), (201, created[0])}
        await fed.start_node("zhejiang")
        for app_id in created:
            await fed.wait_status("jiangsu", app_id, {"completed"})
        status, doc = await fed.submit("jiangsu", body_for(fed, "zj.medical.cross-region-filing", 9), "p9")
        assert status == 201, doc
    finally:
        await fed.close()
