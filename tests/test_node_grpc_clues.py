"""Supervision clues at the gRPC counter (docs/clues.md), over the in-process federation of
tests/test_clues_federation.py: the whole closed loop through CounterService, bad input
refused with the field named, the roles of node/counter/backend.py, and one idempotency key
meaning one clue at either door."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from yrd.counter.v1 import counter_pb2, counter_pb2_grpc
from yrd.peer.v1 import peer_pb2

from node.counter.contract import CounterLimits
from tests.support.federation import PASSWORD, Federation, grpc_reason, node_channel
from tests.test_clues_federation import ZJG_SMJ, clue_body, credit_code, fed, wait_steps  # noqa: F401 (fixture)

# A credit code of the right shape whose check character is wrong.
WRONG_CHECK = credit_code()[:17] + ("1" if credit_code()[17] != "1" else "2")


def grpc_clue(body: dict[str, Any], key: str) -> counter_pb2.SubmitClueRequest:
    """tests/test_clues_federation.py's JSON body as the gRPC message."""
    return counter_pb2.SubmitClueRequest(
        idempotency_key=key,
        source=body["source"],
        region_code=body["region_code"],
        domains=body["domains"],
        subject=counter_pb2.ClueSubject(**body["subject"]),
        severity=body["severity"],
        description=body["description"],
        reporter=counter_pb2.ClueReporter(**body.get("reporter", {})),
        acknowledge_within_hours=body["acknowledge_within_hours"],
        close_within_days=body["close_within_days"],
    )


async def test_a_clue_closes_its_loop_over_grpc(fed: Federation) -> None:  # noqa: F811
    clerk = (("authorization", f"Bearer {await fed.login('shanghai', 'clerk')}"),)
    regulator = (("authorization", f"Bearer {await fed.login('jiangsu', 'zjg-smj')}"),)
    async with node_channel(fed.nodes["shanghai"]) as sh_ch, node_channel(fed.nodes["jiangsu"]) as js_ch:
        source = counter_pb2_grpc.CounterServiceStub(sh_ch)
        receiver = counter_pb2_grpc.CounterServiceStub(js_ch)
        created = await source.SubmitClue(grpc_clue(clue_body(), "grpc-clue-1"), metadata=clerk)
        assert created.owner_node == "jiangsu" and created.status == "submitted"
        await wait_steps(fed, created.id, 2)

        queue = await receiver.ListClues(counter_pb2.ListCluesRequest(), metadata=regulator)
        assert [c.id for c in queue.clues] == [created.id]
        assert queue.clues[0].file.reporter.name == "王某"  # the sealed file, opened at the receiver
        (task,) = queue.clues[0].tasks
        assert (task.department, task.level, task.status) == (ZJG_SMJ, "county", "dispatched")

        acked = await receiver.AcknowledgeClue(
            counter_pb2.AcknowledgeClueRequest(id=created.id), metadata=regulator
        )
        assert acked.clue.tasks[0].status == "acknowledged"
        report = peer_pb2.Document(name="现场检查笔录.pdf", content_type="application/pdf", data=b"%PDF")
        found = await receiver.RecordClueFindings(
            counter_pb2.RecordClueFindingsRequest(
                id=created.id,
                text="现场检查属实，责令停产整改",
                rectification="7日内完成整改并复查",
                documents=[report],
            ),
            metadata=regulator,
        )
        assert found.clue.tasks[0].rectification == "7日内完成整改并复查"
        closed = await receiver.CloseClue(
            counter_pb2.CloseClueRequest(id=created.id, note="复查合格"), metadata=regulator
        )
        assert closed.clue.status == "closed"

        await wait_steps(fed, created.id, 7)
        got = await source.GetClue(counter_pb2.GetClueRequest(id=created.id), metadata=clerk)
    clue = got.clue
    assert [h.step for h in clue.history] == [
        "submitted",
        "dispatched",
        "acknowledged",
        "findings",
        "rectification_ordered",
        "closed",
        "completed",
    ]
    assert clue.status == "completed" and [r.outcome for r in clue.receipts] == ["accepted"]
    assert clue.history[3].findings.documents[0].data == b"%PDF"  # sealed to Shanghai, opened there
    assert not clue.HasField("file") and not clue.tasks  # the counter sees the loop, not the file


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"region_code": "32058"}, "bad_type", "region_code"),
        ({"domains": ["weather"]}, "bad_value", "domains[0]"),
        ({"description": ""}, "bad_type", "description"),
        ({"acknowledge_within_hours": 0}, "bad_type", "acknowledge_within_hours"),
        ({"subject": {"credit_code": WRONG_CHECK}}, "invalid_credit_code", "subject.credit_code"),
        (
            {"documents": [{"name": "a.pdf", "content_type": "pdf", "data": ""}]},
            "bad_content_type",
            "documents[0].content_type",
        ),
    ],
)
async def test_bad_clues_are_refused_naming_the_field(
    fed: Federation,  # noqa: F811
    change: dict[str, Any],
    code: str,
    field: str,
) -> None:
    body = clue_body(**{k: v for k, v in change.items() if k != "documents"})
    request = grpc_clue(body, "grpc-bad")
    for d in change.get("documents", ()):
        request.documents.append(peer_pb2.Document(name=d["name"], content_type=d["content_type"]))
    meta = (("authorization", f"Bearer {await fed.login('shanghai', 'clerk')}"),)
    async with node_channel(fed.nodes["shanghai"]) as ch:
        stub = counter_pb2_grpc.CounterServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SubmitClue(request, metadata=meta)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert grpc_reason(err.value) == code, err.value.details()
    assert f"(field {field})" in (err.value.details() or ""), err.value.details()


async def test_bad_steps_and_keys_are_refused_naming_the_field(fed: Federation) -> None:  # noqa: F811
    meta = (("authorization", f"Bearer {await fed.login('jiangsu', 'supervisor')}"),)
    async with node_channel(fed.nodes["jiangsu"]) as ch:
        stub = counter_pb2_grpc.CounterServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SubmitClue(grpc_clue(clue_body(), ""), metadata=meta)
        assert (err.value.code(), grpc_reason(err.value)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "missing_header",
        )
        assert "(field idempotency_key)" in (err.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.RecordClueFindings(counter_pb2.RecordClueFindingsRequest(id="x"), metadata=meta)
        assert (err.value.code(), grpc_reason(err.value)) == (grpc.StatusCode.INVALID_ARGUMENT, "bad_type")
        assert "(field text)" in (err.value.details() or "")


async def test_grpc_documents_are_held_to_what_an_http_body_carries(fed: Federation) -> None:  # noqa: F811
    """Raw bytes are a quarter smaller than base64: without the shared total, the gRPC door
    would take documents no HTTP body of max_body_bytes can carry."""
    limits = fed.configs["shanghai"].limits
    total = CounterLimits(limits.max_body_bytes).max_total_attachment_bytes
    each = total // 2 + 1
    assert each <= limits.max_attachment_bytes  # each document alone is acceptable
    request = grpc_clue(clue_body(), "grpc-big")
    for i in range(2):
        request.documents.append(
            peer_pb2.Document(name=f"{i}.pdf", content_type="application/pdf", data=b"%" * each)
        )
    meta = (("authorization", f"Bearer {fed.tokens['shanghai']}"),)
    async with node_channel(fed.nodes["shanghai"]) as ch:
        stub = counter_pb2_grpc.CounterServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SubmitClue(request, metadata=meta)
    assert (err.value.code(), grpc_reason(err.value)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "attachments_too_large",
    )
    assert "(field documents)" in (err.value.details() or "")


async def test_roles_at_the_grpc_clue_door(fed: Federation) -> None:  # noqa: F811
    await fed.nodes["jiangsu"].users.add_user("op", PASSWORD, "operator")
    status, created = await fed.call(
        "jiangsu", "POST", "/api/v1/clues", json=clue_body(), headers={"Idempotency-Key": "roles-1"}
    )
    assert status == 201, created
    clue_id = created["id"]
    got: dict[tuple[str, str], tuple[grpc.StatusCode, str]] = {}
    async with node_channel(fed.nodes["jiangsu"]) as ch:
        stub = counter_pb2_grpc.CounterServiceStub(ch)
        for user in ("clerk", "zjg-smj", "zjg-yjj", "op"):
            meta = (("authorization", f"Bearer {await fed.login('jiangsu', user)}"),)
            calls = {
                "submit": stub.SubmitClue(grpc_clue(clue_body(), f"roles-{user}"), metadata=meta),
                "read": stub.GetClue(counter_pb2.GetClueRequest(id=clue_id), metadata=meta),
                "list": stub.ListClues(counter_pb2.ListCluesRequest(), metadata=meta),
                "acknowledge": stub.AcknowledgeClue(
                    counter_pb2.AcknowledgeClueRequest(id=clue_id), metadata=meta
                ),
            }
            for action, call in calls.items():
                try:
                    await call
                    got[action, user] = (grpc.StatusCode.OK, "")
                except grpc.aio.AioRpcError as e:
                    got[action, user] = (e.code(), grpc_reason(e))
    ok = (grpc.StatusCode.OK, "")
    denied = (grpc.StatusCode.PERMISSION_DENIED, "role_required")
    hidden = (grpc.StatusCode.NOT_FOUND, "unknown_clue")
    assert got == {
        ("submit", "clerk"): ok,
        ("read", "clerk"): ok,  # the clerk submitted it
        ("list", "clerk"): ok,
        ("acknowledge", "clerk"): denied,
        ("submit", "zjg-smj"): denied,
        ("read", "zjg-smj"): ok,  # its department's task
        ("list", "zjg-smj"): ok,
        ("acknowledge", "zjg-smj"): ok,
        ("submit", "zjg-yjj"): denied,
        ("read", "zjg-yjj"): hidden,  # another department's
        ("list", "zjg-yjj"): ok,
        ("acknowledge", "zjg-yjj"): hidden,
        ("submit", "op"): denied,
        ("read", "op"): denied,
        ("list", "op"): denied,
        ("acknowledge", "op"): denied,
    }


async def test_one_key_is_one_clue_at_either_door(fed: Federation) -> None:  # noqa: F811
    status, created = await fed.call(
        "shanghai", "POST", "/api/v1/clues", json=clue_body(), headers={"Idempotency-Key": "twin-1"}
    )
    assert status == 201, created
    meta = (("authorization", f"Bearer {fed.tokens['shanghai']}"),)  # the same clerk's session
    async with node_channel(fed.nodes["shanghai"]) as ch:
        stub = counter_pb2_grpc.CounterServiceStub(ch)
        again = await stub.SubmitClue(grpc_clue(clue_body(), "twin-1"), metadata=meta)
        assert (again.id, again.owner_node) == (created["id"], created["owner_node"])
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SubmitClue(grpc_clue(clue_body(severity="low"), "twin-1"), metadata=meta)
        assert (err.value.code(), grpc_reason(err.value)) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "idempotency_key_reused",
        )
        listed = await stub.ListClues(counter_pb2.ListCluesRequest(), metadata=meta)
    assert [c.id for c in listed.clues] == [created["id"]]
    # And the other way round: a clue first sent over gRPC, retried over HTTP.
    async with node_channel(fed.nodes["shanghai"]) as ch:
        stub = counter_pb2_grpc.CounterServiceStub(ch)
        first = await stub.SubmitClue(grpc_clue(clue_body(severity="low"), "twin-2"), metadata=meta)
    status, retried = await fed.call(
        "shanghai",
        "POST",
        "/api/v1/clues",
        json=clue_body(severity="low"),
        headers={"Idempotency-Key": "twin-2"},
    )
    assert status == 201 and retried["id"] == first.id
