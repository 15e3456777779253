"""A bundle on PostgreSQL: the lead (Shanghai) and the counter (Zhejiang) on their own schemas.
Skipped unless YRD_TEST_PG_URL is set (CI sets it)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from simulations.local_federation import PROVINCES
from simulations.sample_applications import application_body
from tests.support.federation import Federation, allow_all_specs


async def test_enterprise_deregistration_on_postgres(
    tmp_path: Path, new_pg_schema: Callable[[], str]
) -> None:
    specs = [s for s in allow_all_specs(tmp_path, PROVINCES) if s.node_id in ("shanghai", "zhejiang")]
    fed = await Federation(
        tmp_path, specs, database_urls={"shanghai": new_pg_schema(), "zhejiang": new_pg_schema()}
    ).start()
    try:
        assert fed.nodes["shanghai"].db.is_sqlite is False
        defn = fed.nodes["zhejiang"].index.get("sh.enterprise-deregistration")
        status, created = await fed.submit("zhejiang", application_body(defn, random.Random(8)), "pg-b1")
        assert status == 201, created
        view = await fed.wait_status("zhejiang", created["id"], {"completed"})
        parts = {c["name"]: c for c in view["components"]}
        assert {p["status"] for p in parts.values()} == {"completed"}
        assert view["results"]["tax.tax_clearance_number"] == parts["tax"]["results"]["tax_clearance_number"]
    finally:
        await fed.close()
