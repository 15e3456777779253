"""The data-sharing pages over real HTTP against the four provinces as the demo lays them out
(sample catalogues, records and the shipped policy bundles): the data catalogue's filters, the
consented query and the one-click health-code screen, a request for access granted, used and
revoked across two provinces through the pages alone, and the disclosure log; CSRF on every
form, the role checks the backend makes, English."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from simulations.local_federation import PROVINCES
from tests.support.federation import PASSWORD, Federation
from tests.test_web_pages import Browser

PERSON = "310101199003071230"  # has records in all four provinces (registry/samples/data_records)
WRONG_CHECK = "310101199003071231"
HOUSING_FUND = "ah.housing-fund.account"
AH_FUND_CENTRE = "安徽省住房公积金管理中心"


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    f = await Federation(tmp_path, PROVINCES).start()
    await f.nodes["anhui"].users.add_user("fund-clerk", PASSWORD, "owner_clerk", department=AH_FUND_CENTRE)
    await f.nodes["shanghai"].users.add_user("operator", PASSWORD, "operator")
    try:
        yield f
    finally:
        await f.close()


def items(page: str) -> dict[str, str]:
    """resource id -> outcome, as the merged view shows them."""
    return dict(re.findall(r'id="item-([a-z0-9.-]+)" data-outcome="([a-z_]+)"', page))


def consented(csrf: str, **over: str) -> dict[str, str]:
    form = {
        "csrf": csrf,
        "kind": "person",
        "subject_id": PERSON,
        "consent": "yes",
        "given_by": "张三",
        "until": "2099-12-31",
        "preset": "health",
    }
    form.update(over)
    return form


async def test_the_catalogue_filters_by_name_holder_province_and_class(fed: Federation) -> None:
    clerk = Browser(fed, "shanghai")
    try:
        await clerk.login("clerk")
        status, text, _ = await clerk.get("/web/data")
        assert status == 200 and 'href="/web/data"' in text
        every = set(re.findall(r'id="resource-([a-z0-9.-]+)"', text))
        assert {"sh.health-code", "js.nucleic-acid", "zj.vaccination", HOUSING_FUND} <= every
        _, text, _ = await clerk.get("/web/data?q=核酸")
        assert set(re.findall(r'id="resource-([a-z0-9.-]+)"', text)) == {"js.nucleic-acid"}
        _, text, _ = await clerk.get("/web/data?province=34")
        anhui = set(re.findall(r'id="resource-([a-z0-9.-]+)"', text))
        assert anhui and all(r.startswith("ah.") for r in anhui)
        _, text, _ = await clerk.get("/web/data?department=公积金")
        assert set(re.findall(r'id="resource-([a-z0-9.-]+)"', text)) == {HOUSING_FUND}
        assert f'href="/web/data/requests/new?resource={HOUSING_FUND}"' in text  # conditional: ask first
        _, text, _ = await clerk.get("/web/data?sharing=not_shared")
        assert re.findall(r'data-sharing="([a-z_]+)"', text) == ["not_shared"] * len(
            re.findall(r'data-sharing="', text)
        )
        assert (
            "《医疗机构病历管理规定》" in text and "/web/data/query?resource=sh.medical-records" not in text
        )
        status, text, _ = await clerk.get("/web/data?province=x1&sharing=bogus")
        assert status == 400 and 'id="message"' in text
    finally:
        await clerk.close()


async def test_the_health_code_screen_in_one_click_with_consent_and_without(fed: Federation) -> None:
    clerk = Browser(fed, "shanghai")
    try:
        await clerk.login("clerk")
        status, text, _ = await clerk.get("/web/data/query?preset=health")
        assert status == 200 and 'id="health-screen"' in text
        assert 'value="health-check"' in text and 'id="ask-sh.health-code" checked' in text
        status, _, _ = await clerk.post("/web/data/query", consented("forged"))
        assert status == 403

        status, text, _ = await clerk.post("/web/data/query", consented(clerk.csrf))
        assert status == 200, text
        assert items(text) == {r: "answered" for r in ("sh.health-code", "js.nucleic-acid", "zj.vaccination")}
        assert "绿码" in text and "阴性" in text and "江苏省卫生健康统计信息中心" in text
        assert 'data-complete="true"' in text and "健康码一屏通" in text

        # Without the tick, every holder refuses for itself and says why.
        no_consent = consented(clerk.csrf)
        del no_consent["consent"]
        status, text, _ = await clerk.post("/web/data/query", no_consent)
        assert status == 200 and set(items(text).values()) == {"refused"}
        assert text.count('class="reason-code">consent_missing<') == 3

        # A wrong check character is refused at its input, before anything is asked.
        status, text, _ = await clerk.post("/web/data/query", consented(clerk.csrf, subject_id=WRONG_CHECK))
        assert status == 422 and 'id="error-subject_id"' in text and 'id="merged-view"' not in text
        status, text, _ = await clerk.post(
            "/web/data/query", consented(clerk.csrf, preset="", purpose="health-check", resources="")
        )
        assert status == 422 and 'id="error-resources"' in text

        # A company is asked about by its credit code, and needs no one's consent.
        company = {
            "csrf": clerk.csrf,
            "kind": "company",
            "subject_id": "91340100MA2N0P3Q42",
            "purpose": "service-delivery",
            "resources": "ah.business-licence",
        }
        status, text, _ = await clerk.post("/web/data/query", company)
        assert status == 200 and items(text) == {"ah.business-licence": "answered"}
        assert "合肥长三角数据服务有限公司" in text

        await clerk.get("/web/lang/en?next=/web/data/query")
        _, text, _ = await clerk.post("/web/data/query", consented(clerk.csrf))
        assert "Health-code screen" in text and "answered" in text
    finally:
        await clerk.close()


async def wait_for(browser: Browser, path: str, needle: str) -> str:
    text = ""
    for _ in range(400):
        _, text, _ = await browser.get(path)
        if needle in text:
            return text
        await asyncio.sleep(0.05)
    raise AssertionError(f"{needle} never on {path}: {text}")


async def test_a_request_is_granted_used_and_revoked_through_the_pages(fed: Federation) -> None:
    clerk, fund = Browser(fed, "shanghai"), Browser(fed, "anhui")
    fund_query = consented("", preset="", purpose="service-delivery", resources=HOUSING_FUND)
    try:
        await clerk.login("clerk")
        status, text, _ = await clerk.get(f"/web/data/requests/new?resource={HOUSING_FUND}")
        assert status == 200 and 'id="field-balance"' in text
        request_form = {
            "csrf": clerk.csrf,
            "resource_id": HOUSING_FUND,
            "purpose": "service-delivery",
            "legal_basis": "《住房公积金管理条例》第三十条",
            "until": (date.today() + timedelta(days=365)).isoformat(),  # a grant lasts at most 3 years
        }
        status, text, _ = await clerk.post("/web/data/requests", {**request_form, "fields": "bogus_field"})
        assert status == 422 and 'id="error-fields"' in text
        key = re.search(r'name="idem" value="([^"]+)"', text)
        assert key is not None
        ticked = [("fields", "account_status"), ("fields", "balance")]
        data = [*request_form.items(), ("idem", key.group(1)), *ticked]
        status, _, r = await clerk.post("/web/data/requests", data, allow_redirects=False)
        assert status == 303, _
        request_id = r.headers["Location"].split("#request-")[1]
        # The same form sent again (a double click, a reload) is the same request.
        status, _, r = await clerk.post("/web/data/requests", data, allow_redirects=False)
        assert status == 303 and r.headers["Location"].split("#request-")[1] == request_id
        text = await wait_for(clerk, "/web/data/requests", f'id="request-{request_id}" data-status="pending"')
        assert 'id="received"' not in text  # a counter clerk decides nothing

        # The fund centre's clerk sees it arrive, grants one field of the two.
        await fund.login("fund-clerk")
        await wait_for(fund, "/web/data/requests", f'id="decide-{request_id}"')
        status, _, _ = await fund.post(
            f"/web/data/requests/{request_id}/decision",
            {"csrf": "forged", "decision": "approve", "fields": "account_status"},
        )
        assert status == 403
        status, _, _ = await fund.post(
            f"/web/data/requests/{request_id}/decision",
            {"csrf": fund.csrf, "decision": "approve", "fields": "account_status", "note": "同意"},
            allow_redirects=False,
        )
        assert status == 303
        await wait_for(clerk, "/web/data/requests", f'id="request-{request_id}" data-status="approved"')

        _, text, _ = await clerk.post("/web/data/query", {**fund_query, "csrf": clerk.csrf})
        assert items(text) == {HOUSING_FUND: "answered"}
        assert 'data-field="account_status"' in text and 'data-field="balance"' not in text
        assert f"consent+grant:{request_id}" in text

        # Deciding twice is a conflict shown as a page; revoking ends the grant.
        status, text, _ = await fund.post(
            f"/web/data/requests/{request_id}/decision", {"csrf": fund.csrf, "decision": "refuse"}
        )
        assert status == 409 and 'id="message"' in text
        status, _, _ = await fund.post(
            f"/web/data/grants/{request_id}/revoke",
            {"csrf": fund.csrf, "note": "协议到期"},
            allow_redirects=False,
        )
        assert status == 303
        _, text, _ = await clerk.post("/web/data/query", {**fund_query, "csrf": clerk.csrf})
        assert items(text) == {HOUSING_FUND: "refused"} and 'class="reason-code">no_grant<' in text
        await wait_for(clerk, "/web/data/requests", f'id="request-{request_id}" data-status="revoked"')
    finally:
        await clerk.close()
        await fund.close()


async def test_the_disclosure_log_one_person_at_the_counter_all_for_the_operator(fed: Federation) -> None:
    clerk, operator = Browser(fed, "shanghai"), Browser(fed, "shanghai")
    try:
        await clerk.login("clerk")
        await clerk.get("/web/data/query")
        await clerk.post("/web/data/query", consented(clerk.csrf))
        status, text, _ = await clerk.get("/web/data/disclosures")
        assert status == 200 and 'id="disclosures"' not in text and "required" in text
        status, text, _ = await clerk.get(f"/web/data/disclosures?subject_id={PERSON}&side=asker")
        assert status == 200 and text.count('class="disclosure"') == 3 and 'id="meter"' not in text
        assert "sh.health-code" in text and "zj.vaccination" in text
        status, text, _ = await clerk.get(f"/web/data/disclosures?subject_id={WRONG_CHECK}")
        assert status == 400 and 'id="message"' in text
        status, text, _ = await clerk.get("/web/data/disclosures?subject_id=320502198506123456")
        assert status == 200 and 'id="no-disclosures"' in text

        await operator.login("operator")
        status, text, _ = await operator.get("/web/data/disclosures")
        assert status == 200 and text.count('class="disclosure"') >= 3
        # Shanghai answered its own health code once, as holder: the meter says so.
        assert re.search(r"<td><code>sh.health-code</code></td><td>shanghai</td>", text)
        assert 'id="meter-total">1<' in text
        status, text, _ = await operator.get("/web/data/disclosures?side=sideways")
        assert status == 400
        # The operator sees the catalogue and the log, but asks nothing about a person.
        status, _, _ = await operator.get("/web/data")
        assert status == 200
        await operator.get("/web/data/query")
        status, text, _ = await operator.post("/web/data/query", consented(operator.csrf))
        assert status == 403 and "绿码" not in text
    finally:
        await clerk.close()
        await operator.close()
