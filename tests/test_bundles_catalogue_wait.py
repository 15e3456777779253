"""A lead that has not pulled a part owner's catalogue yet waits for it (saying so in the
bundle's status) instead of refusing the bundle for good; it refuses only once the wait is
over or the catalogues it holds are complete and still lack the part."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, delete

from core.db import Database
from node.cases.bundles import starting
from node.models import PeerCatalogue
from tests.support.federation import Federation, allow_all_specs
from tests.test_bundles_federation import bundle_body, wait_parts

WAITING = "waiting for the catalogues of shanghai"


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    """The four provinces, then the lead (Jiangsu) restarted without Shanghai's catalogue
    while Shanghai is down: a lead that never reached the owner of the head office's filing."""
    f = await Federation(tmp_path, allow_all_specs(tmp_path)).start()
    try:
        await f.stop_node("shanghai")
        await f.stop_node("jiangsu")
        db = Database(f.configs["jiangsu"].database_url)
        db.transact(lambda s: s.exec(delete(PeerCatalogue).where(col(PeerCatalogue.node_id) == "shanghai")))
        db.close()
        await f.start_node("jiangsu")
        assert f.nodes["jiangsu"].sync.unsynced() == ["shanghai"]
        yield f
    finally:
        await f.close()


async def history_with(fed: Federation, app_id: str, text: str, seconds: float = 30.0) -> dict[str, Any]:
    view: dict[str, Any] = {}
    for _ in range(int(seconds / 0.05)):
        status, view = await fed.call("anhui", "GET", f"/api/v1/applications/{app_id}")
        assert status == 200, view
        if any(text in (h.get("reason") or "") for h in view["history"]):
            return view
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {text!r} in {[h.get('reason') for h in view.get('history', [])]}")


async def test_the_lead_waits_for_a_missing_catalogue_and_then_runs_the_bundle(fed: Federation) -> None:
    status, created = await fed.submit("anhui", bundle_body(fed), "startup-wait")
    assert status == 201, created
    bundle_id = created["id"]
    view = await history_with(fed, bundle_id, WAITING)
    assert view["status"] == "in_review" and not view.get("components")
    assert "sh.market.branch-filing" in view["history"][-1]["reason"]

    await fed.start_node("shanghai")
    view = await wait_parts(
        fed,
        "anhui",
        bundle_id,
        {
            "licence": {"completed"},
            "hq_filing": {"waiting", "blocked", "submitted", "delivered", "in_review"},
        },
    )
    assert {c["name"] for c in view["components"]} == {"licence", "seal", "tax", "social", "hq_filing"}
    assert not any("bundle_invalid" in (h.get("reason") or "") for h in view["history"])


async def test_the_lead_refuses_once_the_wait_is_over(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(starting, "CATALOGUE_WAIT_MS", 0)
    status, created = await fed.submit("anhui", bundle_body(fed), "startup-late")
    assert status == 201, created
    view = await fed.wait_status("anhui", created["id"], {"rejected"})
    reason = view["history"][-1]["reason"]
    assert reason.startswith("bundle_invalid: ") and "sh.market.branch-filing" in reason
    assert "the catalogues of shanghai still not pulled" in reason
