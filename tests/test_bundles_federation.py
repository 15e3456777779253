"""开办企业 as one submission at the Anhui counter, routed by its lead (Suzhou market
regulation, on the Jiangsu node) to owners in Jiangsu and Shanghai, in a real in-process
federation of the four provinces."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from yrd.catalogue.v1.catalogue_pb2 import ServiceDefinition
from yrd.peer.v1 import peer_pb2

from core.errors import NotFound
from core.ids import new_id
from node.cases.bundles.resubmission import RESUBMIT_PURPOSE
from node.models import BundlePart, InboundApplication
from node.trust.sealing import seal
from simulations.sample_applications import application_body
from tests.support.federation import Federation, allow_all_specs

BUNDLE = "js.business-startup"
PARTS = {"licence", "seal", "tax", "social", "hq_filing"}


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    f = await Federation(tmp_path, allow_all_specs(tmp_path)).start()
    for node in f.nodes.values():
        # Bundles move only when something stirred their runner: a change that gives a bundle
        # work without stirring it would stall these tests instead of waiting for a full look.
        node.bundles.full_look_s = 3600
    try:
        yield f
    finally:
        await f.close()


def bundle_body(fed: Federation) -> dict[str, Any]:
    defn = fed.nodes["anhui"].index.get(BUNDLE)
    body = application_body(defn, random.Random(12))
    body["form"]["hq_name"] = "上海示例科技有限公司"
    return body


async def wait_parts(
    fed: Federation, node: str, app_id: str, wanted: dict[str, set[str]], seconds: float = 30.0
) -> dict[str, Any]:
    """Poll the counter until each named part is in one of its wanted statuses."""
    view: dict[str, Any] = {}
    for _ in range(int(seconds / 0.05)):
        status, view = await fed.call(node, "GET", f"/api/v1/applications/{app_id}")
        assert status == 200, view
        parts = {c["name"]: c for c in view.get("components") or []}
        if parts and all(parts[n]["status"] in s for n, s in wanted.items()):
            return view
        await asyncio.sleep(0.05)
    raise AssertionError(f"parts stayed {[(c['name'], c['status']) for c in view.get('components') or []]}")


async def inbound(fed: Federation, node: str, service_id: str) -> list[InboundApplication]:
    return await fed.nodes[node].db.run(
        lambda s: list(s.exec(select(InboundApplication).where(InboundApplication.service_id == service_id)))
    )


async def test_one_submission_at_anhui_routes_parts_across_provinces_and_resumes_a_failed_one(
    fed: Federation,
) -> None:
    status, created = await fed.submit("anhui", bundle_body(fed), "startup-1")
    assert status == 201, created
    assert created["owner_node"] == "jiangsu"  # the lead department's node
    bundle_id = created["id"]

    # Shanghai (head office filing) is down while the Jiangsu parts run.
    await fed.stop_node("shanghai")
    view = await wait_parts(
        fed,
        "anhui",
        bundle_id,
        {"licence": {"completed"}, "seal": {"completed"}, "tax": {"completed"}, "social": {"completed"}},
    )
    parts = {c["name"]: c for c in view["components"]}
    assert set(parts) == PARTS
    assert view["status"] == "in_review"  # one status for the whole
    assert {parts[n]["owner_node"] for n in PARTS} == {"jiangsu", "shanghai"}
    assert parts["licence"]["department"] == "苏州市市场监督管理局"
    assert parts["hq_filing"]["status"] in {"submitted", "delivered"}
    credit = parts["licence"]["results"]["credit_code"]
    assert len(credit) == 18 and credit.startswith("91320500")
    assert view["results"]["licence.credit_code"] == credit
    assert view["bundle_due_at"] >= max(c["due_at"] for c in view["components"])

    # The owner node comes back; the filing arrives once, carrying the licence's credit code.
    await fed.start_node("shanghai")
    view = await wait_parts(fed, "anhui", bundle_id, {"hq_filing": {"in_review"}})
    _, work = await fed.call("shanghai", "GET", "/api/v1/worklist", user="supervisor")
    (filing,) = [a for a in work["applications"] if a["service_id"] == "sh.market.branch-filing"]
    assert filing["form"]["branch_credit_code"] == credit
    assert filing["origin_node"] == "jiangsu"

    await reject_then_resubmit(fed, bundle_id, filing["id"], credit)
    view = await fed.wait_status("anhui", bundle_id, {"completed"})
    assert {c["status"] for c in view["components"]} == {"completed"}
    assert view["results"]["licence.credit_code"] == credit
    assert len(view["documents"]) >= len(PARTS)

    # Nothing done was redone: one application per Jiangsu part, two attempts of the filing.
    for service in (
        "js.suzhou.business-licence",
        "js.suzhou.seal-filing",
        "js.tax.new-taxpayer",
        "js.social-insurance.employer-registration",
    ):
        assert len(await inbound(fed, "jiangsu", service)) == 1, service
    filings = await inbound(fed, "shanghai", "sh.market.branch-filing")
    assert sorted(f.status for f in filings) == ["completed", "rejected"]


async def reject_then_resubmit(fed: Federation, bundle_id: str, filing_id: str, credit: str) -> None:
    """Shanghai rejects the filing, the Anhui clerk corrects that part alone, Shanghai approves."""
    # Shanghai rejects it: only that part stops, and the counter says which and why.
    status, decided = await fed.call(
        "shanghai",
        "POST",
        f"/api/v1/applications/{filing_id}/decision",
        json={"decision": "reject", "reason": "总公司名称与登记不符"},
        user="supervisor",
    )
    assert status == 200, decided
    view = await fed.wait_status("anhui", bundle_id, {"needs_materials"})
    assert "hq_filing" in view["history"][-1]["reason"]
    assert "总公司名称与登记不符" in view["history"][-1]["reason"]
    parts = {c["name"]: c for c in view["components"]}
    assert parts["hq_filing"]["status"] == "rejected"
    assert {parts[n]["status"] for n in PARTS - {"hq_filing"}} == {"completed"}

    # A part that did not fail cannot be resubmitted; a field the part lacks is refused.
    status, problem = await fed.call(
        "anhui", "POST", f"/api/v1/applications/{bundle_id}/components/tax/resubmit", json={"form": {}}
    )
    assert (status, problem["code"]) == (409, "component_not_failed"), problem
    status, problem = await fed.call(
        "anhui",
        "POST",
        f"/api/v1/applications/{bundle_id}/components/hq_filing/resubmit",
        json={"form": {"nonsense": "x"}},
    )
    assert (status, problem["field"]) == (400, "form.nonsense"), problem

    # Until the counter has pulled the part owner's catalogue it cannot check the correction:
    # it says so, and a retry goes through (a 404 on a field the clerk never sent, before).
    index = fed.nodes["anhui"].bundles.catalogue
    known = index.get

    def not_pulled(service_id: str) -> ServiceDefinition:
        if service_id == "sh.market.branch-filing":
            raise NotFound("not pulled", code="unknown_service", field="service_id")
        return known(service_id)

    index.get = not_pulled  # type: ignore[method-assign]
    try:
        status, problem = await fed.call(
            "anhui",
            "POST",
            f"/api/v1/applications/{bundle_id}/components/hq_filing/resubmit",
            json={"form": {"company_name": "上海示例科技股份有限公司"}},
        )
    finally:
        index.get = known  # type: ignore[method-assign]
    assert (status, problem["code"]) == (503, "catalogue_not_synced"), problem

    # The clerk corrects that part only.
    status, answer = await fed.call(
        "anhui",
        "POST",
        f"/api/v1/applications/{bundle_id}/components/hq_filing/resubmit",
        json={"form": {"company_name": "上海示例科技股份有限公司"}},
    )
    assert status == 200, answer
    assert answer["attempt"] == 2
    view = await wait_parts(fed, "anhui", bundle_id, {"hq_filing": {"in_review"}})
    _, work = await fed.call("shanghai", "GET", "/api/v1/worklist", user="supervisor")
    (filing2,) = [a for a in work["applications"] if a["service_id"] == "sh.market.branch-filing"]
    assert filing2["id"] != filing_id
    assert filing2["form"]["company_name"] == "上海示例科技股份有限公司"
    assert filing2["form"]["branch_credit_code"] == credit
    status, decided = await fed.call(
        "shanghai",
        "POST",
        f"/api/v1/applications/{filing2['id']}/decision",
        json={"decision": "approve"},
        user="supervisor",
    )
    assert status == 200, decided


async def test_the_lead_restarting_mid_bundle_loses_and_duplicates_nothing(fed: Federation) -> None:
    """The runner resumes from the database: parts made before the restart are not made again."""
    body = application_body(fed.nodes["zhejiang"].index.get("sh.enterprise-deregistration"), random.Random(3))
    status, created = await fed.submit("zhejiang", body, "close-1")
    assert status == 201, created
    await wait_parts(fed, "zhejiang", created["id"], {"tax": {"completed"}, "social": {"completed"}})
    await fed.stop_node("shanghai")
    await fed.start_node("shanghai")
    view = await fed.wait_status("zhejiang", created["id"], {"completed"})
    parts = {c["name"]: c for c in view["components"]}
    assert parts["licence"]["status"] == "completed"
    (dereg,) = await inbound(fed, "shanghai", "sh.market.deregistration")
    shanghai = fed.nodes["shanghai"]
    seen = await shanghai.db.run(lambda s: shanghai.backend.owner.view(s, dereg.id))
    assert seen["form"]["tax_clearance_number"] == parts["tax"]["results"]["tax_clearance_number"]
    for service in ("sh.tax.deregistration", "sh.social-insurance.employer-deregistration"):
        assert len(await inbound(fed, "shanghai", service)) == 1


async def test_a_department_gives_an_approval_its_results_checked_against_the_catalogue(
    fed: Federation,
) -> None:
    """A worklist approval carries the department's own values; undeclared ones are refused."""
    body = application_body(fed.nodes["anhui"].index.get("ah.hefei.real-estate.transfer"), random.Random(5))
    status, created = await fed.submit("jiangsu", body, "estate-1")
    assert status == 201, created
    await fed.wait_status("jiangsu", created["id"], {"in_review"})
    path = f"/api/v1/applications/{created['id']}/decision"
    status, problem = await fed.call(
        "anhui", "POST", path, json={"decision": "approve", "results": {"nonsense": "1"}}, user="supervisor"
    )
    assert (status, problem["code"], problem["field"]) == (400, "invalid_result", "results.nonsense"), problem
    number = "皖(2026)合肥市不动产权第0012345号"
    status, decided = await fed.call(
        "anhui",
        "POST",
        path,
        json={"decision": "approve", "results": {"real_estate_certificate_number": number}},
        user="supervisor",
    )
    assert status == 200, decided
    view = await fed.wait_status("jiangsu", created["id"], {"completed"})
    assert view["results"] == {"real_estate_certificate_number": number}


BROKEN = """
[[services]]
id = "js.broken-startup"
name = "开办企业一件事（缺失事项）"
name_en = "Opening a business, naming a matter nobody publishes"
owner = "320500"
department = "苏州市市场监督管理局"
time_limit_days = 10
version = 1
handler = "bundle"
[[services.form]]
name = "company_name"
label = "企业名称"
type = "string"
required = true
max_length = 100
[[services.materials]]
name = "法定代表人身份证明"
required = true
[[services.components]]
name = "seal"
service = "js.suzhou.seal-filing"
map = { company_name = "form.company_name" }
[[services.components]]
name = "ghost"
service = "sh.no-such-matter"
after = ["seal"]
"""


async def test_the_lead_refuses_a_bundle_the_union_catalogue_cannot_route(tmp_path: Path) -> None:
    """The loader cannot see another member's matters; the lead checks against the union."""
    specs = allow_all_specs(tmp_path)
    jiangsu = next(s for s in specs if s.node_id == "jiangsu")
    catalogue = tmp_path / "jiangsu-broken.toml"
    catalogue.write_text(jiangsu.catalogue.read_text(encoding="utf-8") + BROKEN, encoding="utf-8")
    specs = [dataclasses.replace(s, catalogue=catalogue) if s.node_id == "jiangsu" else s for s in specs]
    fed = await Federation(tmp_path / "fed", specs).start()
    try:
        body = application_body(fed.nodes["anhui"].index.get("js.broken-startup"), random.Random(1))
        status, created = await fed.submit("anhui", body, "broken-1")
        assert status == 201, created
        view = await fed.wait_status("anhui", created["id"], {"rejected"})
        reason = view["history"][-1]["reason"]
        assert "bundle_invalid" in reason and "sh.no-such-matter" in reason
        assert await inbound(fed, "jiangsu", "js.suzhou.seal-filing") == []  # no part was made
    finally:
        await fed.close()


async def test_the_lead_checks_every_resubmission_a_member_sends(fed: Federation) -> None:
    """Zero trust: a resubmission is refused, with its code, unless it names this sender's
    bundle, an existing part that failed, and the next attempt."""
    status, created = await fed.submit("anhui", bundle_body(fed), "startup-2")
    assert status == 201, created
    bundle_id = created["id"]
    await wait_parts(fed, "anhui", bundle_id, {"licence": {"completed"}, "hq_filing": {"in_review"}})
    jiangsu = fed.nodes["jiangsu"]
    version = jiangsu.index.get(BUNDLE).version

    def transfer(
        doc: object, origin: str = "anhui", sealed: bytes | None = None
    ) -> peer_pb2.ApplicationTransfer:
        now = fed.clock.now_ms()
        payload = peer_pb2.ApplicationPayload(form_json=json.dumps(doc).encode())
        return peer_pb2.ApplicationTransfer(
            application_id=new_id(now),
            origin_node=origin,
            service_id=BUNDLE,
            service_version=version,
            submitted_at_ms=now,
            purpose=RESUBMIT_PURPOSE,
            consent=True,
            sealed_payload=sealed
            or seal(jiangsu.trust.public_key_of("jiangsu", now), payload.SerializeToString()),
        )

    async def answer(t: peer_pb2.ApplicationTransfer, sender: str = "anhui") -> tuple[int, str]:
        r = await jiangsu.db.run(lambda s: jiangsu.bundles.accept(s, sender, t, fed.clock.now_ms()))
        return r.outcome, r.reason_code

    rejected = peer_pb2.ReceiptOutcome.RECEIPT_OUTCOME_REJECTED
    part = {"bundle": bundle_id, "component": "hq_filing", "attempt": 2, "form": {}}
    cases: list[tuple[peer_pb2.ApplicationTransfer, str, tuple[int, str]]] = [
        (transfer(part), "zhejiang", (rejected, "origin_mismatch")),
        (transfer(part, origin="zhejiang"), "zhejiang", (rejected, "unknown_bundle")),
        (transfer({**part, "bundle": "nope"}), "anhui", (rejected, "unknown_bundle")),
        (transfer({"bundle": bundle_id}), "anhui", (rejected, "invalid_resubmission")),
        (transfer(part, sealed=b"not sealed"), "anhui", (rejected, "sealed_payload_invalid")),
        (transfer({**part, "component": "ghost"}), "anhui", (rejected, "unknown_component")),
        (transfer({**part, "attempt": 5}), "anhui", (rejected, "stale_attempt")),
        (
            transfer({**part, "attempt": 1}),
            "anhui",
            (peer_pb2.ReceiptOutcome.RECEIPT_OUTCOME_DUPLICATE, "duplicate"),
        ),
        (transfer(part), "anhui", (rejected, "component_not_failed")),  # still in review
    ]
    for t, sender, expected in cases:
        assert await answer(t, sender) == expected, expected
    parts = await jiangsu.db.run(
        lambda s: {
            p.name: p.attempt for p in s.exec(select(BundlePart).where(BundlePart.bundle_id == bundle_id))
        }
    )
    assert set(parts.values()) == {1}  # nothing was started again


async def test_an_idle_lead_does_not_look_for_bundles_every_poll(fed: Federation) -> None:
    """The runner looks in the database when a unit of its process gave a bundle work (or a
    bundle still waits), not five times a second on a node with nothing to move."""
    lead = fed.nodes["jiangsu"]  # the lead department's node runs the bundle
    looks = 0
    run_once = lead.bundles.run_once

    async def counted() -> int:
        nonlocal looks
        looks += 1
        return await run_once()

    lead.bundles.run_once = counted  # type: ignore[method-assign]
    await asyncio.sleep(10 * lead.bundles.poll_interval_s)
    assert looks == 0
    status, created = await fed.submit("anhui", bundle_body(fed), "idle-then-one")
    assert status == 201, created
    # The licence completing moves the runner to start the parts that wait for it.
    done = {"completed"}
    parts = {n: done for n in ("licence", "seal", "tax", "social")}
    await wait_parts(fed, "anhui", str(created["id"]), parts)
    assert looks > 0


async def test_a_stirred_lead_moves_its_bundle_at_once_whatever_its_poll_interval(fed: Federation) -> None:
    """Each step of a bundle (its run started, a part completed) is taken up as soon as its
    transaction commits, not at the next poll: a city node polling every 2 s gave its
    bundles 4.5-9 s where a province's took half a second. With an hour between polls, the
    bundle still runs to its end."""
    lead = fed.nodes["jiangsu"]
    lead.bundles.poll_interval_s = 3600
    await asyncio.sleep(0.2)  # the runner's current wait, at the fixture's interval, runs out
    status, created = await fed.submit("anhui", bundle_body(fed), "stirred-not-polled")
    assert status == 201, created
    done = {"completed"}
    parts = {n: done for n in ("licence", "seal", "tax", "social")}
    await wait_parts(fed, "anhui", str(created["id"]), parts)
