"""Both counter doors over real nodes: idempotent retries answered before quotas, keys
reused for another request refused, and release, worklist and decision over gRPC."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import grpc
import pytest
from yrd.counter.v1 import counter_pb2, counter_pb2_grpc

from node.grpc_errors import REASON_KEY
from simulations.local_federation import PROVINCES, NodeSpec
from simulations.sample_applications import application_body
from tests.support.federation import ALLOW_ALL, PASSWORD, Federation, allow_all_specs, node_channel

# Allow everything, but only one outbound application per service per minute from Jiangsu.
ONE_PER_SERVICE = (
    ALLOW_ALL
    + """\
quotas:
  - id: js-one-per-service
    per: service
    direction: outbound
    per_minute: 1
    burst: 1
"""
)


def _pair(tmp: Path, *, shipped: bool = False) -> list[NodeSpec]:
    specs = PROVINCES if shipped else allow_all_specs(tmp, PROVINCES)
    return [s for s in specs if s.node_id in ("jiangsu", "zhejiang")]


def _body(fed: Federation, service_id: str, seed: int) -> dict[str, object]:
    return application_body(fed.nodes["jiangsu"].index.get(service_id), random.Random(seed))


async def test_a_retry_is_answered_before_the_quota_and_a_reused_key_is_refused(tmp_path: Path) -> None:
    specs = _pair(tmp_path)
    bundle = tmp_path / "bundles" / "jiangsu-quota.yaml"
    bundle.write_text(ONE_PER_SERVICE.format(node="jiangsu"))
    specs = [dataclasses.replace(s, bundle=bundle) if s.node_id == "jiangsu" else s for s in specs]
    fed = await Federation(tmp_path, specs).start()
    try:
        body = _body(fed, "zj.industrial-licence", 1)
        status, first = await fed.submit("jiangsu", body, "q-1")
        assert status == 201, first
        status, refused = await fed.submit("jiangsu", _body(fed, "zj.industrial-licence", 2), "q-2")
        assert (status, refused["code"]) == (403, "quota")
        # The counter's retry of the accepted application: its answer, not a quota refusal.
        status, again = await fed.submit("jiangsu", body, "q-1")
        assert (status, again["id"]) == (201, first["id"])
        # The same key for another matter is not silently answered with the first one.
        other = _body(fed, "zj.medical.cross-region-filing", 3)
        status, problem = await fed.submit("jiangsu", other, "q-1")
        assert (status, problem["code"]) == (422, "idempotency_key_reused")
    finally:
        await fed.close()


async def test_worklist_and_decision_over_grpc(tmp_path: Path) -> None:
    fed = await Federation(tmp_path, _pair(tmp_path)).start()
    try:
        status, created = await fed.submit("jiangsu", _body(fed, "zj.industrial-licence", 4), "w-1")
        assert status == 201, created
        await fed.wait_status("jiangsu", created["id"], {"in_review"})
        meta = (("authorization", f"Bearer {await fed.login('zhejiang', 'supervisor')}"),)
        async with node_channel(fed.nodes["zhejiang"]) as ch:
            stub = counter_pb2_grpc.CounterServiceStub(ch)
            queue = await stub.ListWorklist(counter_pb2.ListWorklistRequest(), metadata=meta)
            item = next(a for a in queue.applications if a.id == created["id"])
            assert item.origin_node == "jiangsu" and item.applicant.name
            assert isinstance(json.loads(item.form_json), dict)
            decided = await stub.DecideApplication(
                counter_pb2.DecideApplicationRequest(
                    id=item.id, decision=counter_pb2.DECISION_REJECT, reason="材料不全 / incomplete"
                ),
                metadata=meta,
            )
            assert decided.id == item.id
            with pytest.raises(grpc.aio.AioRpcError) as err:  # decided once, not twice
                await stub.DecideApplication(
                    counter_pb2.DecideApplicationRequest(id=item.id, decision=counter_pb2.DECISION_APPROVE),
                    metadata=meta,
                )
            assert err.value.code() in (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.NOT_FOUND)
        await fed.wait_status("jiangsu", created["id"], {"rejected"})
    finally:
        await fed.close()


async def test_four_eyes_release_over_grpc(tmp_path: Path) -> None:
    fed = await Federation(tmp_path, _pair(tmp_path, shipped=True)).start()
    try:
        await fed.nodes["jiangsu"].users.add_user("clerk2", PASSWORD, "clerk")
        await fed.nodes["jiangsu"].users.add_user("supervisor2", PASSWORD, "supervisor")
        status, created = await fed.submit("jiangsu", _body(fed, "zj.hangzhou.hukou.migration", 5), "h-1")
        assert (status, created["status"]) == (201, "awaiting_approval"), created
        async with node_channel(fed.nodes["jiangsu"]) as ch:
            stub = counter_pb2_grpc.CounterServiceStub(ch)
            request = counter_pb2.ReleaseApplicationRequest(id=created["id"])
            # A second counter clerk may not release: four-eyes needs a supervisor.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                clerk2 = (("authorization", f"Bearer {await fed.login('jiangsu', 'clerk2')}"),)
                await stub.ReleaseApplication(request, metadata=clerk2)
            assert dict(err.value.trailing_metadata() or ()).get(REASON_KEY) == "role_required"
            second = (("authorization", f"Bearer {await fed.login('jiangsu', 'supervisor2')}"),)
            released = await stub.ReleaseApplication(request, metadata=second)
        assert released.id == created["id"] and released.owner_node == "zhejiang"
        await fed.wait_status("jiangsu", created["id"], {"in_review"})
    finally:
        await fed.close()
