"""The counter in a real browser (headless Chromium through chromedriver and selenium),
against an in-process Jiangsu + Zhejiang federation on 127.0.0.1.

The journey of the issue: log in at Jiangsu, find a Zhejiang matter, submit with a wrong
ID number and see the message at the field, correct it, submit; a Zhejiang owner clerk
approves in its own work queue while the Jiangsu status page updates by itself; print the
receipt; follow it as the citizen. A Zhejiang business licence's e-certificate is shown with
its QR code and checked on the verify page, then altered and refused. Then each role logs in
and sees only its pages.

Every page is saved as a PNG under $YRD_SCREENSHOTS (default: the test's tmp dir) for a
person to look at. Selenium is blocking, so the browser runs in a worker thread while the
event loop serves the nodes.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simulations.local_federation import PROVINCES
from simulations.sample_applications import application_body
from tests.support.federation import PASSWORD, Federation
from tests.test_web_pages import MARKET, WORKLIST_SERVICE, WRONG_ID, start_web_federation

webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (the dev extra)")
from selenium.common.exceptions import (  # noqa: E402
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

LICENCE_SERVICE = "zj.hangzhou.business-licence"  # auto: approved with a certificate
RELOADED_UNDER_US = "does not belong to the document"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="headless Chromium is missing: apt-get install -y chromium chromium-driver",
)


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("YRD_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    f = await start_web_federation(tmp_path)
    try:
        yield f
    finally:
        await f.close()


def new_browser() -> Any:
    options = webdriver.ChromeOptions()
    assert CHROMIUM is not None
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1400",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)


class Person:
    """One person at one browser: pages by path on a node, a screenshot of each."""

    def __init__(self, fed: Federation, shots: Path, who: str) -> None:
        self.fed, self.shots, self.who = fed, shots, who
        self.driver = new_browser()
        self.count = 0

    def open(self, node: str, path: str) -> None:
        self.driver.get(self.fed.url(node, path))

    def shot(self, name: str) -> None:
        self.count += 1
        self.driver.save_screenshot(str(self.shots / f"{self.who}-{self.count:02d}-{name}.png"))

    def find(self, css: str) -> Any:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def by_id(self, element_id: str) -> Any:
        return self.driver.find_element(By.ID, element_id)

    def wait_for(self, what: Callable[[Any], Any], seconds: float = 30) -> Any:
        # A status page reloads itself while it waits for the owner: an element found on one
        # load is stale on the next, so a wait looks again rather than fails. Chromium says so
        # either as a stale element or, when the reload lands mid-call, as an inspector error.
        def look(driver: Any) -> Any:
            try:
                return what(driver)
            except WebDriverException as e:
                if RELOADED_UNDER_US not in (e.msg or ""):
                    raise
                return False

        wait = WebDriverWait(
            self.driver, seconds, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)
        )
        return wait.until(look)

    def text(self, element_id: str) -> str:
        """The element's text as the page now shows it, even across a reload."""
        found: tuple[str] = self.wait_for(lambda d: (d.find_element(By.ID, element_id).text,))
        return found[0]

    def click(self, element_id: str) -> None:
        """Click the element, again on the next load if the page reloaded under the click."""
        self.wait_for(lambda d: d.find_element(By.ID, element_id).click() or True)

    def login(self, node: str, username: str) -> None:
        self.open(node, "/web/login")
        self.by_id("username").send_keys(username)
        self.by_id("password").send_keys(PASSWORD)
        self.shot(f"login-{node}-{username}")
        self.by_id("login-button").click()
        self.wait_for(lambda d: "/web/login" not in d.current_url)

    def logout(self) -> None:
        self.by_id("logout").click()
        self.wait_for(lambda d: "/web/login" in d.current_url)

    def nav(self) -> list[str]:
        return [
            a.get_attribute("href").split("/", 3)[3]
            for a in self.driver.find_elements(By.CSS_SELECTOR, "ul.nav a")
        ]

    def quit(self) -> None:
        self.driver.quit()


@pytest.fixture
def people(fed: Federation, shots: Path) -> Iterator[Callable[[str], Person]]:
    made: list[Person] = []

    def make(who: str) -> Person:
        made.append(Person(fed, shots, who))
        return made[-1]

    yield make
    for person in made:
        person.quit()


def fill_form(p: Person, fed: Federation, files: list[Path], id_number: str) -> None:
    defn = fed.nodes["jiangsu"].index.get(WORKLIST_SERVICE)
    body = application_body(defn, random.Random(11))
    name = p.by_id("applicant.name")
    name.clear()
    name.send_keys(body["applicant"]["name"])
    id_input = p.by_id("applicant.id_number")
    id_input.clear()
    id_input.send_keys(id_number)
    for field in defn.form:
        if field.name not in body["form"]:
            continue
        element = p.by_id(f"form.{field.name}")
        value = body["form"][field.name]
        if element.tag_name == "select":
            Select(element).select_by_value(str(value))
        elif element.get_attribute("type") == "checkbox":
            if bool(value) != element.is_selected():
                element.click()
        else:
            element.clear()
            element.send_keys(str(value))
    for i, path in enumerate(files):
        p.by_id(f"file.{i}").send_keys(str(path))
    if not p.by_id("consent").is_selected():
        p.by_id("consent").click()


INVALID_INPUTS = (
    "return Array.from(document.querySelectorAll(':invalid')).map(e => e.id + ': ' + e.validationMessage)"
)


def submit_at_jiangsu(fed: Federation, clerk: Person, files: list[Path]) -> tuple[str, str]:
    """Find the Zhejiang matter, meet the ID error at its field, correct it, submit:
    (application id, check code)."""
    clerk.login("jiangsu", "clerk")
    clerk.find("#q").send_keys("工业产品")
    clerk.find("#owner").send_keys("33")
    clerk.by_id("search").click()
    card = clerk.wait_for(
        lambda d: (d.find_element(By.CSS_SELECTOR, f'[data-service="{WORKLIST_SERVICE}"]').text,)
    )[0]
    assert MARKET in card and "20" in card
    clerk.shot("services")
    clerk.by_id(f"apply-{WORKLIST_SERVICE}").click()
    clerk.wait_for(lambda d: d.find_element(By.ID, "apply-form"))
    fill_form(clerk, fed, files, WRONG_ID)
    clerk.shot("form-filled-wrong-id")
    clerk.by_id("submit").click()
    try:
        error = clerk.wait_for(lambda d: d.find_element(By.ID, "error-applicant.id_number"))
    except TimeoutException:
        clerk.shot("no-error-shown")
        invalid = clerk.driver.execute_script(INVALID_INPUTS)
        raise AssertionError(f"{clerk.driver.current_url} {invalid}") from None
    assert error is not None
    message = clerk.text("error-applicant.id_number")
    assert "校验" in message, message
    clerk.shot("form-error-at-field")
    fill_form(clerk, fed, files, right_id(fed))
    clerk.by_id("submit").click()
    clerk.wait_for(lambda d: "审查中" in d.find_element(By.ID, "status").text)
    clerk.shot("status-in-review")
    return clerk.text("app-id"), clerk.text("check-code")


def right_id(fed: Federation) -> str:
    body = application_body(fed.nodes["jiangsu"].index.get(WORKLIST_SERVICE), random.Random(11))
    return str(body["applicant"]["id_number"])


def approve_at_zhejiang(owner: Person, app_id: str) -> None:
    owner.login("zhejiang", "owner-market")
    assert owner.driver.current_url.endswith("/web/owner")
    owner.by_id(f"open-{app_id}").click()
    owner.wait_for(lambda d: d.find_element(By.ID, "decision-form"))
    owner.shot("owner-detail")
    owner.by_id("decision-approve").click()
    owner.by_id("reason").send_keys("材料齐全，准予许可")
    owner.by_id("decide").click()
    owner.wait_for(lambda d: d.current_url.endswith("/web/owner"))
    owner.shot("owner-queue-after-decision")


def watch_and_print(clerk: Person, code: str) -> None:
    """The clerk's status page was left open: it updates by itself; then the receipt."""
    try:
        clerk.wait_for(lambda d: "已办结" in d.find_element(By.ID, "status").text, 60)
    except TimeoutException:
        clerk.shot("status-did-not-change")
        raise
    clerk.shot("status-completed")
    assert "result-notice" in clerk.text("documents")
    clerk.click("receipt-link")
    clerk.wait_for(lambda d: d.find_element(By.ID, "qr"))
    assert clerk.text("receipt-code") == code
    clerk.shot("receipt")
    clerk.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    assert not clerk.find("header.top").is_displayed() and not clerk.by_id("print").is_displayed()
    clerk.shot("receipt-print")
    (clerk.shots / "receipt.pdf").write_bytes(base64.b64decode(clerk.driver.print_page()))
    clerk.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})


def follow_as_citizen(fed: Federation, citizen: Person, app_id: str, code: str) -> None:
    """No account, the id and the code from the receipt; no personal data on the page."""
    citizen.open("jiangsu", "/track")
    citizen.by_id("track-id").send_keys(app_id)
    citizen.by_id("track-code").send_keys(code)
    citizen.by_id("track").click()
    citizen.wait_for(lambda d: "已办结" in d.find_element(By.ID, "track-status").text)
    page = citizen.driver.page_source
    body = application_body(fed.nodes["jiangsu"].index.get(WORKLIST_SERVICE), random.Random(11))
    assert body["applicant"]["name"] not in page and right_id(fed) not in page
    citizen.shot("citizen-track")
    citizen.by_id("lang-switch").click()
    citizen.wait_for(lambda d: "completed" in d.find_element(By.ID, "track-status").text)
    citizen.shot("citizen-track-en")


def journey(fed: Federation, people: Callable[[str], Person], files: list[Path]) -> None:
    clerk = people("clerk")
    app_id, code = submit_at_jiangsu(fed, clerk, files)
    approve_at_zhejiang(people("owner"), app_id)
    watch_and_print(clerk, code)
    follow_as_citizen(fed, people("citizen"), app_id, code)


def certificate_at_the_counter(people: Callable[[str], Person], app_id: str) -> None:
    """The licence Zhejiang issued, on the Jiangsu status page with its QR code; its text
    pasted into the verify page passes, and with one character changed it is refused."""
    clerk = people("certificate")
    clerk.login("jiangsu", "clerk")
    clerk.open("jiangsu", f"/web/applications/{app_id}")
    clerk.wait_for(lambda d: d.find_element(By.CSS_SELECTOR, "#certificates svg"))
    clerk.shot("status-certificate")
    clerk.find("a.cert-link").click()
    verdict = clerk.wait_for(lambda d: d.find_element(By.ID, "cert-verdict").get_attribute("data-reason"))
    assert verdict == "valid"
    text = clerk.text("cert-text")
    assert text.startswith("YRDC1:")
    clerk.shot("certificate-page")
    altered = text[:-20] + ("B" if text[-20] == "A" else "A") + text[-19:]  # inside the signature
    for pasted, wanted in ((text, "valid"), (altered, "bad_signature")):
        clerk.open("jiangsu", "/web/certificates/verify")
        clerk.by_id("cert-input").send_keys(pasted)
        clerk.by_id("verify").click()
        reason = clerk.wait_for(lambda d: d.find_element(By.ID, "verdict").get_attribute("data-reason"))
        assert reason == wanted, reason
        clerk.shot(f"verified-{wanted}")
    clerk.logout()


ROLE_PAGES = {
    # user: (the nav it gets, a page it may not open)
    "clerk": (
        ["web/services", "web/queue", "web/clues", "web/certificates/verify", "web/data", "track"],
        "/web/console",
    ),
    "owner-market": (
        ["web/owner", "web/clues", "web/certificates/verify", "web/data", "track"],
        "/web/queue",
    ),
    "operator": (["web/console", "web/data", "track"], "/web/owner"),
    "supervisor": (
        [
            "web/services",
            "web/queue",
            "web/owner",
            "web/clues",
            "web/certificates/verify",
            "web/console",
            "web/data",
            "track",
        ],
        None,
    ),
}


def each_role(people: Callable[[str], Person]) -> None:
    p = people("roles")
    for user, (nav, forbidden) in ROLE_PAGES.items():
        p.login("jiangsu", user)
        assert p.nav() == nav, (user, p.nav())
        p.shot(f"{user}-home")
        if forbidden is not None:
            p.open("jiangsu", forbidden)
            assert p.by_id("message").text in ("您的角色无权访问此页", "Your role may not open this page")
            p.shot(f"{user}-refused")
            p.open("jiangsu", "/web/")
        p.logout()


async def test_the_counter_journey_in_a_browser(
    fed: Federation, people: Callable[[str], Person], tmp_path: Path, shots: Path
) -> None:
    files = []
    for i in range(4):
        f = tmp_path / f"scan-{i}.pdf"
        f.write_bytes(b"%PDF-1.4 scan " + bytes([48 + i]))
        files.append(f)
    await asyncio.to_thread(journey, fed, people, files)
    licence = application_body(fed.nodes["jiangsu"].index.get(LICENCE_SERVICE), random.Random(5))
    status, created = await fed.submit("jiangsu", licence, "browser-licence")
    assert status == 201, created
    await fed.wait_status("jiangsu", created["id"], {"completed"})
    await asyncio.to_thread(certificate_at_the_counter, people, created["id"])
    await asyncio.to_thread(each_role, people)
    print(f"screenshots in {shots}")


HEALTH_PERSON = "310101199003071230"  # has records in three provinces (registry/samples/data_records)


def health_screen(p: Person) -> None:
    """A Shanghai clerk opens the health-code screen, types the id, records the consent and
    gets one view from three provinces' departments."""
    p.login("shanghai", "clerk")
    p.open("shanghai", "/web/data/query?preset=health")
    p.by_id("subject_id").send_keys(HEALTH_PERSON)
    p.by_id("consent").click()
    p.by_id("given_by").send_keys("张三")
    p.shot("health-form")
    p.by_id("health-screen").click()
    p.wait_for(lambda d: d.find_element(By.ID, "merged-view"))
    outcomes = {
        e.get_attribute("id"): e.get_attribute("data-outcome")
        for e in p.driver.find_elements(By.CSS_SELECTOR, ".data-item")
    }
    assert outcomes == {
        "item-sh.health-code": "answered",
        "item-js.nucleic-acid": "answered",
        "item-zj.vaccination": "answered",
    }, outcomes
    assert p.find('#item-sh\\.health-code [data-field="status"]').text == "绿码"
    p.shot("health-screen")


async def test_the_health_code_screen_in_a_browser(tmp_path: Path, shots: Path) -> None:
    delta = await Federation(tmp_path, PROVINCES).start()
    clerk = None
    try:
        clerk = await asyncio.to_thread(Person, delta, shots, "health")
        await asyncio.to_thread(health_screen, clerk)
    finally:
        if clerk is not None:
            await asyncio.to_thread(clerk.quit)
        await delta.close()
