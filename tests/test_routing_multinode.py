"""Applications routed between real nodes over gRPC on 127.0.0.1."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

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
    status, work = await fed.call("zhejiang", "GET", "/api/v1/worklist")
    assert status == 200
    assert created["id"] in {a["id"] for a in work["applications"]}
    status, decided = await fed.call(
        "zhejiang",
        "POST",
        f"/api/v1/applications/{created['id']}/decision",
        json={"decision": "reject", "reason": "生产地址与营业执照不符"},
    )
    assert status == 200, decided
    view = await fed.wait_status("anhui", created["id"], {"rejected"})
    assert view["history"][-1]["reason"] == "生产地址与营业执照不符"
