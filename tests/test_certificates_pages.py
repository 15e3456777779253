"""E-certificates on the pages, over real HTTP (Jiangsu's counter, Zhejiang the owner): the
certificate and its QR code on the status page, the receipt and the citizen's /track, the
printable page with this node's verdict, and the "verify a certificate" page with CSRF,
file upload, an altered certificate, English, and the role check."""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import REGISTRY
from sqlmodel import Session

from core.keys import NodeKey
from node.models import ResultDocument
from registry.certificates import CONTENT_TYPE, decode, sign_certificate, to_text
from simulations.sample_applications import application_body
from tests.support.federation import Federation
from tests.test_web_pages import Browser, start_web_federation, submit_via_pages

LICENCE = "zj.hangzhou.business-licence"
BIRTH = "zj.hangzhou.birth-certificate"


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    f = await start_web_federation(tmp_path)
    try:
        yield f
    finally:
        await f.close()


def qr_text(page: str) -> str:
    found = re.search(r'id="cert-text">(YRDC1:[A-Z2-7]+)<', page)
    assert found is not None, page
    return found.group(1)


def checks_counted() -> float:
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "yrd_certificates_verified"
        for sample in metric.samples
        if sample.name == "yrd_certificates_verified_total"
    )


async def test_the_certificate_and_its_qr_code_reach_every_page_of_the_application(fed: Federation) -> None:
    clerk, citizen = Browser(fed, "jiangsu"), Browser(fed, "jiangsu")
    try:
        await clerk.login("clerk")
        app_id = await submit_via_pages(fed, clerk, BIRTH)
        view = await fed.wait_status("jiangsu", app_id, {"completed"})
        status, text, _ = await clerk.get(f"/web/applications/{app_id}")
        assert status == 200 and 'id="certificates"' in text and "<svg" in text
        code = re.search(r'id="check-code">([A-Z2-7]{4}-[A-Z2-7]{4})<', text)
        assert code is not None
        link = re.search(rf'href="(/web/applications/{app_id}/certificates/\d+)"', text)
        assert link is not None
        assert 'class="message ok cert-verdict" data-reason="valid"' in text  # checked here too
        # Showing a verdict beside a certificate is not a check someone asked for: page views
        # do not count in yrd_certificates_verified_total, the verify page does.
        counted = checks_counted()
        await clerk.get(f"/web/applications/{app_id}")
        assert checks_counted() == counted
        status, text, _ = await clerk.get(link.group(1))
        assert status == 200 and 'data-reason="valid"' in text
        download = re.search(rf'href="(/web/applications/{app_id}/documents/\d+)"', text)
        assert download is not None
        async with clerk.session.get(clerk.url(download.group(1))) as r:
            assert r.status == 200 and decode(await r.read()).certificate.application_id == app_id
        text_form = qr_text(text)
        assert decode(text_form).certificate.application_id == app_id
        status, text, _ = await clerk.get(f"/web/applications/{app_id}/receipt")
        assert status == 200 and text.count("<svg") == 2  # the tracking code and the certificate

        # The citizen's page shows the certificate, its holder masked, nothing else personal.
        status, text, _ = await citizen.get(f"/track?id={app_id}&code={code.group(1)}")
        assert status == 200 and 'id="certificates"' in text and "<svg" in text
        holder = decode(text_form).certificate.holder
        assert holder.display_id in text and "*" in holder.display_id
        applicant = application_body(fed.nodes["jiangsu"].index.get(BIRTH), random.Random(7))["applicant"]
        assert applicant["id_number"] not in text and applicant["name"] not in text
        assert [d["name"] for d in view["documents"]] == ["result-notice.txt", "certificate.yrdc"]
        assert 'data-reason="valid"' in text

        # A certificate in the name of Zhejiang signed by a key that is not Zhejiang's (as a
        # member could send one): every page shows it refused, never as genuine.
        forged = decode(text_form)
        forged.certificate.holder.display_name = "李*四"
        forged = sign_certificate(forged.certificate, NodeKey.generate())

        def add(s: Session) -> None:
            s.add(
                ResultDocument(
                    application_id=app_id,
                    name="certificate.yrdc",
                    content_type=CONTENT_TYPE,
                    data=forged.SerializeToString(),
                )
            )

        await fed.nodes["jiangsu"].db.run(add)
        _, text, _ = await clerk.get(f"/web/applications/{app_id}")
        assert re.findall(r'cert-verdict" data-reason="([a-z_]+)"', text) == ["valid", "unknown_key"]
        _, text, _ = await citizen.get(f"/track?id={app_id}&code={code.group(1)}")
        assert re.findall(r'cert-verdict" data-reason="([a-z_]+)"', text) == ["valid", "unknown_key"]
    finally:
        await clerk.close()
        await citizen.close()


async def test_the_verify_page_checks_text_and_files_and_names_what_is_wrong(fed: Federation) -> None:
    clerk, owner, operator = Browser(fed, "jiangsu"), Browser(fed, "zhejiang"), Browser(fed, "jiangsu")
    try:
        await clerk.login("clerk")
        app_id = await submit_via_pages(fed, clerk, LICENCE)
        view = await fed.wait_status("jiangsu", app_id, {"completed"})
        index = [d["name"] for d in view["documents"]].index("certificate.yrdc")
        _, text, _ = await clerk.get(f"/web/applications/{app_id}/certificates/{index}")
        licence = qr_text(text)

        # At the owner's side of the delta, an owner clerk checks it the same way.
        await owner.login("owner-market")
        status, text, _ = await owner.get("/web/certificates/verify")
        assert status == 200 and 'name="csrf"' in text and 'href="/web/certificates/verify"' in text
        status, text, _ = await owner.post("/web/certificates/verify", {"csrf": "forged", "text": licence})
        assert status == 403 and 'id="verdict"' not in text
        counted = checks_counted()
        status, text, _ = await owner.post("/web/certificates/verify", {"csrf": owner.csrf, "text": licence})
        assert status == 200 and 'data-reason="valid"' in text and "核验通过" in text
        assert checks_counted() == counted + 1
        code = decode(licence).certificate.holder.display_id
        assert code in text

        altered = decode(licence)
        altered.certificate.fields[0].value = "91330100MA00000000"
        status, text, _ = await owner.post(
            "/web/certificates/verify", {"csrf": owner.csrf, "text": to_text(altered)}
        )
        assert status == 200 and 'data-reason="bad_signature"' in text and "篡改" in text

        data = aiohttp.FormData()
        data.add_field("csrf", owner.csrf)
        data.add_field("text", "")
        data.add_field(
            "file",
            decode(licence).SerializeToString(),
            filename="c.yrdc",
            content_type="application/octet-stream",
        )
        status, text, _ = await owner.post("/web/certificates/verify", data)
        assert status == 200 and 'data-reason="valid"' in text

        status, text, _ = await owner.post("/web/certificates/verify", {"csrf": owner.csrf, "text": ""})
        assert status == 422 and 'id="form-errors"' in text
        status, text, _ = await owner.post("/web/certificates/verify", {"csrf": owner.csrf, "text": "hello"})
        assert status == 200 and 'data-reason="malformed"' in text

        await owner.get("/web/lang/en?next=/web/certificates/verify")
        status, text, _ = await owner.post("/web/certificates/verify", {"csrf": owner.csrf, "text": licence})
        assert "Valid: signed by the issuer" in text and "Verify an e-certificate" in text

        # The operator sees no personal data and so checks no certificate: the backend refuses.
        await operator.login("operator")
        await operator.get("/web/certificates/verify")
        status, text, _ = await operator.post(
            "/web/certificates/verify", {"csrf": operator.csrf, "text": licence}
        )
        assert status == 403 and code not in text
    finally:
        for b in (clerk, owner, operator):
            await b.close()
