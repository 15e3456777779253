"""The gRPC counter shows a bundle's parts as the JSON API does: same names, owners,
statuses, deadlines, attempts and results, read from the same backend view; and corrects a
failed part through the same backend method, checks and roles as the JSON API."""

from __future__ import annotations

import json
import random
from typing import Any

import grpc
import pytest
from yrd.counter.v1 import counter_pb2, counter_pb2_grpc
from yrd.peer.v1 import peer_pb2

from node.grpc_errors import REASON_KEY
from simulations.sample_applications import application_body
from tests.support.federation import PASSWORD, Federation, node_channel
from tests.test_bundles_federation import wait_parts
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


async def test_a_failed_part_is_corrected_over_grpc(fed: Federation) -> None:  # noqa: F811
    bundle_id = await rejected_filing(fed)
    await fed.nodes["anhui"].users.add_user("op", PASSWORD, "operator")

    def correction(component: str, form: str) -> counter_pb2.ResubmitComponentRequest:
        return counter_pb2.ResubmitComponentRequest(id=bundle_id, component=component, form_json=form)

    fixed = json.dumps({"company_name": "上海示例科技股份有限公司"})
    async with node_channel(fed.nodes["anhui"]) as ch:
        stub = counter_pb2_grpc.CounterServiceStub(ch)
        refused: dict[str, tuple[grpc.StatusCode, str]] = {}
        for user, request in (
            ("clerk", correction("hq_filing", '{"company_name": 1, "company_name": 2}')),
            ("clerk", correction("hq_filing", "[]")),
            ("clerk", correction("licence", fixed)),  # a part that did not fail
            ("clerk-b", correction("hq_filing", fixed)),  # another clerk's bundle
            ("op", correction("hq_filing", fixed)),
        ):
            meta = (("authorization", f"Bearer {await fed.login('anhui', user)}"),)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.ResubmitComponent(request, metadata=meta)
            refused[f"{user} {request.component} {request.form_json[:5]}"] = (
                err.value.code(),
                dict(err.value.trailing_metadata() or ()).get(REASON_KEY, ""),
            )
            if err.value.code() == grpc.StatusCode.INVALID_ARGUMENT:
                assert "(field form_json)" in (err.value.details() or ""), err.value.details()
        assert refused == {
            'clerk hq_filing {"com': (grpc.StatusCode.INVALID_ARGUMENT, "duplicate_key"),
            "clerk hq_filing []": (grpc.StatusCode.INVALID_ARGUMENT, "not_an_object"),
            'clerk licence {"com': (grpc.StatusCode.ALREADY_EXISTS, "component_not_failed"),
            'clerk-b hq_filing {"com': (grpc.StatusCode.NOT_FOUND, "unknown_application"),
            'op hq_filing {"com': (grpc.StatusCode.PERMISSION_DENIED, "role_required"),
        }
        view = await wait_parts(fed, "anhui", bundle_id, {"hq_filing": {"rejected"}})
        assert {c["name"]: c["attempt"] for c in view["components"]}["hq_filing"] == 1

        meta = (("authorization", f"Bearer {fed.tokens['anhui']}"),)
        done = await stub.ResubmitComponent(correction("hq_filing", fixed), metadata=meta)
    assert (done.id, done.component, done.attempt, done.status) == (bundle_id, "hq_filing", 2, "resubmitted")
    view = await wait_parts(fed, "anhui", bundle_id, {"hq_filing": {"in_review"}})
    assert {c["name"]: c["attempt"] for c in view["components"]}["hq_filing"] == 2
    _, work = await fed.call("shanghai", "GET", "/api/v1/worklist", user="supervisor")
    (again,) = [a for a in work["applications"] if a["service_id"] == "sh.market.branch-filing"]
    assert again["form"]["company_name"] == "上海示例科技股份有限公司"


def _single(running: Federation) -> dict[str, Any]:
    return application_body(
        running.nodes["anhui"].index.get("sh.medical.cross-region-filing"), random.Random(1)
    )
