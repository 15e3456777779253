"""The demo's sample journey, run against an in-process federation: the single matter and
then the 新生儿出生 bundle, submitted once at the Jiangsu counter and completed part by part."""

from __future__ import annotations

from pathlib import Path

from core.clock import SystemClock
from simulations.demo.layout import Credentials, DemoNode, NodeAccounts
from simulations.demo.sample import SAMPLE_ORIGIN, SAMPLE_OWNER, show_sample_journey
from tests.support.federation import PASSWORD, Federation, allow_all_specs


def demo_node(fed: Federation, node_id: str) -> DemoNode:
    clerk = Credentials("clerk", PASSWORD)
    spec = next(s for s in fed.specs if s.node_id == node_id)
    accounts = NodeAccounts(clerk=clerk, operator=clerk, supervisor=clerk, owner_clerk=clerk, department="")
    return DemoNode(spec=spec, config=fed.configs[node_id], accounts=accounts)


async def test_the_sample_journey_shows_a_bundle_completed_part_by_part(tmp_path: Path) -> None:
    fed = await Federation(tmp_path, allow_all_specs(tmp_path)).start()
    lines: list[str] = []
    try:
        status = await show_sample_journey(
            demo_node(fed, SAMPLE_ORIGIN), demo_node(fed, SAMPLE_OWNER), SystemClock(), lines.append
        )
    finally:
        await fed.close()
    text = "\n".join(lines)
    assert status == "completed", text
    assert "zj.hangzhou.newborn" in text
    assert "birth_certificate completed, hukou completed, medical completed, social_card completed" in text
    assert "杭州市公安局 (zhejiang)" in text and "浙江省人力资源和社会保障厅 (zhejiang)" in text
