"""The demo's sample clue (simulations/demo/sample.py) runs its whole closed loop against
real nodes: taken in at Shanghai, handled by Jiangsu's supervisor, completed at the source."""

from __future__ import annotations

from pathlib import Path

from core.clock import SystemClock
from simulations.demo.layout import Credentials, DemoNode, NodeAccounts
from simulations.demo.sample import show_sample_clue
from simulations.local_federation import PROVINCES
from tests.support.federation import PASSWORD, Federation, allow_all_specs


async def test_the_demo_clue_completes_its_loop(tmp_path: Path) -> None:
    specs = [s for s in allow_all_specs(tmp_path, PROVINCES) if s.node_id in ("shanghai", "jiangsu")]
    fed = await Federation(tmp_path, specs).start()
    try:
        cred = {u: Credentials(u, PASSWORD) for u in ("clerk", "supervisor")}
        accounts = NodeAccounts(cred["clerk"], cred["clerk"], cred["supervisor"], cred["clerk"], "")
        demo = {s.node_id: DemoNode(s, fed.configs[s.node_id], accounts) for s in specs}
        lines: list[str] = []
        last = await show_sample_clue(demo["shanghai"], demo["jiangsu"], SystemClock(), lines.append)
    finally:
        await fed.close()
    assert last == "completed", lines
    steps = [line.split()[2] for line in lines if " ms " in line]
    assert steps == [
        "submitted",
        "dispatched",
        "acknowledged",
        "findings",
        "rectification_ordered",
        "closed",
        "completed",
    ]
    assert any("张家港市市场监督管理局" in line for line in lines)
