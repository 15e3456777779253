"""Who may do what, over both doors of a real node, as one table each.

Jiangsu is the counter (origin), Zhejiang the owner. Probes that an allowed role passes
are shaped so they change nothing (deciding an application decided already, or
releasing one that is not held, gets 409): the answer tells the role check apart from the
work behind it. A role that may not read an application gets 404 like a wrong id, so ids
cannot be probed; a role that may not use a feature at all gets 403.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from yrd.counter.v1 import counter_pb2, counter_pb2_grpc

from core.errors import InvalidInput
from node.cli.main import main
from node.cli.users import check_department
from node.counter.users import check_role
from simulations.local_federation import PROVINCES
from simulations.sample_applications import application_body
from tests.support.federation import PASSWORD, Federation, grpc_submission, node_channel

MARKET = "浙江省市场监督管理局"  # owns zj.industrial-licence at Zhejiang
POLICE = "杭州市公安局"  # owns zj.hangzhou.hukou.migration at Zhejiang
WORKLIST_SERVICE = "zj.industrial-licence"
HELD_SERVICE = "zj.hangzhou.hukou.migration"

# Every outbound matter allowed; household moves held for a second person (four eyes).
BUNDLE = """\
node: {node}
revision: test-roles
rules:
  - id: hold-hukou
    effect: allow
    when:
      direction: outbound
      service:
        ids: "*.hukou.migration"
    obligations:
      require_second_approval: true
  - id: allow-outbound
    effect: allow
    when:
      direction: outbound
  - id: allow-inbound
    effect: allow
    when:
      direction: inbound
"""

USERS = {
    "clerk": ("clerk", ""),  # made by Federation; submits every application below
    "clerk-b": ("clerk", ""),  # another clerk at the same node
    "supervisor": ("supervisor", ""),  # made by Federation
    "owner-market": ("owner_clerk", MARKET),
    "owner-police": ("owner_clerk", POLICE),
    "operator": ("operator", ""),
}


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    specs = []
    for spec in PROVINCES:
        if spec.node_id in ("jiangsu", "zhejiang"):
            bundle = tmp_path / f"{spec.node_id}.yaml"
            bundle.write_text(BUNDLE.format(node=spec.node_id))
            specs.append(spec.__class__(**{**vars(spec), "bundle": bundle}))
    f = await Federation(tmp_path, specs).start()
    try:
        for node in f.nodes.values():
            for username, (role, department) in USERS.items():
                if username not in ("clerk", "supervisor"):
                    await node.users.add_user(username, PASSWORD, role, department)
        yield f
    finally:
        await f.close()


def body_for(fed: Federation, service_id: str, seed: int = 1) -> dict[str, Any]:
    return application_body(fed.nodes["jiangsu"].index.get(service_id), random.Random(seed))


async def submitted(fed: Federation, service_id: str, key: str, wanted: set[str]) -> str:
    status, created = await fed.submit("jiangsu", body_for(fed, service_id), key)
    assert status == 201, created
    await fed.wait_status("jiangsu", created["id"], wanted)
    return str(created["id"])


async def test_http_roles(fed: Federation) -> None:
    app = await submitted(fed, WORKLIST_SERVICE, "roles-1", {"in_review"})
    # Decided once already: a role allowed to decide it gets 409, which changes nothing.
    decided = await submitted(fed, WORKLIST_SERVICE, "roles-2", {"in_review"})
    approve = {"decision": "approve", "reason": "核准"}
    status, _ = await fed.call(
        "zhejiang", "POST", f"/api/v1/applications/{decided}/decision", json=approve, user="supervisor"
    )
    assert status == 200
    # (action, node, method, path, body) -> expected status per user
    table: list[tuple[str, str, str, str, Any, dict[str, int]]] = [
        ("list services", "jiangsu", "GET", "/api/v1/services", None, dict.fromkeys(USERS, 200)),
        (
            "read an application",
            "jiangsu",
            "GET",
            f"/api/v1/applications/{app}",
            None,
            {
                "clerk": 200,
                "clerk-b": 404,
                "supervisor": 200,
                "owner-market": 403,
                "owner-police": 403,
                "operator": 403,
            },
        ),
        (
            "release",
            "jiangsu",
            "POST",
            f"/api/v1/applications/{app}/release",
            None,
            {
                "clerk": 403,
                "clerk-b": 403,
                "supervisor": 409,
                "owner-market": 403,
                "owner-police": 403,
                "operator": 403,
            },
        ),
        (
            "worklist",
            "zhejiang",
            "GET",
            "/api/v1/worklist",
            None,
            {
                "clerk": 403,
                "clerk-b": 403,
                "supervisor": 200,
                "owner-market": 200,
                "owner-police": 200,
                "operator": 403,
            },
        ),
        (
            "decide",
            "zhejiang",
            "POST",
            f"/api/v1/applications/{decided}/decision",
            approve,
            {
                "clerk": 403,
                "clerk-b": 403,
                "supervisor": 409,
                "owner-market": 409,
                "owner-police": 404,
                "operator": 403,
            },
        ),
        (
            "policy decision log",
            "jiangsu",
            "GET",
            "/api/v1/policy/decisions",
            None,
            {
                "clerk": 403,
                "clerk-b": 403,
                "supervisor": 200,
                "owner-market": 403,
                "owner-police": 403,
                "operator": 200,
            },
        ),
    ]
    got: dict[tuple[str, str], int] = {}
    want: dict[tuple[str, str], int] = {}
    for action, node, method, path, body, expected in table:
        for user, status in expected.items():
            got[action, user], answer = await fed.call(node, method, path, json=body, user=user)
            want[action, user] = status
            if status == 403:
                assert answer["code"] == "role_required", (action, user, answer)
    for i, user in enumerate(USERS):
        status, answer = await fed.call(
            "jiangsu",
            "POST",
            "/api/v1/applications",
            json=body_for(fed, WORKLIST_SERVICE, i),
            headers={"Idempotency-Key": f"submit-{user}"},
            user=user,
        )
        got["submit", user] = status
    want.update({("submit", u): 201 if USERS[u][0] in ("clerk", "supervisor") else 403 for u in USERS})
    assert got == want


async def test_an_owner_clerk_sees_only_their_department(fed: Federation) -> None:
    market = await submitted(fed, WORKLIST_SERVICE, "dept-1", {"in_review"})
    held = await submitted(fed, HELD_SERVICE, "dept-2", {"awaiting_approval"})
    status, _ = await fed.call("jiangsu", "POST", f"/api/v1/applications/{held}/release", user="supervisor")
    assert status == 200
    await fed.wait_status("jiangsu", held, {"in_review"})

    async def listed(user: str) -> set[str]:
        status, work = await fed.call("zhejiang", "GET", "/api/v1/worklist", user=user)
        assert status == 200, work
        return {a["id"] for a in work["applications"]}

    assert await listed("owner-market") == {market}
    assert await listed("owner-police") == {held}
    assert await listed("supervisor") == {market, held}
    decide = f"/api/v1/applications/{held}/decision"
    status, _ = await fed.call("zhejiang", "POST", decide, json={"decision": "approve"}, user="owner-market")
    assert status == 404
    status, done = await fed.call(
        "zhejiang", "POST", decide, json={"decision": "approve"}, user="owner-police"
    )
    assert status == 200, done


async def test_four_eyes_release_is_by_a_supervisor_other_than_the_submitter(fed: Federation) -> None:
    held = await submitted(fed, HELD_SERVICE, "four-1", {"awaiting_approval"})
    release = f"/api/v1/applications/{held}/release"
    status, problem = await fed.call("jiangsu", "POST", release, user="clerk-b")
    assert (status, problem["code"]) == (403, "role_required")

    status, own = await fed.call(
        "jiangsu",
        "POST",
        "/api/v1/applications",
        json=body_for(fed, HELD_SERVICE, 7),
        headers={"Idempotency-Key": "four-2"},
        user="supervisor",
    )
    assert status == 201 and own["status"] == "awaiting_approval", own
    status, problem = await fed.call(
        "jiangsu", "POST", f"/api/v1/applications/{own['id']}/release", user="supervisor"
    )
    assert (status, problem["code"]) == (403, "same_clerk")

    status, released = await fed.call("jiangsu", "POST", release, user="supervisor")
    assert status == 200, released
    await fed.wait_status("jiangsu", held, {"in_review"})


async def test_grpc_roles(fed: Federation) -> None:
    app = await submitted(fed, WORKLIST_SERVICE, "grpc-roles", {"in_review"})
    body = body_for(fed, WORKLIST_SERVICE, 3)
    got: dict[tuple[str, str], grpc.StatusCode] = {}
    async with node_channel(fed.nodes["jiangsu"]) as ch:
        stub = counter_pb2_grpc.CounterServiceStub(ch)
        for user in USERS:
            meta = (("authorization", f"Bearer {await fed.login('jiangsu', user)}"),)
            calls = {
                "list services": stub.ListServices(counter_pb2.ListServicesRequest(), metadata=meta),
                "read an application": stub.GetApplication(
                    counter_pb2.GetApplicationRequest(id=app), metadata=meta
                ),
                "submit": stub.SubmitApplication(grpc_submission(body, f"grpc-{user}"), metadata=meta),
            }
            for action, call in calls.items():
                try:
                    await call
                    got[action, user] = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as e:
                    got[action, user] = e.code()
    ok, denied, hidden = grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND
    reads = {"clerk": ok, "clerk-b": hidden, "supervisor": ok}
    assert got == {
        **{("list services", u): ok for u in USERS},
        **{("read an application", u): reads.get(u, denied) for u in USERS},
        **{("submit", u): ok if USERS[u][0] in ("clerk", "supervisor") else denied for u in USERS},
    }


@pytest.mark.parametrize(
    ("role", "department", "code"),
    [
        ("owner_clerk", "", "missing_department"),
        ("clerk", MARKET, "unexpected_department"),
        ("judge", "", "bad_role"),
        ("owner_clerk", "x" * 200, "bad_department"),
    ],
)
def test_roles_and_departments_are_checked_when_an_account_is_made(
    role: str, department: str, code: str
) -> None:
    with pytest.raises(InvalidInput) as e:
        check_role(role, department)
    assert e.value.code == code


def test_cli_department_must_be_in_the_node_catalogue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from simulations.local_federation import prepare

    config = prepare(tmp_path, [p for p in PROVINCES if p.node_id == "zhejiang"], now_ms=1_767_225_600_000)[0]
    assert check_department(config, "owner_clerk", MARKET) is None
    for role, department, code in (
        ("owner_clerk", "", "missing_department"),
        ("owner_clerk", "上海市公安局", "unknown_department"),
        ("supervisor", MARKET, "unexpected_department"),
    ):
        with pytest.raises(InvalidInput) as e:
            check_department(config, role, department)
        assert (e.value.code, e.value.field) == (code, "--department")

    argv = [
        "users",
        "add",
        "--config",
        str(config.data_dir / "node.toml"),
        "--username",
        "wu",
        "--password",
        PASSWORD,
        "--role",
        "owner_clerk",
    ]
    assert main(argv) == 2
    assert "--department" in capsys.readouterr().err
    assert main([*argv, "--department", MARKET]) == 0
    assert f"added owner_clerk wu of {MARKET}" in capsys.readouterr().out
    assert main(["users", "list", "--config", str(config.data_dir / "node.toml")]) == 0
    assert MARKET in capsys.readouterr().out
