"""Data sharing with the holder on PostgreSQL (skipped unless YRD_TEST_PG_URL is set): the
meter's upsert counts concurrent queries once each, and the disclosure log keeps every one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from simulations.local_federation import PROVINCES, SAMPLES
from tests.support.federation import Federation

PERSON = "310101199003071230"


async def test_concurrent_queries_are_each_metered_and_logged(
    tmp_path: Path, new_pg_schema: Callable[[], str]
) -> None:
    specs = [s for s in PROVINCES if s.node_id in ("shanghai", "jiangsu")]
    fed = await Federation(tmp_path, specs, database_urls={"jiangsu": new_pg_schema()}).start()
    try:
        js = fed.nodes["jiangsu"]
        assert js.db.is_sqlite is False
        loaded = await js.backend.data_holder.load_records_file(SAMPLES / "data_records" / "jiangsu.json")
        assert loaded["js.nucleic-acid"] == 2
        body = {
            "subject": {"kind": "person", "id": PERSON},
            "purpose": "health-check",
            "resources": [{"id": "js.nucleic-acid"}],
            "consent": {
                "given_by": "张三",
                "subject_id": PERSON,
                "resources": ["js.nucleic-acid"],
                "purpose": "health-check",
                "until": "2099-01-01T00:00:00+08:00",
            },
        }
        answers = await asyncio.gather(
            *(fed.call("shanghai", "POST", "/api/v1/queries", json=body) for _ in range(6))
        )
        assert all(a[1]["items"][0]["outcome"] == "answered" for a in answers), answers
        status, meter = await fed.call("jiangsu", "GET", "/api/v1/data-meter", user="supervisor")
        assert status == 200
        assert meter["total"] == 6
        status, log = await fed.call("jiangsu", "GET", f"/api/v1/disclosures?subject_id={PERSON}")
        assert len(log["disclosures"]) == 6
    finally:
        await fed.close()
