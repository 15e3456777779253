"""Data sharing at the gRPC counter (docs/sharing.md), over the four-province federation of
tests/test_sharing_federation.py: the health-code screen over gRPC is the HTTP one, consent is
still every holder's to check, bad input is refused as the HTTP door refuses it (same code,
same field), the roles of node/counter/backend.py hold, and one idempotency key means one data
request at either door."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from yrd.counter.v1 import counter_pb2, counter_pb2_grpc

from tests.support.federation import Federation, bearer, grpc_reason, node_channel
from tests.test_sharing_federation import (  # noqa: F401 (fixture)
    HEALTH_SCREEN,
    HOUSING_FUND,
    PERSON,
    consent,
    fed,
    query,
    wait_request,
)

WRONG_CHECK = PERSON[:17] + ("1" if PERSON[17] != "1" else "2")
VOLATILE = ("query_id", "asked_at", "answered_at")  # differ between any two queries


def grpc_query(body: dict[str, Any]) -> counter_pb2.QueryDataRequest:
    """tests/test_sharing_federation.py's JSON body as the gRPC message."""
    request = counter_pb2.QueryDataRequest(
        subject=counter_pb2.DataSubject(**body["subject"]),
        purpose=body["purpose"],
        resources=[counter_pb2.DataAsk(**r) for r in body["resources"]],
        deadline_ms=body.get("deadline_ms", 0),
    )
    if "consent" in body:
        request.consent.CopyFrom(counter_pb2.DataConsent(**body["consent"]))
    return request


def view_of(response: counter_pb2.QueryDataResponse) -> dict[str, Any]:
    """The gRPC merged view as the HTTP JSON, empty strings back to the nulls they stand for."""
    items = []
    for i in response.items:
        item: dict[str, Any] = {
            f.name: getattr(i, f.name) for f in i.DESCRIPTOR.fields if f.name != "fields_json"
        }
        item["fields"] = json.loads(i.fields_json) if i.fields_json else None
        for name in ("updated_at", "answered_at"):
            item[name] = item[name] or None
        items.append(item)
    return {
        "query_id": response.query_id,
        "subject_kind": response.subject_kind,
        "purpose": response.purpose,
        "asked_at": response.asked_at,
        "complete": response.complete,
        "items": items,
    }


def stable(view: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: v for k, v in view.items() if k not in VOLATILE and k != "items"},
        "items": [{k: v for k, v in i.items() if k not in VOLATILE} for i in view["items"]],
    }


def fund_request(until: str | None = None, **changes: Any) -> dict[str, Any]:
    body = {
        "resource_id": HOUSING_FUND,
        "fields": ["account_status", "monthly_deposit", "balance"],
        "purpose": "service-delivery",
        "legal_basis": "《住房公积金管理条例》第三十条；长三角住房公积金一体化合作协议",
        "until": until or (datetime.now(UTC) + timedelta(days=365)).isoformat(),
    }
    body.update(changes)
    return body


async def test_health_code_screen_over_grpc_is_the_http_screen(fed: Federation) -> None:  # noqa: F811
    body = query(HEALTH_SCREEN, consent=consent(HEALTH_SCREEN))
    status, http_view = await fed.call("shanghai", "POST", "/api/v1/queries", json=body)
    assert status == 200, http_view
    async with node_channel(fed.nodes["shanghai"]) as ch:
        stub = counter_pb2_grpc.CounterServiceStub(ch)
        screen = await stub.QueryData(grpc_query(body), metadata=bearer(fed.tokens["shanghai"]))
        refused = await stub.QueryData(
            grpc_query(query(HEALTH_SCREEN)), metadata=bearer(fed.tokens["shanghai"])
        )
    grpc_view = view_of(screen)
    assert stable(grpc_view) == stable(http_view)
    assert grpc_view["complete"] and grpc_view["query_id"] != http_view["query_id"]
    items = {i["resource_id"]: i for i in grpc_view["items"]}
    assert [i["holder_node"] for i in grpc_view["items"]] == ["shanghai", "jiangsu", "zhejiang"]
    assert items["zj.vaccination"]["fields"]["doses"] == 3  # a number stays a number
    assert items["js.nucleic-acid"]["department"] == "江苏省卫生健康统计信息中心"
    assert all(i["answered_at"] for i in grpc_view["items"])

    # Without consent every holder refuses, each for itself, and discloses nothing.
    assert [(i.holder_node, i.outcome, i.reason_code, i.fields_json) for i in refused.items] == [
        (h, "refused", "consent_missing", "") for h in ("shanghai", "jiangsu", "zhejiang")
    ]
    assert not refused.complete

    # A holder that cannot be reached is missing, with its reason; the others still answer.
    await fed.stop_node("zhejiang")
    async with node_channel(fed.nodes["shanghai"]) as ch:
        partial = await counter_pb2_grpc.CounterServiceStub(ch).QueryData(
            grpc_query({**body, "deadline_ms": 2000}), metadata=bearer(fed.tokens["shanghai"])
        )
    outcomes = {i.resource_id: (i.outcome, i.fields_json == "") for i in partial.items}
    assert outcomes == {
        "sh.health-code": ("answered", False),
        "js.nucleic-acid": ("answered", False),
        "zj.vaccination": ("missing", True),
    }
    assert partial.items[2].reason_code in ("unreachable", "deadline") and not partial.complete


async def test_the_catalogue_and_the_disclosure_log_over_grpc_are_the_http_ones(
    fed: Federation,  # noqa: F811
) -> None:
    status, view = await fed.call(
        "shanghai", "POST", "/api/v1/queries", json=query(HEALTH_SCREEN, consent=consent(HEALTH_SCREEN))
    )
    assert status == 200, view
    status, http_found = await fed.call(
        "shanghai", "GET", "/api/v1/data-resources?holder=32&sharing=conditional"
    )
    assert status == 200, http_found
    path = f"/api/v1/disclosures?subject_id={PERSON}&side=holder"
    status, http_log = await fed.call("jiangsu", "GET", path)
    assert status == 200 and http_log["disclosures"], http_log
    async with node_channel(fed.nodes["shanghai"]) as sh, node_channel(fed.nodes["jiangsu"]) as js:
        found = await counter_pb2_grpc.CounterServiceStub(sh).SearchDataResources(
            counter_pb2.SearchDataResourcesRequest(holder="32", sharing="conditional"),
            metadata=bearer(fed.tokens["shanghai"]),
        )
        log = await counter_pb2_grpc.CounterServiceStub(js).ListDisclosures(
            counter_pb2.ListDisclosuresRequest(subject_id=PERSON, side="holder"),
            metadata=bearer(fed.tokens["jiangsu"]),
        )
    assert [r.id for r in found.resources] == [r["id"] for r in http_found["resources"]]
    assert [r.id for r in found.resources] == ["js.social-insurance.contributions"]
    assert found.resources[0].fields[0].name == http_found["resources"][0]["fields"][0]["name"]
    grpc_log = [{f.name: getattr(d, f.name) for f in d.DESCRIPTOR.fields} for d in log.disclosures]
    assert [{**d, "fields": list(d["fields"])} for d in grpc_log] == http_log["disclosures"]
    assert grpc_log[0]["query_id"] == view["query_id"]
    # The holder's meter, read by its operator: the same rows at both doors.
    status, http_meter = await fed.call("jiangsu", "GET", "/api/v1/data-meter", user="operator")
    assert status == 200 and http_meter["rows"], http_meter
    async with node_channel(fed.nodes["jiangsu"]) as js:
        meter = await counter_pb2_grpc.CounterServiceStub(js).GetDataMeter(
            counter_pb2.GetDataMeterRequest(resource="js.nucleic-acid"),
            metadata=bearer(await fed.login("jiangsu", "operator")),
        )
    rows = [{f.name: getattr(r, f.name) for f in r.DESCRIPTOR.fields} for r in meter.rows]
    assert rows == [r for r in http_meter["rows"] if r["resource_id"] == "js.nucleic-acid"]
    assert meter.total == sum(r["calls"] for r in rows) > 0


# (gRPC call, its message, the HTTP method and path of the twin, the twin's JSON body): each
# is bad in one field; both doors must refuse it with the same code naming the same field.
BAD: list[tuple[str, Any, str, str, dict[str, Any] | None]] = [
    (
        "QueryData",
        grpc_query(query(HEALTH_SCREEN, deadline_ms=50)),
        "POST",
        "/api/v1/queries",
        query(HEALTH_SCREEN, deadline_ms=50),
    ),
    (
        "QueryData",
        grpc_query(query(HEALTH_SCREEN, consent={**consent(HEALTH_SCREEN), "until": "2099-12-31T23:59:59"})),
        "POST",
        "/api/v1/queries",
        query(HEALTH_SCREEN, consent={**consent(HEALTH_SCREEN), "until": "2099-12-31T23:59:59"}),
    ),
    (
        "QueryData",
        grpc_query({**query(HEALTH_SCREEN), "subject": {"kind": "robot", "id": PERSON}}),
        "POST",
        "/api/v1/queries",
        {**query(HEALTH_SCREEN), "subject": {"kind": "robot", "id": PERSON}},
    ),
    (
        "QueryData",
        grpc_query(query(["BAD id"])),
        "POST",
        "/api/v1/queries",
        query(["BAD id"]),
    ),
    (
        "FileDataRequest",
        counter_pb2.FileDataRequestRequest(**fund_request(fields=[])),
        "POST",
        "/api/v1/data-requests",
        fund_request(fields=[]),
    ),
    (
        "FileDataRequest",
        counter_pb2.FileDataRequestRequest(**fund_request(until="next year")),
        "POST",
        "/api/v1/data-requests",
        fund_request(until="next year"),
    ),
    (
        "FileDataRequest",
        counter_pb2.FileDataRequestRequest(**fund_request(fields=["shoe_size"])),
        "POST",
        "/api/v1/data-requests",
        fund_request(fields=["shoe_size"]),
    ),
    (
        "DecideDataRequest",
        counter_pb2.DecideDataRequestRequest(id="dr-x"),
        "POST",
        "/api/v1/data-requests/dr-x/decision",
        {},
    ),
    (
        "DecideDataRequest",
        counter_pb2.DecideDataRequestRequest(
            id="dr-x", decision=counter_pb2.DATA_DECISION_REFUSE, fields=["balance"]
        ),
        "POST",
        "/api/v1/data-requests/dr-x/decision",
        {"decision": "refuse", "fields": ["balance"]},
    ),
    (
        "SearchDataResources",
        counter_pb2.SearchDataResourcesRequest(holder="3a"),
        "GET",
        "/api/v1/data-resources?holder=3a",
        None,
    ),
    (
        "ListDisclosures",
        counter_pb2.ListDisclosuresRequest(subject_id=WRONG_CHECK),
        "GET",
        f"/api/v1/disclosures?subject_id={WRONG_CHECK}",
        None,
    ),
    (
        "ListDisclosures",
        counter_pb2.ListDisclosuresRequest(subject_id=PERSON, side="both"),
        "GET",
        f"/api/v1/disclosures?subject_id={PERSON}&side=both",
        None,
    ),
    (
        "GetDataMeter",
        counter_pb2.GetDataMeterRequest(since="2026-1-1"),
        "GET",
        "/api/v1/data-meter?since=2026-1-1",
        None,
    ),
]


async def test_bad_input_is_refused_at_both_doors_naming_the_same_field(fed: Federation) -> None:  # noqa: F811
    got = []
    supervisor = bearer(await fed.login("shanghai", "supervisor"))
    async with node_channel(fed.nodes["shanghai"]) as ch:
        stub = counter_pb2_grpc.CounterServiceStub(ch)
        for call, message, method, path, body in BAD:
            status, problem = await fed.call("shanghai", method, path, json=body, user="supervisor")
            assert status in (400, 422), (path, problem)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await getattr(stub, call)(message, metadata=supervisor)
            e = err.value
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (call, e.details())
            assert f"(field {problem['field']})" in (e.details() or ""), (call, e.details(), problem)
            got.append((call, grpc_reason(e), problem["field"]))
            assert grpc_reason(e) == problem["code"], (call, e.details(), problem)
    # The fields named are the ones each case breaks (the doors could agree on a wrong one).
    assert [f for _, _, f in got] == [
        "deadline_ms",
        "consent.until",
        "subject.kind",
        "resources[0].id",
        "fields",
        "until",
        "fields",
        "decision",
        "fields",
        "holder",
        "subject_id",
        "side",
        "since",
    ]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async with node_channel(fed.nodes["shanghai"]) as ch:
            await counter_pb2_grpc.CounterServiceStub(ch).FileDataRequest(
                counter_pb2.FileDataRequestRequest(idempotency_key="bad key\n", **fund_request()),
                metadata=bearer(fed.tokens["shanghai"]),
            )
    assert (err.value.code(), grpc_reason(err.value)) == (grpc.StatusCode.INVALID_ARGUMENT, "bad_header")
    assert "(field idempotency_key)" in (err.value.details() or "")


async def test_roles_at_the_grpc_sharing_door(fed: Federation) -> None:  # noqa: F811
    status, sent = await fed.call("shanghai", "POST", "/api/v1/data-requests", json=fund_request())
    assert status == 201, sent
    await wait_request(fed, "anhui", sent["id"], "received", "pending")
    got: dict[tuple[str, str], tuple[grpc.StatusCode, str]] = {}
    for node, user in (("shanghai", "clerk"), ("shanghai", "operator"), ("anhui", "clerk")):
        async with node_channel(fed.nodes[node]) as ch:
            stub = counter_pb2_grpc.CounterServiceStub(ch)
            m = bearer(await fed.login(node, user))
            calls = {
                "search": stub.SearchDataResources(counter_pb2.SearchDataResourcesRequest(), metadata=m),
                "query": stub.QueryData(grpc_query(query(HEALTH_SCREEN)), metadata=m),
                "file": stub.FileDataRequest(
                    counter_pb2.FileDataRequestRequest(**fund_request()), metadata=m
                ),
                "list": stub.ListDataRequests(counter_pb2.ListDataRequestsRequest(), metadata=m),
                "decide": stub.DecideDataRequest(
                    counter_pb2.DecideDataRequestRequest(
                        id=sent["id"], decision=counter_pb2.DATA_DECISION_APPROVE
                    ),
                    metadata=m,
                ),
                "revoke": stub.RevokeGrant(counter_pb2.RevokeGrantRequest(id=sent["id"]), metadata=m),
                "log": stub.ListDisclosures(counter_pb2.ListDisclosuresRequest(), metadata=m),
                "meter": stub.GetDataMeter(counter_pb2.GetDataMeterRequest(), metadata=m),
            }
            for action, call in calls.items():
                try:
                    await call
                    got[action, f"{node}/{user}"] = (grpc.StatusCode.OK, "")
                except grpc.aio.AioRpcError as e:
                    got[action, f"{node}/{user}"] = (e.code(), grpc_reason(e))
    ok = (grpc.StatusCode.OK, "")
    denied = (grpc.StatusCode.PERMISSION_DENIED, "role_required")
    assert got == {
        ("search", "shanghai/clerk"): ok,
        ("query", "shanghai/clerk"): ok,
        ("file", "shanghai/clerk"): ok,
        ("list", "shanghai/clerk"): ok,
        ("decide", "shanghai/clerk"): denied,
        ("revoke", "shanghai/clerk"): denied,
        ("log", "shanghai/clerk"): (grpc.StatusCode.PERMISSION_DENIED, "subject_required"),
        ("meter", "shanghai/clerk"): denied,
        ("search", "shanghai/operator"): ok,
        ("query", "shanghai/operator"): denied,
        ("file", "shanghai/operator"): denied,
        ("list", "shanghai/operator"): denied,
        ("decide", "shanghai/operator"): denied,
        ("revoke", "shanghai/operator"): denied,
        ("log", "shanghai/operator"): ok,
        ("meter", "shanghai/operator"): ok,
        # The holder's counter clerk sees the request arrive but may not decide it.
        ("search", "anhui/clerk"): ok,
        ("query", "anhui/clerk"): ok,
        ("file", "anhui/clerk"): ok,
        ("list", "anhui/clerk"): ok,
        ("decide", "anhui/clerk"): denied,
        ("revoke", "anhui/clerk"): denied,
        ("log", "anhui/clerk"): (grpc.StatusCode.PERMISSION_DENIED, "subject_required"),
        ("meter", "anhui/clerk"): denied,
    }


async def test_a_grant_filed_decided_and_revoked_over_grpc(fed: Federation) -> None:  # noqa: F811
    """One key is one request at either door; the holder's decision and revocation over gRPC
    reach the asker through the outbox and change what its queries are answered."""
    clerk = bearer(fed.tokens["shanghai"])
    fund = bearer(await fed.login("anhui", "fund-clerk"))
    body = fund_request()
    fund_query = grpc_query(
        query([HOUSING_FUND], purpose="service-delivery", consent=consent([HOUSING_FUND], "service-delivery"))
    )
    async with node_channel(fed.nodes["shanghai"]) as sh, node_channel(fed.nodes["anhui"]) as ah:
        asker, holder = counter_pb2_grpc.CounterServiceStub(sh), counter_pb2_grpc.CounterServiceStub(ah)
        filed = await asker.FileDataRequest(
            counter_pb2.FileDataRequestRequest(idempotency_key="grant-1", **body), metadata=clerk
        )
        assert (filed.request.status, filed.request.holder_node) == ("pending", "anhui")
        status, again = await fed.call(
            "shanghai", "POST", "/api/v1/data-requests", json=body, headers={"Idempotency-Key": "grant-1"}
        )
        assert (status, again["id"]) == (201, filed.request.id)
        retried = await asker.FileDataRequest(
            counter_pb2.FileDataRequestRequest(idempotency_key="grant-1", **body), metadata=clerk
        )
        assert retried.request.id == filed.request.id
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asker.FileDataRequest(
                counter_pb2.FileDataRequestRequest(
                    idempotency_key="grant-1", **{**body, "fields": ["balance"]}
                ),
                metadata=clerk,
            )
        status, problem = await fed.call(
            "shanghai",
            "POST",
            "/api/v1/data-requests",
            json={**body, "fields": ["balance"]},
            headers={"Idempotency-Key": "grant-1"},
        )
        assert grpc_reason(err.value) == problem["code"] == "idempotency_key_reused", problem
        assert (err.value.code(), status) == (grpc.StatusCode.FAILED_PRECONDITION, 422)
        listed = await asker.ListDataRequests(counter_pb2.ListDataRequestsRequest(), metadata=clerk)
        assert [r.id for r in listed.sent] == [filed.request.id] and not listed.received

        request_id = filed.request.id
        await wait_request(fed, "anhui", request_id, "received", "pending")
        decided = await holder.DecideDataRequest(
            counter_pb2.DecideDataRequestRequest(
                id=request_id,
                decision=counter_pb2.DATA_DECISION_APPROVE,
                fields=["account_status", "balance"],
            ),
            metadata=fund,
        )
        assert (decided.request.status, list(decided.request.granted_fields)) == (
            "approved",
            ["account_status", "balance"],
        )
        assert decided.request.asker_node == "shanghai" and decided.request.decided_by == "fund-clerk"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await holder.DecideDataRequest(
                counter_pb2.DecideDataRequestRequest(
                    id=request_id, decision=counter_pb2.DATA_DECISION_REFUSE
                ),
                metadata=fund,
            )
        assert grpc_reason(err.value) == "already_decided"
        await wait_request(fed, "shanghai", request_id, "sent", "approved")
        (answered,) = (await asker.QueryData(fund_query, metadata=clerk)).items
        assert (answered.outcome, answered.basis) == ("answered", f"consent+grant:{request_id}")
        assert json.loads(answered.fields_json) == {"account_status": "正常", "balance": "138**0.00"}

        revoked = await holder.RevokeGrant(
            counter_pb2.RevokeGrantRequest(id=request_id, note="协议到期"), metadata=fund
        )
        assert revoked.request.status == "revoked"
        (after,) = (await asker.QueryData(fund_query, metadata=clerk)).items
        assert (after.outcome, after.reason_code, after.fields_json) == ("refused", "no_grant", "")
