"""The demo's health-code screen (simulations/demo/health_screen.py) against real nodes laid
out as the demo lays them out: one merged view from three provinces with consent, refused at
every holder without."""

from __future__ import annotations

from pathlib import Path

from core.clock import SystemClock
from simulations.demo.health_screen import SCREEN, show_health_screen
from simulations.demo.layout import Credentials, DemoNode, NodeAccounts
from simulations.local_federation import PROVINCES
from tests.support.federation import PASSWORD, Federation


async def test_the_demo_health_screen_merges_three_provinces(tmp_path: Path) -> None:
    specs = [s for s in PROVINCES if s.node_id in ("shanghai", "jiangsu", "zhejiang")]
    fed = await Federation(tmp_path, specs).start()
    try:
        clerk = Credentials("clerk", PASSWORD)
        accounts = NodeAccounts(clerk, clerk, Credentials("supervisor", PASSWORD), clerk, "")
        asker = DemoNode(specs[0], fed.configs["shanghai"], accounts)
        lines: list[str] = []
        view = await show_health_screen(asker, SystemClock(), lines.append)
    finally:
        await fed.close()
    items = {i["resource_id"]: i for i in view["items"]}
    assert list(items) == list(SCREEN)
    assert {i["holder_node"] for i in items.values()} == {"shanghai", "jiangsu", "zhejiang"}
    assert all(i["outcome"] == "answered" for i in items.values()), lines
    assert sum("consent_missing" in line for line in lines) == 3, lines
