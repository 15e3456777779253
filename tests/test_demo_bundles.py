"""开办企业 through a real ``yrd demo`` with the shipped, signed policies: one submission at the
Anhui counter, parts at their owners in Jiangsu and Shanghai, the owner of a part SIGKILLed
mid-flight and restarted by the supervisor, a rejected part resubmitted alone.

Only what an outsider has is used: the state file (addresses and accounts), the counter HTTP
API, OS signals, and the owners' SQLite files opened read-only to count what they stored.
"""

from __future__ import annotations

import os
import random
import signal
from typing import Any

import aiohttp
import pytest

from node.models import InboundApplication
from registry.catalogue import load_catalogue_file
from simulations.local_federation import SAMPLES
from simulations.sample_applications import application_body
from tests.test_demo_federation import (  # noqa: F401 (demo is the fixture)
    Counter,
    Demo,
    demo,
    eventually,
    read_only,
    restarted,
)

pytestmark = pytest.mark.slow

BUNDLE = "js.business-startup"
JIANGSU_PARTS = {
    "licence": "js.suzhou.business-licence",
    "seal": "js.suzhou.seal-filing",
    "tax": "js.tax.new-taxpayer",
    "social": "js.social-insurance.employer-registration",
}
FILING = "sh.market.branch-filing"


def bundle_body() -> dict[str, Any]:
    _, definitions = load_catalogue_file(SAMPLES / "jiangsu.toml")
    defn = next(d for d in definitions if d.service_id == BUNDLE)
    body = application_body(defn, random.Random(12))
    body["form"]["hq_name"] = "上海示例科技有限公司"
    return body


def stored(running: Demo, node: str, service_id: str) -> list[tuple[str, str]]:
    """(id, status) of every application of ``service_id`` the node stored as its owner."""
    table = InboundApplication.__tablename__
    query = f"SELECT id, status FROM {table} WHERE service_id IN ({{ids}}) ORDER BY id"
    rows = read_only(running.data_dir / node / "node.db", query, [service_id])
    return [(str(i), str(s)) for i, s in rows]


async def parts_in(counter: Counter, app_id: str, wanted: dict[str, set[str]]) -> dict[str, Any] | None:
    view = await counter.view(app_id)
    parts = {c["name"]: c for c in view.get("components") or []}
    ok = parts and all(n in parts and parts[n]["status"] in s for n, s in wanted.items())
    return view if ok else None


async def filing_in_review(shanghai: Counter, not_id: str = "") -> dict[str, Any] | None:
    status, work = await shanghai.call("GET", "/api/v1/worklist")
    assert status == 200, work
    found = [a for a in work["applications"] if a["service_id"] == FILING and a["id"] != not_id]
    return found[0] if found else None


async def test_startup_bundle_survives_a_killed_owner_and_resumes_a_rejected_part(
    demo: Demo,  # noqa: F811 (the imported fixture)
) -> None:
    async with aiohttp.ClientSession() as http:
        anhui = await Counter(http, demo.node("anhui")).login()

        jiangsu = await Counter(http, demo.node("jiangsu")).login()

        async def knows(counter: Counter, owner: str, service_id: str) -> bool:
            status, body = await counter.call("GET", f"/api/v1/services?owner={owner}")
            return status == 200 and service_id in {s["id"] for s in body["services"]}

        # The lead refuses a bundle naming a part its catalogue does not hold yet (bundle_invalid),
        # so the catalogues must have met: the bundle at Anhui, the Shanghai part at the lead.
        await eventually("the Jiangsu catalogue at Anhui", lambda: knows(anhui, "32", BUNDLE))
        await eventually("the Shanghai catalogue at Jiangsu", lambda: knows(jiangsu, "31", FILING))
        status, created = await anhui.call(
            "POST", "/api/v1/applications", json=bundle_body(), headers={"Idempotency-Key": "startup-1"}
        )
        assert status == 201, created
        assert created["owner_node"] == "jiangsu"  # the lead department's node
        bundle_id: str = created["id"]

        # The licence is issued; the owner of the head office's filing dies while the lead
        # is routing the dependent parts to it, and the supervisor brings it back.
        await eventually(
            "the licence", lambda: parts_in(anhui, bundle_id, {"licence": {"completed"}}), seconds=50
        )
        old_pid = demo.node("shanghai")["pid"]
        os.kill(old_pid, signal.SIGKILL)
        await restarted(demo, "shanghai", old_pid)

        view = await eventually(
            "every part under way",
            lambda: parts_in(
                anhui, bundle_id, {**{n: {"completed"} for n in JIANGSU_PARTS}, "hq_filing": {"in_review"}}
            ),
        )
        assert view["status"] == "in_review"  # one status for the whole
        parts = {c["name"]: c for c in view["components"]}
        assert set(parts) == {*JIANGSU_PARTS, "hq_filing"}
        assert {parts[n]["owner_node"] for n in parts} == {"jiangsu", "shanghai"}
        assert all(c["due_at"] for c in parts.values())
        credit = parts["licence"]["results"]["credit_code"]
        assert len(credit) == 18 and view["results"]["licence.credit_code"] == credit

        shanghai = await Counter(http, demo.node("shanghai"), "supervisor").login()
        filing = await eventually("the filing in Shanghai's queue", lambda: filing_in_review(shanghai))
        assert filing["form"]["branch_credit_code"] == credit  # the licence's code, carried forward
        assert filing["origin_node"] == "jiangsu"
        status, decided = await shanghai.call(
            "POST",
            f"/api/v1/applications/{filing['id']}/decision",
            json={"decision": "reject", "reason": "总公司名称与登记不符"},
        )
        assert status == 200, decided
        view = await eventually("the bundle stopped", lambda: anhui.status_in(bundle_id, {"needs_materials"}))
        assert "hq_filing" in view["history"][-1]["reason"]

        # The counter checks a correction against the part's own form, so it needs the part
        # owner's catalogue, which it pulls on its own (a 503 catalogue_not_synced until then).
        await eventually("the Shanghai catalogue at Anhui", lambda: knows(anhui, "31", FILING))
        status, answer = await anhui.call(
            "POST",
            f"/api/v1/applications/{bundle_id}/components/hq_filing/resubmit",
            json={"form": {"company_name": "上海示例科技股份有限公司"}},
        )
        assert (status, answer.get("attempt")) == (200, 2), answer
        filing2 = await eventually(
            "the corrected filing", lambda: filing_in_review(shanghai, not_id=filing["id"])
        )
        assert filing2["form"]["branch_credit_code"] == credit
        status, decided = await shanghai.call(
            "POST", f"/api/v1/applications/{filing2['id']}/decision", json={"decision": "approve"}
        )
        assert status == 200, decided
        view = await eventually("the bundle completed", lambda: anhui.status_in(bundle_id, {"completed"}))
        assert {c["status"] for c in view["components"]} == {"completed"}

    # From the owners' databases: the bundle once at its lead, each part once at its owner,
    # the filing once per attempt; nothing done was redone across the kill and the resubmission.
    assert [s for _, s in stored(demo, "jiangsu", BUNDLE)] == ["completed"]
    for service in JIANGSU_PARTS.values():
        assert [s for _, s in stored(demo, "jiangsu", service)] == ["completed"], service
    filings = stored(demo, "shanghai", FILING)
    assert sorted(filings) == sorted([(filing["id"], "rejected"), (filing2["id"], "completed")])
