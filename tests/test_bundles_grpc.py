"""The gRPC counter shows a bundle's parts as the JSON API does: same names, owners,
statuses, deadlines, attempts and results, read from the same backend view."""

from __future__ import annotations

import random
from typing import Any

from yrd.counter.v1 import counter_pb2, counter_pb2_grpc
from yrd.peer.v1 import peer_pb2

from simulations.sample_applications import application_body
from tests.support.federation import Federation, node_channel
from tests.test_web_bundles import fed, rejected_filing  # noqa: F401 (fed is the fixture)


async def test_get_application_carries_the_components_of_a_bundle(
    fed: Federation,  # noqa: F811 (the imported fixture)
) -> None:
    bundle_id = await rejected_filing(fed)
    status, view = await fed.call("anhui", "GET", f"/api/v1/applications/{bundle_id}")
    assert status == 200, view
    async with node_channel(fed.nodes["anhui"]) as ch:
        stub = counter_pb2_grpc.CounterServiceStub(ch)
        meta = (("authorization", f"Bearer {await fed.login('anhui', 'clerk')}"),)
        got = await stub.GetApplication(counter_pb2.GetApplicationRequest(id=bundle_id), metadata=meta)
    assert got.status == peer_pb2.APPLICATION_STATUS_NEEDS_MATERIALS
    assert got.bundle_due_at == view["bundle_due_at"] != ""
    assert [
        (c.name, c.owner_node, c.department, c.status, c.attempt, c.due_at, c.application_id, list(c.after))
        for c in got.components
    ] == [
        (
            c["name"],
            c["owner_node"],
            c["department"],
            c["status"],
            c["attempt"],
            c["due_at"],
            c["application_id"],
            c["after"],
        )
        for c in view["components"]
    ]
    parts = {c.name: c for c in got.components}
    assert parts["hq_filing"].status == "rejected" and "总公司名称与登记不符" in parts["hq_filing"].reason
    assert parts["licence"].results["credit_code"] == view["results"]["licence.credit_code"]


async def test_a_single_matter_has_no_components(fed: Federation) -> None:  # noqa: F811
    status, created = await fed.submit("anhui", _single(fed), "single-1")
    assert status == 201, created
    async with node_channel(fed.nodes["anhui"]) as ch:
        stub = counter_pb2_grpc.CounterServiceStub(ch)
        meta = (("authorization", f"Bearer {await fed.login('anhui', 'clerk')}"),)
        got = await stub.GetApplication(counter_pb2.GetApplicationRequest(id=created["id"]), metadata=meta)
    assert list(got.components) == [] and got.bundle_due_at == ""


def _single(running: Federation) -> dict[str, Any]:
    return application_body(
        running.nodes["anhui"].index.get("sh.medical.cross-region-filing"), random.Random(1)
    )
