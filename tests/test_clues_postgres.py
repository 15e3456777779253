"""Clues with both nodes on PostgreSQL (skipped unless YRD_TEST_PG_URL is set): the closed
loop and escalation, with the row locks the escalation check and a department's step take."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from simulations.local_federation import PROVINCES
from tests.support.federation import PASSWORD, Federation, allow_all_specs
from tests.test_clues_federation import SZ_SMJ, ZJG_SMJ, SteppedClock, advance, clue_body, submit, wait_steps


async def test_clue_loop_and_escalation_on_postgres(tmp_path: Path, new_pg_schema: Callable[[], str]) -> None:
    specs = [s for s in allow_all_specs(tmp_path, PROVINCES) if s.node_id in ("shanghai", "jiangsu")]
    clock = SteppedClock()
    urls = {"shanghai": new_pg_schema(), "jiangsu": new_pg_schema()}
    fed = await Federation(tmp_path, specs, clock=clock, database_urls=urls).start()
    try:
        js = fed.nodes["jiangsu"]
        assert js.db.is_sqlite is False
        await js.users.add_user("zjg-smj", PASSWORD, "owner_clerk", department=ZJG_SMJ)
        done = await submit(fed, clue_body(), "pg-clue-1")
        late = await submit(fed, clue_body(), "pg-clue-2")
        await wait_steps(fed, done, 2)
        await wait_steps(fed, late, 2)
        path = f"/api/v1/clues/{done}"
        assert (await fed.call("jiangsu", "POST", path + "/acknowledge", json={}, user="zjg-smj"))[0] == 200
        await advance(fed, 3601)
        # A department's step and two escalation checks at once: each step is numbered once.
        results = await asyncio.gather(
            fed.call("jiangsu", "POST", path + "/findings", json={"text": "属实"}, user="zjg-smj"),
            js.backend.clues.tick(),
            js.backend.clues.tick(),
        )
        assert results[0][0] == 200
        status, view = await fed.call("jiangsu", "GET", f"/api/v1/clues/{late}", user="supervisor")
        assert status == 200 and view["tasks"][0]["department"] == SZ_SMJ
        assert view["tasks"][0]["escalations"] == 1
        assert (await fed.call("jiangsu", "POST", path + "/close", json={}, user="zjg-smj"))[0] == 200
        view = await wait_steps(fed, done, 6)
        assert [h["step"] for h in view["history"]] == [
            "submitted",
            "dispatched",
            "acknowledged",
            "findings",
            "closed",
            "completed",
        ]
    finally:
        await fed.close()
