"""The composition root: the one place that builds a node from its config.

Everything else receives its collaborators; nothing reaches for globals, the clock or
the environment. Tests build nodes through here too (with a FakeClock or ports 0), so
what is tested is what runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.exc import SQLAlchemyError
from yrd.catalogue.v1 import catalogue_pb2
from yrd.counter.v1 import counter_pb2, counter_pb2_grpc
from yrd.peer.v1 import peer_pb2, peer_pb2_grpc

from core.clock import Clock, SystemClock
from core.db import Database
from core.errors import ConfigError
from core.keys import load_key
from node import metrics
from node.cases.origin import Origin, apply_delivery_receipt, apply_status_update
from node.cases.owner import Owner
from node.cases.policy_gate import PolicyGate
from node.cases.webhooks import WebhookDispatcher
from node.config import NodeConfig, key_passphrase
from node.counter.backend import NodeBackend
from node.counter.contract import CounterLimits
from node.counter.grpc_server import CounterServicer
from node.counter.users import UserStore
from node.delivery.catalogue_sync import CatalogueSync
from node.delivery.channels import Channels
from node.delivery.gossip import ManifestGossip
from node.delivery.outbox import Backoff
from node.delivery.peer_server import PeerServicer
from node.delivery.sender import Delivery
from node.grpc_errors import MalformedRequests
from node.http.app import build_http_app
from node.trust.envelope import EnvelopeVerifier
from node.trust.keyring import Trust
from node.trust.nonces import SqlNonceStore
from registry.catalogue import load_catalogue_file, sign_entry
from registry.lookup import CatalogueIndex
from registry.manifest import TrustedManifest, load_signed_manifest, verify_anchor

log = logging.getLogger(__name__)

CURRENT_MANIFEST = "current.manifest"
SERVICE_NAMES = (
    peer_pb2.DESCRIPTOR.services_by_name["PeerService"].full_name,
    counter_pb2.DESCRIPTOR.services_by_name["CounterService"].full_name,
)


def load_trusted_manifest(config: NodeConfig) -> TrustedManifest:
    """The anchor, or the newer manifest this node adopted by gossip and kept."""
    anchor = verify_anchor(load_signed_manifest(config.anchor_manifest))
    current_path = config.data_dir / CURRENT_MANIFEST
    if current_path.exists():
        current = verify_anchor(load_signed_manifest(current_path))
        if current.manifest.federation_id == anchor.manifest.federation_id and (
            current.manifest.version > anchor.manifest.version
        ):
            return current
    return anchor


@dataclass
class Node:
    config: NodeConfig
    clock: Clock
    db: Database
    trust: Trust
    index: CatalogueIndex
    delivery: Delivery
    sync: CatalogueSync
    gossip: ManifestGossip
    policy: PolicyGate
    backend: NodeBackend
    users: UserStore
    webhooks: WebhookDispatcher
    grpc_server: grpc.aio.Server
    http_app: web.Application
    grpc_port: int = 0
    http_port: int = 0
    _http_runner: web.AppRunner | None = None
    _health: health.aio.HealthServicer = field(default_factory=health.aio.HealthServicer)
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def http_url(self) -> str:
        return f"http://{self.config.http_listen.rsplit(':', 1)[0]}:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"{self.config.grpc_listen.rsplit(':', 1)[0]}:{self.grpc_port}"

    async def start(self) -> None:
        await self.sync.load_persisted()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self.grpc_server)
        self.grpc_port = self.grpc_server.add_insecure_port(self.config.grpc_listen)
        if self.grpc_port == 0:
            raise ConfigError(f"cannot listen on {self.config.grpc_listen}", field="grpc_listen")
        await self.grpc_server.start()
        self._http_runner = web.AppRunner(self.http_app, access_log=None)
        await self._http_runner.setup()
        host, port = self.config.http_listen.rsplit(":", 1)
        site = web.TCPSite(self._http_runner, host, int(port))
        await site.start()
        self.http_port = self._http_runner.addresses[0][1]
        await self.delivery.start()
        self.sync.start()
        self.gossip.start()
        self.policy.start()
        self.webhooks.start()
        for name in (*SERVICE_NAMES, ""):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        metrics.MANIFEST_EXPIRES.set(self.trust.manifest.manifest.expires_at_ms / 1000)
        log.info("node %s up: grpc %s, http %s", self.trust.node_id, self.grpc_address, self.http_url)

    async def stop(self) -> None:
        """Graceful: refuse new work, let calls in flight finish, persist, close."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        await self._health.enter_graceful_shutdown()
        if self._http_runner is not None:
            await self._http_runner.cleanup()
        await self.grpc_server.stop(grace=5.0)
        await self.delivery.stop()
        await self.sync.stop()
        await self.gossip.stop()
        await self.policy.stop()
        await self.webhooks.stop()
        await self.delivery.channels.close()
        self.db.close()
        self.users.close()
        log.info("node %s stopped", self.trust.node_id)


def _database_errors(db: Database, work: Callable[[], None]) -> Database:
    """Run ``work`` on ``db``; a database error becomes a one-line ``yrd:`` error, not a traceback."""
    try:
        work()
    except ConfigError:
        db.close()
        raise
    except SQLAlchemyError as e:
        db.close()
        first_line = str(getattr(e, "orig", None) or e).splitlines()[0][:200]
        raise ConfigError(
            f"cannot open the database: {first_line}", code="database_unusable", field="database_url"
        ) from e
    return db


def create_node_database(config: NodeConfig) -> Database:
    """A new node's empty database (``yrd node init``); refuses one that exists."""
    db = Database(config.database_url)
    return _database_errors(db, db.create)


def open_node_database(config: NodeConfig) -> Database:
    """An existing node's database, refused if missing, empty or damaged (core/db.py)."""
    db = Database(config.database_url)
    return _database_errors(db, db.open_existing)


def build_node(config: NodeConfig, clock: Clock | None = None) -> Node:
    clock = clock or SystemClock()
    key = load_key(config.key_file, key_passphrase(os.environ))
    manifest = load_trusted_manifest(config)
    member = manifest.member(config.node_id)
    if member is None:
        raise ConfigError(f"{config.node_id!r} is not a member of the anchor manifest", field="node_id")
    if key.key_id not in {k.key_id for k in member.keys}:
        raise ConfigError(
            f"key {key.key_id} is not listed for {config.node_id} in the manifest", field="key_file"
        )
    catalogue_node, definitions = load_catalogue_file(config.catalogue)
    if catalogue_node != config.node_id:
        raise ConfigError(
            f"catalogue belongs to {catalogue_node!r}, not {config.node_id!r}", field="catalogue"
        )

    db = open_node_database(config)
    trust = Trust(config.node_id, key, manifest)
    verifier = EnvelopeVerifier(
        config.node_id,
        lambda: trust.manifest,
        SqlNonceStore(db, window_ms=2 * config.max_skew_ms),
        clock,
        max_skew_ms=config.max_skew_ms,
    )
    channels = Channels(trust, config.limits.max_body_bytes + 1024 * 1024)
    delivery = Delivery(
        db=db,
        trust=trust,
        channels=channels,
        verifier=verifier,
        clock=clock,
        backoff=Backoff(config.delivery.initial_backoff_s, config.delivery.max_backoff_s),
        batch_size=config.delivery.batch_size,
        # The peer's limit is its max_body_bytes + 1 MiB (the server options below); budgeting
        # max_body_bytes for a batch's envelopes keeps every batch under it.
        max_batch_bytes=config.limits.max_body_bytes,
        stall_after_s=config.delivery.stall_after_s,
        poll_interval_s=config.delivery.poll_interval_s,
        on_receipt=apply_delivery_receipt,
        rng=random.Random(),
    )
    index = CatalogueIndex()
    own_services: dict[str, catalogue_pb2.ServiceDefinition] = {d.service_id: d for d in definitions}
    sync = CatalogueSync(
        db=db,
        trust=trust,
        index=index,
        channels=channels,
        verifier=verifier,
        clock=clock,
        own_entries=[sign_entry(d, config.node_id, key) for d in definitions],
    )
    gossip = ManifestGossip(
        trust=trust,
        channels=channels,
        verifier=verifier,
        clock=clock,
        store=config.data_dir / CURRENT_MANIFEST,
    )
    policy = PolicyGate.from_config(config, db=db, trust=trust, clock=clock)
    owner = Owner(
        db=db,
        trust=trust,
        services=lambda: own_services,
        policy=policy,
        clock=clock,
        wake=delivery.wake,
        max_skew_ms=config.max_skew_ms,
    )
    origin = Origin(
        db=db,
        trust=trust,
        catalogue=index,
        policy=policy,
        clock=clock,
        wake=delivery.wake,
        max_outbox_depth=config.limits.max_outbox_depth,
    )
    webhooks = WebhookDispatcher(
        db=db,
        owner=owner,
        url=config.handlers.webhook_url,
        clock=clock,
        backoff=Backoff(config.delivery.initial_backoff_s, config.delivery.max_backoff_s),
        poll_interval_s=config.delivery.poll_interval_s,
    )
    backend = NodeBackend(
        db=db, trust=trust, catalogue=index, origin=origin, owner=owner, policy=policy, clock=clock
    )
    backend.stalled_peers = delivery.stalled_peers
    users = UserStore(db, clock)
    limits = config.limits
    server = grpc.aio.server(
        interceptors=[MalformedRequests()],
        options=[
            ("grpc.max_receive_message_length", limits.max_body_bytes + 1024 * 1024),
            ("grpc.max_send_message_length", limits.max_body_bytes + 1024 * 1024),
        ],
    )
    peer_pb2_grpc.add_PeerServiceServicer_to_server(
        PeerServicer(
            db=db,
            trust=trust,
            verifier=verifier,
            accept=owner.accept,
            apply_status=apply_status_update,
            catalogue=sync.served,
            clock=clock,
            wake=delivery.wake,
            peer_seen=delivery.peer_seen,
            max_batch=limits.max_batch,
        ),
        server,
    )
    counter_limits = CounterLimits(
        max_body_bytes=limits.max_body_bytes,
        max_attachments=limits.max_attachments,
        max_attachment_bytes=limits.max_attachment_bytes,
    )
    counter_pb2_grpc.add_CounterServiceServicer_to_server(
        CounterServicer(backend, users, counter_limits), server
    )
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    http_app = build_http_app(backend, users, clock, counter_limits)
    return Node(
        config=config,
        clock=clock,
        db=db,
        trust=trust,
        index=index,
        delivery=delivery,
        sync=sync,
        gossip=gossip,
        policy=policy,
        backend=backend,
        users=users,
        webhooks=webhooks,
        grpc_server=server,
        http_app=http_app,
    )
