"""Data sharing across an in-process federation of the four provinces, laid out as the demo
lays them out (sample catalogues, sample records, the shipped policy bundles): the done-when
of docs/sharing.md. A Shanghai clerk asks, with the citizen's consent, for the health-code
screen and gets one merged view from three provinces; without consent every holder refuses; a
conditional resource is refused until its holder grants a request, then answered with only the
granted fields, and refused again once revoked; both ends log every disclosure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlmodel import Session, select

from node.models import DataDisclosure
from simulations.local_federation import PROVINCES
from tests.support.federation import PASSWORD, Federation

PERSON = "310101199003071230"  # has records in all four provinces (registry/samples/data_records)
HEALTH_SCREEN = ["sh.health-code", "js.nucleic-acid", "zj.vaccination"]
HOUSING_FUND = "ah.housing-fund.account"
AH_FUND_CENTRE = "安徽省住房公积金管理中心"


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    f = await Federation(tmp_path, PROVINCES).start()
    await f.nodes["anhui"].users.add_user("fund-clerk", PASSWORD, "owner_clerk", department=AH_FUND_CENTRE)
    for node in f.nodes.values():
        await node.users.add_user("operator", PASSWORD, "operator")
    try:
        yield f
    finally:
        await f.close()


def consent(resources: list[str], purpose: str = "health-check", subject: str = PERSON) -> dict[str, Any]:
    return {
        "given_by": "张三",
        "subject_id": subject,
        "resources": resources,
        "purpose": purpose,
        "until": "2099-12-31T23:59:59+08:00",
    }


def query(resources: list[str], purpose: str = "health-check", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "subject": {"kind": "person", "id": PERSON},
        "purpose": purpose,
        "resources": [{"id": r} for r in resources],
    }
    body.update(extra)
    return body


def by_resource(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["resource_id"]: item for item in view["items"]}


async def ask(fed: Federation, body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    status, view = await fed.call("shanghai", "POST", "/api/v1/queries", json=body)
    assert status == 200, view
    return by_resource(view)


async def wait_request(fed: Federation, node: str, request_id: str, side: str, status: str) -> dict[str, Any]:
    user = "supervisor"
    for _ in range(400):
        code, found = await fed.call(node, "GET", "/api/v1/data-requests", user=user)
        assert code == 200, found
        for r in found[side]:
            if r["id"] == request_id and r["status"] == status:
                return dict(r)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{request_id} never {status} at {node}: {found}")


async def test_health_code_screen_merges_three_provinces_with_consent(fed: Federation) -> None:
    items = await ask(fed, query(HEALTH_SCREEN, consent=consent(HEALTH_SCREEN)))
    assert {r: i["holder_node"] for r, i in items.items()} == {
        "sh.health-code": "shanghai",
        "js.nucleic-acid": "jiangsu",
        "zj.vaccination": "zhejiang",
    }
    assert all(i["outcome"] == "answered" for i in items.values()), items
    assert items["sh.health-code"]["fields"] == {"status": "绿码", "assessed_on": "2026-11-30"}
    assert items["js.nucleic-acid"]["fields"]["result"] == "阴性"
    assert items["js.nucleic-acid"]["department"] == "江苏省卫生健康统计信息中心"
    assert items["zj.vaccination"]["fields"]["doses"] == 3
    assert items["zj.vaccination"]["updated_at"] == "2026-06-02T03:00:00Z"
    assert all(i["basis"] == "consent" for i in items.values())

    # Without consent every holder refuses, each for itself.
    refused = await ask(fed, query(HEALTH_SCREEN))
    assert {r: (i["outcome"], i["reason_code"]) for r, i in refused.items()} == {
        r: ("refused", "consent_missing") for r in HEALTH_SCREEN
    }
    assert all(i["fields"] is None for i in refused.values())

    # A consent for another purpose, or that leaves a resource out, covers nothing it does not name.
    narrow = await ask(fed, query(HEALTH_SCREEN, consent=consent(["sh.health-code", "js.nucleic-acid"])))
    assert narrow["zj.vaccination"]["reason_code"] == "consent_scope"
    assert narrow["js.nucleic-acid"]["outcome"] == "answered"
    other = await ask(fed, query(HEALTH_SCREEN, consent=consent(HEALTH_SCREEN, purpose="service-delivery")))
    assert {i["reason_code"] for i in other.values()} == {"consent_purpose"}


async def test_conditional_resource_needs_a_grant_and_only_its_fields_leave(fed: Federation) -> None:
    fund_query = query(
        [HOUSING_FUND], purpose="service-delivery", consent=consent([HOUSING_FUND], "service-delivery")
    )
    before = await ask(fed, fund_query)
    assert (before[HOUSING_FUND]["outcome"], before[HOUSING_FUND]["reason_code"]) == ("refused", "no_grant")

    status, sent = await fed.call(
        "shanghai",
        "POST",
        "/api/v1/data-requests",
        json={
            "resource_id": HOUSING_FUND,
            "fields": ["account_status", "monthly_deposit", "balance"],
            "purpose": "service-delivery",
            "legal_basis": "《住房公积金管理条例》第三十条；长三角住房公积金一体化合作协议",
            "until": (datetime.now(UTC) + timedelta(days=365)).isoformat(),
        },
    )
    assert status == 201, sent
    assert (sent["status"], sent["holder_node"], sent["department"]) == ("pending", "anhui", "counter")
    received = await wait_request(fed, "anhui", sent["id"], "received", "pending")
    assert received["asker_node"] == "shanghai"

    # The fund centre's clerk grants two of the three fields; the answer carries only those.
    status, decided = await fed.call(
        "anhui",
        "POST",
        f"/api/v1/data-requests/{sent['id']}/decision",
        json={"decision": "approve", "fields": ["account_status", "balance"]},
        user="fund-clerk",
    )
    assert status == 200, decided
    assert decided["status"] == "approved"
    await wait_request(fed, "shanghai", sent["id"], "sent", "approved")
    after = (await ask(fed, fund_query))[HOUSING_FUND]
    assert after["outcome"] == "answered", after
    assert after["basis"] == f"consent+grant:{sent['id']}"
    # Anhui's policy masks the balance even under the grant (obligation mask: balance).
    assert after["fields"] == {"account_status": "正常", "balance": "138**0.00"}

    status, revoked = await fed.call(
        "anhui", "POST", f"/api/v1/grants/{sent['id']}/revoke", json={"note": "协议到期"}, user="fund-clerk"
    )
    assert (status, revoked["status"]) == (200, "revoked")
    again = (await ask(fed, fund_query))[HOUSING_FUND]
    assert (again["outcome"], again["reason_code"]) == ("refused", "no_grant")
    await wait_request(fed, "shanghai", sent["id"], "sent", "revoked")


async def test_disclosures_are_logged_at_both_ends_and_metered(fed: Federation) -> None:
    status, view = await fed.call(
        "shanghai", "POST", "/api/v1/queries", json=query(HEALTH_SCREEN, consent=consent(HEALTH_SCREEN))
    )
    assert status == 200, view
    qid = view["query_id"]
    path = f"/api/v1/disclosures?subject_id={PERSON}"
    status, held = await fed.call("jiangsu", "GET", path + "&side=holder")
    assert status == 200, held
    (record,) = [d for d in held["disclosures"] if d["query_id"] == qid]
    assert (record["asker_node"], record["asker_department"], record["asked_by"]) == (
        "shanghai",
        "counter",
        "clerk",
    )
    assert (record["resource_id"], record["basis"], record["outcome"]) == (
        "js.nucleic-acid",
        "consent",
        "answered",
    )
    assert record["fields"] == ["result", "sampled_on", "institution"]
    status, mirror = await fed.call("shanghai", "GET", path + "&side=asker")
    assert status == 200
    assert {d["resource_id"] for d in mirror["disclosures"] if d["query_id"] == qid} == set(HEALTH_SCREEN)
    # Another person's log holds none of it; a clerk cannot read everyone's.
    status, other = await fed.call("jiangsu", "GET", "/api/v1/disclosures?subject_id=320502198506123456")
    assert (status, other["disclosures"]) == (200, [])
    status, problem = await fed.call("jiangsu", "GET", "/api/v1/disclosures")
    assert (status, problem["code"]) == (403, "subject_required")
    status, problem = await fed.call("jiangsu", "GET", "/api/v1/disclosures?subject_id=310101199003071231")
    assert (status, problem["field"]) == (400, "subject_id")

    status, meter = await fed.call("jiangsu", "GET", "/api/v1/data-meter", user="operator")
    assert status == 200, meter
    assert [(r["resource_id"], r["asker_node"], r["outcome"], r["calls"]) for r in meter["rows"]] == [
        ("js.nucleic-acid", "shanghai", "answered", 1)
    ]
    status, _ = await fed.call("jiangsu", "GET", "/api/v1/data-meter")
    assert status == 403


async def test_a_holder_that_does_not_answer_is_missing_within_the_deadline(fed: Federation) -> None:
    class Stuck:
        """A holder whose database never answers: its query hangs past any deadline."""

        async def run(self, fn: Any) -> Any:
            await asyncio.Event().wait()

    fed.nodes["zhejiang"].backend.data_holder.db = Stuck()  # type: ignore[assignment]
    # The healthy holders answer within the same deadline: 500 ms was too short for them
    # while the suite's other worker loaded the machine.
    items = await ask(fed, query(HEALTH_SCREEN, consent=consent(HEALTH_SCREEN), deadline_ms=3000))
    assert (items["zj.vaccination"]["outcome"], items["zj.vaccination"]["reason_code"]) == (
        "missing",
        "deadline",
    )
    assert items["js.nucleic-acid"]["outcome"] == "answered"

    await fed.stop_node("zhejiang")
    items = await ask(fed, query(HEALTH_SCREEN, consent=consent(HEALTH_SCREEN), deadline_ms=2000))
    assert items["zj.vaccination"]["outcome"] == "missing"
    assert items["sh.health-code"]["outcome"] == "answered"


async def test_a_holder_call_whose_grpc_deadline_fires_first_is_missing_by_the_deadline(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The call carries the query's deadline and so does the wait for it: under load gRPC's
    timer fired first, and the holder that did not answer in time was called unreachable."""
    asker = fed.nodes["shanghai"].backend.data_asker

    async def expired(*_args: object) -> None:
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata(), "Deadline Exceeded"
        )

    monkeypatch.setattr(asker, "_call_in_slot", expired)
    items = await ask(fed, query(HEALTH_SCREEN, consent=consent(HEALTH_SCREEN), deadline_ms=500))
    assert (items["zj.vaccination"]["outcome"], items["zj.vaccination"]["reason_code"]) == (
        "missing",
        "deadline",
    )


async def test_the_asker_records_the_asking_before_any_holder_hears_the_name(fed: Federation) -> None:
    """Accountability survives a crash: the asker's mirror is on record, as interrupted, while
    the holders are being asked, and is settled with each item's outcome when the query ends."""

    class Stuck:
        async def run(self, fn: Any) -> Any:
            await asyncio.Event().wait()

    fed.nodes["zhejiang"].backend.data_holder.db = Stuck()  # type: ignore[assignment]
    asker = fed.nodes["shanghai"].backend.data_asker
    body = query(HEALTH_SCREEN, consent=consent(HEALTH_SCREEN), deadline_ms=3000)
    in_flight = asyncio.create_task(fed.call("shanghai", "POST", "/api/v1/queries", json=body))

    def mirror(s: Session) -> list[tuple[str, str, str]]:
        rows = s.exec(select(DataDisclosure).where(DataDisclosure.side == "asker")).all()
        return sorted((r.resource_id, r.outcome, r.reason_code) for r in rows)

    for _ in range(600):  # until the asker has written its mirror (bounded, never timed)
        if await asker.db.run(mirror):
            break
        await asyncio.sleep(0.01)
    # Jiangsu and Shanghai answered at once, Zhejiang hangs: a crash now would leave this.
    assert await asker.db.run(mirror) == [(r, "missing", "interrupted") for r in sorted(HEALTH_SCREEN)]
    status, view = await in_flight
    assert status == 200, view
    assert await asker.db.run(mirror) == [
        ("js.nucleic-acid", "answered", ""),
        ("sh.health-code", "answered", ""),
        ("zj.vaccination", "missing", "deadline"),
    ]
