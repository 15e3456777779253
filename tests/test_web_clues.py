"""The clue block of the operator console: per domain, received, open, overdue, escalated and
closed clues of this node, counts only (never a subject or a reporter), operators only."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.web.console_pages import clue_figures
from tests.support.federation import Federation
from tests.test_clues_federation import clue_body, credit_code
from tests.test_web_pages import Browser, start_web_federation


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    f = await start_web_federation(tmp_path)
    try:
        yield f
    finally:
        await f.close()


def received(domain: str) -> int:
    return next((r.counts["received"] for r in clue_figures() if r.domain == domain), 0)


async def test_the_console_counts_clues_per_domain_without_personal_data(fed: Federation) -> None:
    before = received("food_drug")
    # Taken in at Jiangsu for a Jiangsu county: dispatched at once, counted as received here.
    body = clue_body(domains=["food_drug", "work_safety"])
    status, created = await fed.call(
        "jiangsu", "POST", "/api/v1/clues", json=body, headers={"Idempotency-Key": "console-1"}
    )
    assert status == 201 and created["status"] == "dispatched", created
    assert received("food_drug") == before + 1

    operator, clerk = Browser(fed, "jiangsu"), Browser(fed, "jiangsu")
    try:
        await clerk.login("clerk")
        assert (await clerk.get("/web/console"))[0] == 403
        await operator.login("operator")
        status, text, _ = await operator.get("/web/console")
        assert status == 200
        row = re.search(r'<tr data-domain="food_drug"[^>]*>(.*?)</tr>', text)
        assert row is not None, text
        assert "食品药品安全" in row.group(1)
        shown = re.search(r'<td class="clue-received">(\d+)</td>', row.group(1))
        assert shown is not None and int(shown.group(1)) == before + 1
        assert 'data-domain="work_safety"' in text
        for personal in (credit_code(), body["reporter"]["name"], body["description"], created["id"]):
            assert personal not in text
    finally:
        await operator.close()
        await clerk.close()
