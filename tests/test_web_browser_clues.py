"""A supervision clue's closed loop in a real browser (headless Chromium), across two nodes.

A clerk at the Zhejiang counter takes in a citizen's report about a Zhangjiagang food maker
(region 320582, Jiangsu), meets the wrong credit-code check character at its field, corrects it
and submits; the clue travels to Jiangsu, where the county regulator acknowledges it, files
findings with a document and closes it; the Zhejiang clerk's page then shows every step.
The HTTP-level rules (CSRF, roles, status codes) are pinned in tests/test_web_clues.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from simulations.local_federation import PROVINCES
from tests.support.federation import PASSWORD, Federation, allow_all_specs
from tests.test_clues_federation import ZJG_SMJ, credit_code
from tests.test_web_browser import CHROMEDRIVER, CHROMIUM, Person, shots  # noqa: F401 (fixture)

pytest.importorskip("selenium.webdriver", reason="pip install selenium (the dev extra)")
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="headless Chromium is missing: apt-get install -y chromium chromium-driver",
)

REGULATOR = "zjg-smj"


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    specs = [p for p in PROVINCES if p.node_id in ("jiangsu", "zhejiang")]
    f = await Federation(tmp_path, allow_all_specs(tmp_path, specs)).start()
    try:
        await f.nodes["jiangsu"].users.add_user(REGULATOR, PASSWORD, "owner_clerk", department=ZJG_SMJ)
        yield f
    finally:
        await f.close()


@pytest.fixture
def people(fed: Federation, shots: Path) -> Iterator[Callable[[str], Person]]:  # noqa: F811
    made: list[Person] = []

    def make(who: str) -> Person:
        made.append(Person(fed, shots, who))
        return made[-1]

    yield make
    for person in made:
        person.quit()


def wrong_check_character(code: str) -> str:
    return code[:17] + ("0" if code[17] != "0" else "1")


def take_in_at_zhejiang(clerk: Person) -> str:
    """The form with its error at the field, then the corrected clue: its id."""
    clerk.login("zhejiang", "clerk")
    clerk.open("zhejiang", "/web/clues/new")
    Select(clerk.by_id("source")).select_by_value("citizen_report")
    clerk.by_id("region_code").send_keys("320582")
    clerk.by_id("domain-food_drug").click()
    clerk.by_id("credit_code").send_keys(wrong_check_character(credit_code()))
    Select(clerk.by_id("severity")).select_by_value("high")
    clerk.by_id("description").send_keys("供应上海学校的食品企业生产车间卫生条件不达标")
    clerk.by_id("reporter_name").send_keys("王某")
    clerk.by_id("reporter_contact").send_keys("13800000000")
    for field, value in (("acknowledge_within_hours", "4"), ("close_within_days", "7")):
        clerk.by_id(field).clear()  # the form proposes defaults
        clerk.by_id(field).send_keys(value)
    clerk.shot("clue-form-wrong-code")
    clerk.by_id("submit-clue").click()
    clerk.wait_for(lambda d: d.find_element(By.ID, "error-credit_code"))
    clerk.shot("clue-error-at-field")
    assert clerk.by_id("region_code").get_attribute("value") == "320582"  # what was typed stays
    code = clerk.by_id("credit_code")
    code.clear()
    code.send_keys(credit_code())
    if not clerk.by_id("domain-food_drug").is_selected():
        clerk.by_id("domain-food_drug").click()
    clerk.by_id("submit-clue").click()
    clerk.wait_for(lambda d: d.find_element(By.ID, "clue-status"))
    clerk.shot("clue-taken-in")
    return str(clerk.driver.current_url.rsplit("/", 1)[1])


def handle_at_jiangsu(regulator: Person, clue_id: str, document: Path) -> None:
    """The county regulator's queue: acknowledge, findings with a document, close."""
    regulator.login("jiangsu", REGULATOR)
    regulator.open("jiangsu", "/web/clues")
    # The clue arrives through the outbox: the queue is looked at again until it is there.
    regulator.wait_for(lambda d: d.refresh() or d.find_element(By.ID, f"open-{clue_id}"))
    regulator.shot("regulator-queue")
    regulator.click(f"open-{clue_id}")
    regulator.click("acknowledge-food_drug")
    findings = regulator.wait_for(lambda d: d.find_element(By.ID, "findings-food_drug"))
    findings.find_element(By.NAME, "text").send_keys("现场核查属实，已责令整改")
    findings.find_element(By.NAME, "document").send_keys(str(document))
    regulator.shot("regulator-findings")
    findings.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    regulator.wait_for(lambda d: "现场核查属实" in d.page_source)
    closing = regulator.wait_for(lambda d: d.find_element(By.ID, "close-food_drug"))
    closing.find_element(By.NAME, "note").send_keys("复查合格")
    closing.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    regulator.wait_for(lambda d: "close-food_drug" not in d.page_source)
    regulator.shot("regulator-closed")


def steps(p: Person) -> list[str]:
    rows = p.driver.find_elements(By.CSS_SELECTOR, "#clue-history tr[data-step]")
    return [str(r.get_attribute("data-step")) for r in rows]


def closed_loop_at_the_source(clerk: Person, clue_id: str) -> None:
    clerk.open("zhejiang", f"/web/clues/{clue_id}")
    clerk.wait_for(lambda d: d.refresh() or "closed" in steps(clerk), 30)
    seen = steps(clerk)
    assert seen[0] == "submitted" and {"acknowledged", "findings", "closed"} <= set(seen), seen
    clerk.shot("source-closed-loop")


def journey(people: Callable[[str], Person], document: Path) -> None:
    clerk = people("clue-clerk")
    clue_id = take_in_at_zhejiang(clerk)
    handle_at_jiangsu(people("clue-regulator"), clue_id, document)
    closed_loop_at_the_source(clerk, clue_id)


async def test_a_clue_closed_loop_in_a_browser(
    fed: Federation,
    people: Callable[[str], Person],
    tmp_path: Path,
    shots: Path,  # noqa: F811
) -> None:
    document = tmp_path / "report.pdf"
    document.write_bytes(b"%PDF-1.4 inspection report")
    await asyncio.to_thread(journey, people, document)
    print(f"screenshots in {shots}")
