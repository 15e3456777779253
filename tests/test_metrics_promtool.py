"""/metrics as Prometheus's own linter reads it, after real traffic has filled the labelled
series: names ``yrd_<subsystem>_<thing>_<unit>``, help on every metric, bounded labels."""

from __future__ import annotations

import asyncio
import random
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from subprocess import PIPE, STDOUT

import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.ids import new_id
from simulations.sample_applications import application_body
from tests.support.federation import Federation
from tests.test_web_pages import WORKLIST_SERVICE, start_web_federation

# "ok": a 1/0 state gauge (yrd_policy_bundle_ok), Prometheus's `up` convention.
UNITS = ("total", "seconds", "entries", "envelopes", "peers", "bytes", "info", "ok")
NAME = re.compile(r"yrd_[a-z0-9]+_[a-z0-9_]+_(" + "|".join(UNITS) + r")")
# A label value that looks like an application id (or any long token) would mint a series
# per application.
ID_LIKE = re.compile(r"[0-9a-f]{16,}|[0-9A-Z]{20,}")


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    f = await start_web_federation(tmp_path)
    try:
        yield f
    finally:
        await f.close()


async def _traffic(fed: Federation) -> str:
    body = application_body(fed.nodes["jiangsu"].index.get(WORKLIST_SERVICE), random.Random(3))
    status, created = await fed.submit("jiangsu", body, "metrics-1")
    assert status == 201, created
    await fed.wait_status("jiangsu", created["id"], {"in_review"})
    status, _ = await fed.call(
        "zhejiang",
        "POST",
        f"/api/v1/applications/{created['id']}/decision",
        json={"decision": "approve"},
        user="supervisor",
    )
    assert status == 200
    await fed.wait_status("jiangsu", created["id"], {"completed"})
    for node in fed.nodes.values():
        await node.backend.refresh_gauges()
    assert fed.http is not None
    async with fed.http.get(fed.url("jiangsu", "/metrics")) as r:
        assert r.status == 200
        return await r.text()


async def test_metrics_pass_promtool_and_our_naming_rules(fed: Federation) -> None:
    text = await _traffic(fed)
    families = [f for f in text_string_to_metric_families(text) if f.name.startswith("yrd_")]
    names = {f.name for f in families}
    for wanted in (
        "yrd_http_request_duration_seconds",
        "yrd_owner_decision_duration_seconds",
        "yrd_outbox_queue_depth_entries",
        "yrd_outbox_dead_letters_entries",
        "yrd_envelopes_verified",
    ):
        assert wanted in names, sorted(names)
    for family in families:
        if family.name.endswith("_created") and family.name.removesuffix("_created") in names:
            continue  # prometheus_client's creation time of a counter or histogram
        full = family.name + ("_total" if family.type == "counter" else "")
        assert NAME.fullmatch(full), full
        assert family.documentation, family.name
        for sample in family.samples:
            for value in sample.labels.values():
                assert not ID_LIKE.search(value), (family.name, value)
    app_id = new_id(fed.clock.now_ms())
    assert app_id[:10] not in text
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is missing: apt-get install prometheus")
    proc = await asyncio.create_subprocess_exec(
        promtool, "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(text.encode()), 60)
    assert proc.returncode == 0, out.decode()
