"""Routing by longest jurisdiction prefix and through a relay, on real nodes."""

from __future__ import annotations

import random
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import tomli_w
from sqlmodel import col, select

from node.models import AuditRecord, OutboxEntry
from simulations.local_federation import PROVINCES, SAMPLES, NodeSpec
from simulations.sample_applications import application_body
from tests.support.federation import Federation, allow_all_specs


def city_catalogue(tmp: Path, node_id: str, province_file: str, owner: str) -> Path:
    """The province's sample services owned by one city, published by that city's node."""
    doc = tomllib.loads((SAMPLES / province_file).read_text())
    doc = {"node_id": node_id, "services": [s for s in doc["services"] if s["owner"] == owner]}
    path = tmp / f"{node_id}.toml"
    path.write_text(tomli_w.dumps(doc))
    return path


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    cities = [
        NodeSpec(
            "suzhou",
            "苏州 Suzhou",
            "320500",
            ("3205",),
            city_catalogue(tmp_path, "suzhou", "jiangsu.toml", "320500"),
            None,
        ),
        NodeSpec(
            "hefei",
            "合肥 Hefei",
            "340100",
            ("3401",),
            city_catalogue(tmp_path, "hefei", "anhui.toml", "340100"),
            None,
            relay="anhui",
        ),
    ]
    f = await Federation(tmp_path, allow_all_specs(tmp_path, [*PROVINCES, *cities])).start()
    await f.sync_catalogues()  # the relay's union carries Hefei's entries on the second round
    try:
        yield f
    finally:
        await f.close()


def body_for(fed: Federation, service_id: str) -> dict[str, object]:
    return application_body(fed.nodes["shanghai"].index.get(service_id), random.Random(7))


async def test_a_city_owned_service_goes_to_the_city_node(fed: Federation) -> None:
    status, created = await fed.submit("zhejiang", body_for(fed, "js.suzhou.employment-registration"), "c1")
    assert status == 201, created
    assert created["owner_node"] == "suzhou"
    await fed.wait_status("zhejiang", created["id"], {"in_review"})
    _, work = await fed.call("suzhou", "GET", "/api/v1/worklist", user="supervisor")
    assert created["id"] in {a["id"] for a in work["applications"]}


async def test_a_province_service_still_goes_to_the_province(fed: Federation) -> None:
    status, created = await fed.submit("zhejiang", body_for(fed, "js.driving-licence.replace"), "c2")
    assert status == 201, created
    assert created["owner_node"] == "jiangsu"


async def test_a_relayed_member_is_reached_through_its_relay(fed: Federation) -> None:
    """The application goes through the relay, and its automatic decision comes back through
    it as one run of four changes (docs/protocol.md 10.2), which the relay carries unread."""
    status, created = await fed.submit("jiangsu", body_for(fed, "ah.hefei.social-card.apply"), "r1")
    assert status == 201, created
    assert created["owner_node"] == "hefei"
    view = await fed.wait_status("jiangsu", created["id"], {"completed"})
    assert [r["reason_code"] for r in view["receipts"]] == ["relayed"]
    assert view["receipts"][0]["from_node"] == "anhui"
    relay_log = await fed.nodes["anhui"].db.run(lambda s: list(s.exec(select(AuditRecord)).all()))
    assert any(
        r.peer == "jiangsu" and r.method.endswith("/Deliver") and r.direction == "in" for r in relay_log
    )
    assert any(
        r.peer == "hefei" and r.method.endswith("/Deliver") and r.direction == "out" for r in relay_log
    )
    assert [(e["sequence"], e["status"]) for e in view["history"]] == [
        (0, "submitted"),
        (1, "delivered"),
        (2, "in_review"),
        (3, "approved"),
        (4, "completed"),
    ]
    sent = await fed.nodes["hefei"].db.run(
        lambda s: list(
            s.exec(select(OutboxEntry.item_id).where(col(OutboxEntry.method).endswith("/NotifyStatus"))).all()
        )
    )
    assert sent == [f"{created['id']}#1-4"]
