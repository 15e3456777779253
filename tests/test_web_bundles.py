"""A bundle on the counter's status page, over real HTTP in an in-process federation of the
four provinces: each part with its owner, status and deadline, and the correction of a failed
part through a CSRF-protected form that reaches the lead once."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.federation import PASSWORD, Federation, allow_all_specs
from tests.test_bundles_federation import bundle_body, wait_parts
from tests.test_web_pages import Browser


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    f = await Federation(tmp_path, allow_all_specs(tmp_path)).start()
    await f.nodes["anhui"].users.add_user("clerk-b", PASSWORD, "clerk", "")
    try:
        yield f
    finally:
        await f.close()


async def rejected_filing(fed: Federation) -> str:
    """开办企业 submitted at Anhui, its Shanghai filing rejected; the bundle's id."""
    status, created = await fed.submit("anhui", bundle_body(fed), "startup-web")
    assert status == 201, created
    bundle_id: str = created["id"]
    await wait_parts(fed, "anhui", bundle_id, {"hq_filing": {"in_review"}})
    _, work = await fed.call("shanghai", "GET", "/api/v1/worklist", user="supervisor")
    (filing,) = [a for a in work["applications"] if a["service_id"] == "sh.market.branch-filing"]
    status, decided = await fed.call(
        "shanghai",
        "POST",
        f"/api/v1/applications/{filing['id']}/decision",
        json={"decision": "reject", "reason": "总公司名称与登记不符"},
        user="supervisor",
    )
    assert status == 200, decided
    await fed.wait_status("anhui", bundle_id, {"needs_materials"})
    return bundle_id


def row(text: str, part: str) -> str:
    found = re.search(rf'<tr id="part-{part}" data-status="[a-z_]+">.*?</tr>', text)
    assert found, f"no row for {part}"
    return found.group(0)


async def test_the_status_page_shows_each_part_and_corrects_only_the_failed_one(fed: Federation) -> None:
    bundle_id = await rejected_filing(fed)
    page = f"/web/applications/{bundle_id}"
    resubmit = f"{page}/components/hq_filing/resubmit"
    clerk, other = Browser(fed, "anhui"), Browser(fed, "anhui")
    try:
        await clerk.login("clerk")
        status, text, _ = await clerk.get(page)
        assert status == 200
        licence, filing = row(text, "licence"), row(text, "hq_filing")
        assert (
            'data-status="completed"' in licence
            and "苏州市市场监督管理局" in licence
            and "jiangsu" in licence
        )
        assert (
            'data-status="rejected"' in filing and "shanghai" in filing and "总公司名称与登记不符" in filing
        )
        assert re.search(r"<td>20\d\d-\d\d-\d\d \d\d:\d\d</td>", filing)  # its deadline, local time
        # Only the failed part offers a correction, with that part's own fields.
        assert f'action="{resubmit}"' in text
        assert "/components/licence/resubmit" not in text
        assert 'name="form.branch_credit_code"' in text

        # A forged token is refused and nothing reaches the lead.
        status, _, _ = await clerk.post(resubmit, {"csrf": "forged", "form.company_name": "x公司"})
        assert status == 403
        view = await wait_parts(fed, "anhui", bundle_id, {"hq_filing": {"rejected"}})
        assert {c["name"]: c["attempt"] for c in view["components"]}["hq_filing"] == 1

        # Another counter clerk does not see this application, nor correct it.
        await other.login("clerk-b")
        status, _, _ = await other.get(page)
        assert status == 404
        status, _, _ = await other.post(resubmit, {"csrf": other.csrf, "form.company_name": "x公司"})
        assert status == 404

        # A part that did not fail is refused with the lead's reason, as a page.
        status, text, _ = await clerk.post(
            f"{page}/components/licence/resubmit", {"csrf": clerk.csrf}, allow_redirects=False
        )
        assert status == 409 and 'id="message"' in text

        status, _, r = await clerk.post(
            resubmit,
            {"csrf": clerk.csrf, "form.company_name": "上海示例科技股份有限公司", "form.phone": ""},
            allow_redirects=False,
        )
        assert status == 303 and r.headers["Location"] == page
        view = await wait_parts(fed, "anhui", bundle_id, {"hq_filing": {"in_review"}})
        parts = {c["name"]: c for c in view["components"]}
        assert parts["hq_filing"]["attempt"] == 2
        assert {parts[n]["attempt"] for n in parts} - {2} == {1}  # the others were not redone
        _, work = await fed.call("shanghai", "GET", "/api/v1/worklist", user="supervisor")
        (again,) = [a for a in work["applications"] if a["service_id"] == "sh.market.branch-filing"]
        assert again["form"]["company_name"] == "上海示例科技股份有限公司"
        assert again["form"]["phone"]  # an empty input keeps the earlier value
        status, text, _ = await clerk.get(page)
        assert "resubmit-hq_filing" not in text and "(第几次 2)" in text
    finally:
        await clerk.close()
        await other.close()
