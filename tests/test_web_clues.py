"""The clue pages (take in with errors at the field, the list, the closed loop, the regulator's
acknowledge / findings / close, roles through the backend) and the console's clue block: per
domain, received, open, overdue, escalated and closed, counts only, for operators."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from node.web.console_pages import clue_figures
from tests.support.federation import PASSWORD, Federation
from tests.test_clues_federation import ZJG_SMJ, clue_body, credit_code
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


async def test_clue_pages_take_in_errors_at_the_field_queue_and_closed_loop(fed: Federation) -> None:
    js = fed.nodes["jiangsu"]
    await js.users.add_user("zjg-smj", PASSWORD, "owner_clerk", department=ZJG_SMJ)
    clerk, regulator, operator = Browser(fed, "jiangsu"), Browser(fed, "jiangsu"), Browser(fed, "jiangsu")
    try:
        await clerk.login("clerk")
        status, text, _ = await clerk.get("/web/clues/new")
        assert status == 200 and 'href="/web/clues"' in text  # in the navigation list
        key = re.search(r'name="key" value="([0-9a-f]+)"', text)
        assert key is not None
        form = {
            "csrf": clerk.csrf,
            "key": key.group(1),
            "source": "citizen_report",
            "region_code": "320582",
            "domains": "food_drug",
            "credit_code": credit_code()[:17] + ("0" if credit_code()[17] != "0" else "1"),
            "severity": "high",
            "description": "供应学校的食品企业卫生条件不达标",
            "reporter_name": "王某",
            "reporter_contact": "13800000000",
            "acknowledge_within_hours": "4",
            "close_within_days": "7",
        }
        status, text, _ = await clerk.post("/web/clues", form)
        assert status == 422 and 'id="error-credit_code"' in text, text  # the bad check character
        assert 'value="320582"' in text  # what was typed stays
        status, text, _ = await clerk.post("/web/clues", {**form, "acknowledge_within_hours": "x"})
        assert status == 422 and 'id="error-acknowledge_within_hours"' in text

        good = {**form, "credit_code": credit_code()}
        status, text, r = await clerk.post("/web/clues", good)
        assert status == 200 and "/web/clues/" in str(r.url), text
        clue_id = str(r.url).rsplit("/", 1)[1]
        _, _, r2 = await clerk.post("/web/clues", good)  # a double post: the same clue
        assert str(r2.url).endswith(clue_id)
        status, listed, _ = await clerk.get("/web/clues")
        assert status == 200 and f'data-id="{clue_id}"' in listed

        # The regulator's queue: acknowledge, findings with a document, close.
        await regulator.login("zjg-smj")
        status, queue, _ = await regulator.get("/web/clues")
        assert status == 200 and f'data-id="{clue_id}"' in queue
        status, detail, _ = await regulator.get(f"/web/clues/{clue_id}")
        assert status == 200 and "acknowledge-food_drug" in detail and "王某" in detail
        status, _, _ = await regulator.post(
            f"/web/clues/{clue_id}/acknowledge", {"csrf": regulator.csrf, "department": ZJG_SMJ}
        )
        assert status == 200
        status, text, _ = await regulator.post(
            f"/web/clues/{clue_id}/findings", {"csrf": regulator.csrf, "department": ZJG_SMJ, "text": ""}
        )
        assert status == 422 and 'id="clue-errors"' in text
        findings = aiohttp.FormData()
        for k, v in {
            "csrf": regulator.csrf,
            "department": ZJG_SMJ,
            "text": "现场核查属实，已责令整改",
        }.items():
            findings.add_field(k, v)
        findings.add_field(
            "document", b"%PDF-1.4 report", filename="report.pdf", content_type="application/pdf"
        )
        status, text, _ = await regulator.post(f"/web/clues/{clue_id}/findings", findings)
        assert status == 200 and "现场核查属实" in text and "report.pdf" in text
        status, text, _ = await regulator.post(
            f"/web/clues/{clue_id}/close", {"csrf": regulator.csrf, "department": ZJG_SMJ, "note": "复查合格"}
        )
        assert status == 200

        # The source's closed loop: every step, in order.
        status, text, _ = await clerk.get(f"/web/clues/{clue_id}")
        steps = re.findall(r'<tr data-step="([a-z_]+)"', text)
        assert steps[:1] == ["submitted"] and {"dispatched", "acknowledged", "findings", "closed"} <= set(
            steps
        )
        # Roles through the backend: a clerk cannot act, an operator cannot read clues.
        status, _, _ = await clerk.post(f"/web/clues/{clue_id}/acknowledge", {"csrf": clerk.csrf})
        assert status in (403, 404)
        await operator.login("operator")
        assert (await operator.get(f"/web/clues/{clue_id}"))[0] in (403, 404)
        assert 'href="/web/clues"' not in (await operator.get("/web/console"))[1]
    finally:
        for b in (clerk, regulator, operator):
            await b.close()
