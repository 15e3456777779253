"""The console's facts and charts, with the injected clock: the 30-day key warning, the
charts' points, and the gauges read back from the database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from core.clock import FakeClock
from node.cases.requests import Principal
from node.web.sampler import KEEP, Sampler, svg_chart
from tests.support.federation import Federation
from tests.test_web_pages import start_web_federation

DAY_MS = 86_400_000
OPERATOR = Principal("operator", "operator")


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    f = await start_web_federation(tmp_path)
    try:
        yield f
    finally:
        await f.close()


async def test_a_key_is_flagged_30_days_before_it_expires_and_not_before(fed: Federation) -> None:
    backend = fed.nodes["jiangsu"].backend
    facts = await backend.console(OPERATOR)
    (key,) = [k for k in facts["keys"] if k["in_use"]]
    assert key["status"] == "active" and not key["expires_soon"] and not key["expired"]
    backend.clock = FakeClock(key["not_after_ms"] - 31 * DAY_MS)
    (key,) = [k for k in (await backend.console(OPERATOR))["keys"] if k["in_use"]]
    assert not key["expires_soon"]
    backend.clock = FakeClock(key["not_after_ms"] - 29 * DAY_MS)
    (key,) = [k for k in (await backend.console(OPERATOR))["keys"] if k["in_use"]]
    assert key["expires_soon"] and not key["expired"]
    backend.clock = FakeClock(key["not_after_ms"])
    (key,) = [k for k in (await backend.console(OPERATOR))["keys"] if k["in_use"]]
    assert key["expired"] and not key["expires_soon"]


async def test_console_facts_name_every_peer_and_the_catalogue_digest_follows_the_catalogue(
    fed: Federation,
) -> None:
    facts = await fed.nodes["jiangsu"].backend.console(OPERATOR)
    assert [p["peer"] for p in facts["peers"]] == ["zhejiang"]
    assert len(facts["catalogue_digest"]) == 64
    other = await fed.nodes["zhejiang"].backend.console(OPERATOR)
    assert other["catalogue_digest"] == facts["catalogue_digest"]  # both hold the same union


def test_sampler_points_are_changes_per_interval_for_counters_and_levels_for_gauges() -> None:
    clock = FakeClock()
    sampler = Sampler(clock, backend=None)  # type: ignore[arg-type]
    sampler.samples.append((clock.now_ms(), {"submitted": 5.0, "outbox_pending": 3.0}))
    clock.advance(5)
    sampler.samples.append((clock.now_ms(), {"submitted": 8.0, "outbox_pending": 1.0}))
    assert sampler.points("submitted") == [(clock.now_ms(), 3.0)]
    assert [v for _, v in sampler.points("outbox_pending")] == [3.0, 1.0]
    svg = svg_chart(sampler.points("outbox_pending"), clock.now_ms())
    assert svg.startswith("<svg") and "polyline" in svg and ">3<" in svg
    # An hour's worth at most, and points older than the hour are not drawn.
    for _ in range(KEEP + 10):
        clock.advance(5)
        sampler.sample()
    assert len(sampler.samples) == KEEP


async def test_gauges_are_refreshed_from_the_database(fed: Federation) -> None:
    await fed.nodes["jiangsu"].backend.refresh_gauges()
    assert REGISTRY.get_sample_value("yrd_origin_held_entries") == 0
    assert REGISTRY.get_sample_value("yrd_owner_worklist_entries") == 0
