"""The gRPC face of a node: health, reflection, the counter service and envelope refusals."""

from __future__ import annotations

import base64
import json
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from yrd.counter.v1 import counter_pb2, counter_pb2_grpc
from yrd.peer.v1 import peer_pb2, peer_pb2_grpc

from core.keys import NodeKey
from node.trust.envelope import seal_envelope
from simulations.local_federation import PROVINCES
from simulations.sample_applications import application_body
from tests.support.federation import (
    Federation,
    allow_all_specs,
    grpc_reason,
    grpc_submission,
    node_channel,
)

DELIVER = "/yrd.peer.v1.PeerService/Deliver"


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    specs = [s for s in allow_all_specs(tmp_path, PROVINCES) if s.node_id in ("jiangsu", "zhejiang")]
    f = await Federation(tmp_path, specs).start()
    try:
        yield f
    finally:
        await f.close()


async def test_health_and_reflection(fed: Federation) -> None:
    async with node_channel(fed.nodes["zhejiang"]) as ch:
        answer = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = {s.name async for r in responses for s in r.list_services_response.service}
    assert {"yrd.peer.v1.PeerService", "yrd.counter.v1.CounterService", "grpc.health.v1.Health"} <= names


async def test_counter_service_submits_and_reports(fed: Federation) -> None:
    body = application_body(
        fed.nodes["jiangsu"].index.get("zj.medical.cross-region-filing"), random.Random(2)
    )
    meta = (("authorization", f"Bearer {fed.tokens['jiangsu']}"),)
    async with node_channel(fed.nodes["jiangsu"]) as ch:
        stub = counter_pb2_grpc.CounterServiceStub(ch)
        created = await stub.SubmitApplication(
            counter_pb2.SubmitApplicationRequest(
                service_id=body["service_id"],
                applicant=counter_pb2.Applicant(**body["applicant"]),
                form_json=json.dumps(body["form"]),
                attachments=[
                    peer_pb2.Attachment(
                        material=a["material"],
                        filename=a["filename"],
                        content_type=a["content_type"],
                        data=base64.b64decode(a["data"]),
                    )
                    for a in body["attachments"]
                ],
                consent=True,
                idempotency_key="grpc-1",
            ),
            metadata=meta,
        )
        assert created.owner_node == "zhejiang"
        await fed.wait_status("jiangsu", created.id, {"completed", "needs_materials"})
        got = await stub.GetApplication(counter_pb2.GetApplicationRequest(id=created.id), metadata=meta)
        assert got.id == created.id and len(got.history) >= 4
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListServices(counter_pb2.ListServicesRequest())
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SubmitApplication(
                counter_pb2.SubmitApplicationRequest(
                    service_id="nope",
                    applicant=counter_pb2.Applicant(**body["applicant"]),
                    consent=True,
                    idempotency_key="g2",
                ),
                metadata=meta,
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert grpc_reason(err.value) == "unknown_service"


async def test_peer_service_refuses_replays_and_strangers(fed: Federation) -> None:
    jiangsu = fed.nodes["jiangsu"]
    zj = fed.nodes["zhejiang"]
    body = peer_pb2.DeliverItem().SerializeToString()
    env = seal_envelope(
        jiangsu.trust.key,
        sender="jiangsu",
        destination="zhejiang",
        method=DELIVER,
        body=body,
        now_ms=jiangsu.clock.now_ms(),
    )
    stranger = seal_envelope(
        NodeKey.generate(),
        sender="jiangsu",
        destination="zhejiang",
        method=DELIVER,
        body=body,
        now_ms=jiangsu.clock.now_ms(),
    )
    async with node_channel(zj) as ch:
        stub = peer_pb2_grpc.PeerServiceStub(ch)
        first = await stub.Deliver(peer_pb2.DeliverRequest(envelopes=[env]))
        assert peer_pb2.Receipt.FromString(first.receipts[0].body).reason_code == "malformed_body"
        for bad, code in ((env, "nonce_replayed"), (stranger, "unknown_key")):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Deliver(peer_pb2.DeliverRequest(envelopes=[bad]))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert grpc_reason(err.value) == code


async def test_an_unparsable_query_is_the_callers_fault_not_ours(fed: Federation) -> None:
    jiangsu = fed.nodes["jiangsu"]
    env = seal_envelope(
        jiangsu.trust.key,
        sender="jiangsu",
        destination="zhejiang",
        method="/yrd.peer.v1.PeerService/GetCatalogue",
        body=b"\xff\xff\xff",
        now_ms=jiangsu.clock.now_ms(),
    )
    async with node_channel(fed.nodes["zhejiang"]) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await peer_pb2_grpc.PeerServiceStub(ch).GetCatalogue(peer_pb2.GetCatalogueRequest(envelope=env))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert grpc_reason(err.value) == "malformed_body"


async def test_counter_service_offers_release_worklist_and_decision(fed: Federation) -> None:
    meta = (("authorization", f"Bearer {await fed.login('zhejiang', 'supervisor')}"),)
    async with node_channel(fed.nodes["zhejiang"]) as ch:
        stub = counter_pb2_grpc.CounterServiceStub(ch)
        queue = await stub.ListWorklist(counter_pb2.ListWorklistRequest(), metadata=meta)
        assert list(queue.applications) == []
        long_id = "x" * 5000  # echoed whole, the details would overflow the metadata limit
        for call in (
            stub.ReleaseApplication(counter_pb2.ReleaseApplicationRequest(id=long_id), metadata=meta),
            stub.DecideApplication(
                counter_pb2.DecideApplicationRequest(id=long_id, decision=counter_pb2.DECISION_APPROVE),
                metadata=meta,
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert len(err.value.details() or "") < 400
        # The decision goes through the HTTP door's contract: a refusal must say why.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.DecideApplication(
                counter_pb2.DecideApplicationRequest(id="a", decision=counter_pb2.DECISION_REJECT),
                metadata=meta,
            )
        assert (err.value.code(), grpc_reason(err.value)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "missing_field",
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListWorklist(counter_pb2.ListWorklistRequest())
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_grpc_submissions_meet_the_http_limits_and_idempotency(fed: Federation) -> None:
    defn = fed.nodes["jiangsu"].index.get("zj.medical.cross-region-filing")
    body = application_body(defn, random.Random(4))
    meta = (("authorization", f"Bearer {fed.tokens['jiangsu']}"),)

    def request(key: str, **overrides: object) -> counter_pb2.SubmitApplicationRequest:
        return grpc_submission(body, key, **overrides)

    def files(count: int, size: int, filename: str = "f.pdf") -> list[peer_pb2.Attachment]:
        one = peer_pb2.Attachment(
            material="m", filename=filename, content_type="application/pdf", data=b"x" * size
        )
        return [one] * count

    mib = 1024 * 1024
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    async with node_channel(fed.nodes["jiangsu"], options=[("grpc.max_send_message_length", 32 * mib)]) as ch:
        stub = counter_pb2_grpc.CounterServiceStub(ch)
        # (request, the codes allowed, the reason); None: refused by the transport's own limit.
        refusals: list[tuple[counter_pb2.SubmitApplicationRequest, set[grpc.StatusCode], str | None]] = [
            (
                request("g-9mib", attachments=files(3, 3 * mib)),
                {invalid, grpc.StatusCode.RESOURCE_EXHAUSTED},
                None,
            ),
            (request("g-7mib", attachments=files(2, 7 * mib // 2)), {invalid}, "attachments_too_large"),
            (request("g-file", attachments=files(1, 5 * mib + 1)), {invalid}, "file_too_large"),
            (request("g-count", attachments=files(11, 1)), {invalid}, "too_many_attachments"),
            (request("g-name", attachments=files(1, 1, "../x")), {invalid}, "bad_filename"),
            (request("g-deep", form_json="[" * 5000 + "]" * 5000), {invalid}, "malformed_json"),
            (request("g-deep2", form_json='{"a":' + "[" * 40 + "]" * 40 + "}"), {invalid}, "too_deep"),
            (request("g-dup", form_json='{"a": 1, "a": 2}'), {invalid}, "duplicate_key"),
            (request("g-text", purpose="x" * 513), {invalid}, "bad_type"),
            (request("k" * 129), {invalid}, "bad_header"),
        ]
        for bad, codes, why in refusals:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.SubmitApplication(bad, metadata=meta)
            assert err.value.code() in codes, why
            if why is not None:
                assert grpc_reason(err.value) == why
        first = await stub.SubmitApplication(request("g-1"), metadata=meta)
        again = await stub.SubmitApplication(request("g-1"), metadata=meta)
        assert again.id == first.id
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SubmitApplication(request("g-1", consent=False), metadata=meta)
        assert grpc_reason(err.value) == "idempotency_key_reused"


async def test_garbage_bytes_on_a_grpc_method_log_no_traceback(
    fed: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    async with node_channel(fed.nodes["jiangsu"]) as ch:
        for method in ("/yrd.counter.v1.CounterService/SubmitApplication", DELIVER):
            call = ch.unary_unary(method, request_serializer=None, response_deserializer=None)
            with caplog.at_level(logging.DEBUG), pytest.raises(grpc.aio.AioRpcError) as err:
                await call(b"\xff\xff\xff\xff")
            assert err.value.code() != grpc.StatusCode.OK
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
