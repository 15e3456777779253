"""A federation of real nodes in this test process: real gRPC and HTTP on 127.0.0.1,
SQLite files under tmp_path, built through the same composition root as production."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from argon2 import PasswordHasher
from yrd.counter.v1 import counter_pb2
from yrd.peer.v1 import peer_pb2

from core.clock import Clock, SystemClock
from core.db import Database
from node import migrations
from node.app import Node, build_node
from node.config import NodeConfig
from node.grpc_errors import REASON_KEY
from node.trust.tls import load_tls_identity
from simulations.local_federation import PROVINCES, NodeSpec, prepare

PASSWORD = "clerk-password-1"
# Cheap argon2 parameters, as the store's own tests use: the hashing code path is the same, and
# argon2-cffi's defaults (64 MiB, 3 passes, 4 lanes) made up two thirds of the CPU time of
# starting a federation (three hashes per node, plus every login).
CHEAP_ARGON2 = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)

ALLOW_ALL = """\
node: {node}
revision: test-allow-all
rules:
  - id: allow-outbound
    effect: allow
    when:
      direction: outbound
  - id: allow-inbound
    effect: allow
    when:
      direction: inbound
  - id: allow-clues
    effect: allow
    when:
      direction: [outbound, inbound]
      kind: clue
"""


def allow_all_specs(tmp: Path, specs: Sequence[NodeSpec] = PROVINCES) -> list[NodeSpec]:
    out = []
    for spec in specs:
        bundle = tmp / "bundles" / f"{spec.node_id}.yaml"
        bundle.parent.mkdir(parents=True, exist_ok=True)
        bundle.write_text(ALLOW_ALL.format(node=spec.node_id))
        out.append(dataclasses.replace(spec, bundle=bundle))
    return out


class Federation:
    def __init__(
        self,
        root: Path,
        specs: Sequence[NodeSpec],
        clock: Clock | None = None,
        extra: dict[str, object] | None = None,
        database_urls: dict[str, str] | None = None,
    ) -> None:
        self.database_urls = database_urls or {}
        self.root, self.specs, self.clock, self.extra = root, list(specs), clock or SystemClock(), extra
        self.configs: dict[str, NodeConfig] = {}
        self.nodes: dict[str, Node] = {}
        self.tokens: dict[str, str] = {}  # each node's counter clerk
        self.user_tokens: dict[tuple[str, str], str] = {}
        self.http: aiohttp.ClientSession | None = None

    async def start(self) -> Federation:
        try:
            return await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> Federation:
        configs = prepare(self.root, self.specs, now_ms=self.clock.now_ms(), extra=self.extra)
        self.configs = {
            c.node_id: dataclasses.replace(c, database_url=self.database_urls.get(c.node_id, c.database_url))
            for c in configs
        }
        for url in self.database_urls.values():  # as the operator does with `yrd db upgrade`
            db = Database(url)
            migrations.upgrade(db.engine)
            db.close()
        for node_id in self.configs:
            await self.start_node(node_id)
        self.http = aiohttp.ClientSession()
        for node_id, node in self.nodes.items():
            await node.users.add_user("clerk", PASSWORD, "clerk")
            await node.users.add_user("supervisor", PASSWORD, "supervisor")
            self.tokens[node_id] = await self.login(node_id, "clerk")
        await self._first_catalogues()
        return self

    async def _first_catalogues(self, seconds: float = 5.0) -> None:
        """Pull until every peer answered once. A node started before its peers has already
        tried them, and gRPC then backs off reconnecting for a second: a single pull can fail,
        and pull_all reports that rather than raising. Bounded: a federation a test builds
        to refuse a peer still starts, as before, once the time is out."""
        for _ in range(int(seconds / 0.05)):
            results = [await node.sync.pull_all() for node in self.nodes.values()]
            if all(r == "ok" for result in results for r in result.values()):
                return
            await asyncio.sleep(0.05)

    async def sync_catalogues(self) -> None:
        for node in self.nodes.values():
            await node.sync.pull_all()

    async def start_node(self, node_id: str) -> Node:
        node = build_node(self.configs[node_id], self.clock, hasher=CHEAP_ARGON2)
        await node.start()
        self.nodes[node_id] = node
        return node

    async def stop_node(self, node_id: str) -> None:
        await self.nodes.pop(node_id).stop()

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()
        for node_id in list(self.nodes):
            await self.stop_node(node_id)

    def url(self, node_id: str, path: str) -> str:
        cfg = self.configs[node_id]
        return f"http://{cfg.http_listen}{path}"

    async def login(self, node_id: str, username: str) -> str:
        assert self.http is not None
        async with self.http.post(
            self.url(node_id, "/api/v1/session"), json={"username": username, "password": PASSWORD}
        ) as r:
            assert r.status == 200, await r.text()
            token: str = (await r.json())["token"]
            return token

    async def call(
        self,
        node_id: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        user: str | None = None,
    ) -> tuple[int, Any]:
        """As the node's counter clerk, or as ``user`` (e.g. ``supervisor``, who decides)."""
        assert self.http is not None
        token = self.tokens[node_id]
        if user is not None:
            if (node_id, user) not in self.user_tokens:
                self.user_tokens[node_id, user] = await self.login(node_id, user)
            token = self.user_tokens[node_id, user]
        h = {"Authorization": f"Bearer {token}", **(headers or {})}
        async with self.http.request(method, self.url(node_id, path), json=json, headers=h) as r:
            return r.status, await r.json(content_type=None)

    async def submit(self, node_id: str, body: dict[str, Any], key: str) -> tuple[int, Any]:
        return await self.call(
            node_id, "POST", "/api/v1/applications", json=body, headers={"Idempotency-Key": key}
        )

    async def wait_status(
        self, node_id: str, app_id: str, wanted: set[str], seconds: float = 20.0
    ) -> dict[str, Any]:
        """Poll the origin counter until the application reaches one of ``wanted``."""
        view: dict[str, Any] = {}
        for _ in range(int(seconds / 0.05)):
            status, view = await self.call(node_id, "GET", f"/api/v1/applications/{app_id}")
            assert status == 200, view
            if view["status"] in wanted:
                return view
            await asyncio.sleep(0.05)
        raise AssertionError(f"{app_id} at {node_id} stayed {view.get('status')}: {view}")


def grpc_reason(e: grpc.aio.AioRpcError) -> str:
    """The bare reason code a node puts in the ``yrd-reason`` trailer."""
    return str(dict(e.trailing_metadata() or ()).get(REASON_KEY, ""))


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """A counter call's metadata for a session token."""
    return (("authorization", f"Bearer {token}"),)


def node_channel(node: Node, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
    """A gRPC channel to ``node`` as its peers make one: TLS trusting the node's pinned
    certificate, presenting the node's own (a member certificate, which mutual TLS asks for);
    plaintext only when the node is configured so."""
    transport = node.config.transport
    if transport.plaintext:
        return grpc.aio.insecure_channel(node.grpc_address, options=options)
    tls = load_tls_identity(transport.tls_cert, transport.tls_key)
    credentials = grpc.ssl_channel_credentials(tls.cert_pem, tls.key_pem, tls.cert_pem)
    override = ("grpc.ssl_target_name_override", node.config.node_id)
    return grpc.aio.secure_channel(node.grpc_address, credentials, options=[*options, override])


def grpc_submission(body: dict[str, Any], key: str, **overrides: Any) -> counter_pb2.SubmitApplicationRequest:
    """The gRPC counter's twin of an HTTP submission body (attachments as raw bytes)."""
    fields: dict[str, Any] = {
        "service_id": body["service_id"],
        "applicant": counter_pb2.Applicant(**body["applicant"]),
        "form_json": json.dumps(body["form"]),
        "attachments": [
            peer_pb2.Attachment(
                material=a["material"],
                filename=a["filename"],
                content_type=a["content_type"],
                data=base64.b64decode(a["data"]),
            )
            for a in body.get("attachments", [])
        ],
        "consent": body.get("consent", True),
        "idempotency_key": key,
    }
    return counter_pb2.SubmitApplicationRequest(**{**fields, **overrides})
