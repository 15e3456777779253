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
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from aiohttp import web
from argon2 import PasswordHasher
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session
from yrd.catalogue.v1 import catalogue_pb2
from yrd.counter.v1 import counter_pb2, counter_pb2_grpc
from yrd.peer.v1 import peer_pb2, peer_pb2_grpc

from core.clock import Clock, OffsetClock, SystemClock
from core.db import Database
from core.errors import ConfigError
from core.keys import NodeKey, load_key
from node import metrics, migrations
from node.cases.bundles.runner import Bundles
from node.cases.clues import Clues
from node.cases.origin import Origin, apply_delivery_receipt, apply_receipt_run
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
from node.delivery.checkpoints import Checkpoints
from node.delivery.gossip import ManifestGossip
from node.delivery.outbox import Backoff
from node.delivery.peer_limits import PeerLimits
from node.delivery.peer_server import PeerServicer
from node.delivery.sender import Delivery, ReceiptHandler
from node.grpc_errors import MalformedRequests
from node.http.app import build_http_app
from node.http.deadlines import HeaderDeadline
from node.http.limits import http_limits
from node.sharing.asker import DataAsker
from node.sharing.holder import DataHolder
from node.trust.envelope import EnvelopeVerifier
from node.trust.keyring import Trust
from node.trust.nonces import SqlNonceStore
from node.trust.secret import local_secret
from node.trust.tls import TlsIdentity, load_tls_identity, server_credentials
from policies.signing import read_signed
from registry.catalogue import load_catalogue_file, sign_entry
from registry.data_catalogue import DataIndex, load_data_resources, sign_data_entry
from registry.dispatch import parse_dispatch_rules
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
    checkpoints: Checkpoints
    policy: PolicyGate
    backend: NodeBackend
    users: UserStore
    webhooks: WebhookDispatcher
    bundles: Bundles
    grpc_server: grpc.aio.Server
    http_app: web.Application
    grpc_credentials: grpc.ServerCredentials | None = None  # None: plaintext, by explicit config
    http_ssl: ssl.SSLContext | None = None
    grpc_port: int = 0
    http_port: int = 0
    _http_runner: web.AppRunner | None = None
    _http_listener: asyncio.Server | None = None
    _health: health.aio.HealthServicer = field(default_factory=health.aio.HealthServicer)
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def http_url(self) -> str:
        scheme = "https" if self.http_ssl is not None else "http"
        return f"{scheme}://{self.config.http_listen.rsplit(':', 1)[0]}:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"{self.config.grpc_listen.rsplit(':', 1)[0]}:{self.grpc_port}"

    async def start(self) -> None:
        """Start everything, or, when a part cannot start (a port taken), stop what did."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        await self.sync.load_persisted()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self.grpc_server)
        if self.grpc_credentials is None:
            self.grpc_port = self.grpc_server.add_insecure_port(self.config.grpc_listen)
        else:
            self.grpc_port = self.grpc_server.add_secure_port(self.config.grpc_listen, self.grpc_credentials)
        if self.grpc_port == 0:
            raise ConfigError(f"cannot listen on {self.config.grpc_listen}", field="grpc_listen")
        await self.grpc_server.start()
        # Idle kept-alive connections close after a minute rather than aiohttp's hour.
        self._http_runner = web.AppRunner(self.http_app, access_log=None, keepalive_timeout=75.0)
        await self._http_runner.setup()
        host, port = self.config.http_listen.rsplit(":", 1)
        handlers = self._http_runner.server
        assert handlers is not None  # set by setup()
        header_timeout_s = self.config.limits.http_header_timeout_s
        # Our own listener (not web.TCPSite) so each connection gets its header deadline.
        self._http_listener = await asyncio.get_running_loop().create_server(
            lambda: HeaderDeadline(handlers(), header_timeout_s), host, int(port), ssl=self.http_ssl
        )
        self.http_port = self._http_listener.sockets[0].getsockname()[1]
        await self.delivery.start()
        self.sync.start()
        self.gossip.start()
        self.checkpoints.start()
        self.policy.start()
        self.webhooks.start()
        self.backend.clues.start()

        self.bundles.start()
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
        if self._http_listener is not None:
            self._http_listener.close()
        if self._http_runner is not None:
            await self._http_runner.cleanup()
        await self.grpc_server.stop(grace=5.0)
        await self.delivery.stop()
        await self.sync.stop()
        await self.gossip.stop()
        await self.checkpoints.stop()
        await self.policy.stop()
        await self.webhooks.stop()
        await self.backend.clues.stop()

        await self.bundles.stop()
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
    return _database_errors(db, lambda: db.create(migrations.upgrade))


def open_node_database(config: NodeConfig) -> Database:
    """An existing node's database, refused if missing, empty or damaged (core/db.py)."""
    db = Database(config.database_url)
    return _database_errors(db, lambda: db.open_existing(migrations.check_at_head))


def load_catalogues(
    config: NodeConfig,
) -> tuple[list[catalogue_pb2.ServiceDefinition], list[catalogue_pb2.DataResource]]:
    """The node's services and the data resources it holds (its ``[[data]]`` tables), from
    its catalogue file."""
    catalogue_node, definitions = load_catalogue_file(config.catalogue)
    if catalogue_node != config.node_id:
        raise ConfigError(
            f"catalogue belongs to {catalogue_node!r}, not {config.node_id!r}", field="catalogue"
        )
    return definitions, load_data_resources(config.catalogue)


def _data_sharing(
    config: NodeConfig,
    db: Database,
    trust: Trust,
    resources: list[catalogue_pb2.DataResource],
    index: DataIndex,
    policy: PolicyGate,
    clock: Clock,
    delivery: Delivery,
    channels: Channels,
    verifier: EnvelopeVerifier,
    secret: bytes,
) -> tuple[DataHolder, DataAsker]:
    """This node as holder of its data resources and as asker of everyone's (docs/sharing.md)."""
    holder = DataHolder(
        db=db,
        trust=trust,
        resources=resources,
        policy=policy,
        clock=clock,
        wake=delivery.wake,
        secret=secret,
        max_skew_ms=config.max_skew_ms,
    )
    asker = DataAsker(
        db=db,
        trust=trust,
        index=index,
        holder=holder,
        policy=policy,
        channels=channels,
        verifier=verifier,
        clock=clock,
        wake=delivery.wake,
        # Half the per-peer cap (peers run the same defaults): the other half stays for deliveries.
        calls_per_holder=max(1, config.limits.peer_max_concurrent_calls // 2),
    )
    holder.apply_local_update = asker.apply_update
    return holder, asker


def _receipts_to(bundles: Bundles) -> ReceiptHandler:
    """A receiver's signed receipt, for whichever kind of item it answers (at most one
    matches): an application, which may be a bundle's part whose run it wakes, or a clue.
    A status run on it is taken in first, by the code that takes NotifyStatus runs in
    (``bundles.apply_status``); a run that fails its checks makes the receipt unusable, and
    nothing of it is kept."""

    def on_receipt(
        s: Session, item_id: str, from_node: str, receipt: peer_pb2.Receipt, envelope: bytes, at_ms: int
    ) -> str | None:
        problem = apply_receipt_run(s, item_id, from_node, receipt, envelope, at_ms, bundles.apply_status)
        if problem is not None:
            return problem
        if bundles.on_receipt(s, item_id, from_node, receipt, envelope, at_ms):
            return None  # an application's: no clue or data request has its id
        Clues.apply_receipt(s, item_id, from_node, receipt, envelope, at_ms)
        DataAsker.apply_receipt(s, item_id, from_node, receipt, envelope, at_ms)
        return None

    return on_receipt


def node_tls(config: NodeConfig, manifest: TrustedManifest) -> TlsIdentity | None:
    """This node's TLS identity, or None when node.toml says ``[transport] plaintext = true``.
    Refused unless the manifest pins the certificate: peers would refuse every handshake."""
    if config.transport.plaintext:
        log.warning("node %s talks plaintext gRPC to its peers ([transport] plaintext)", config.node_id)
        return None
    tls = load_tls_identity(config.transport.tls_cert, config.transport.tls_key)
    member = manifest.member(config.node_id)
    if member is None or tls.cert_der not in member.tls_certificates:
        raise ConfigError(
            f"the TLS certificate {config.transport.tls_cert} is not pinned for {config.node_id} in the "
            "manifest; pin it with a manifest successor (docs/deploy.md, Transport security)",
            field="transport.tls_cert",
        )
    return tls


def https_context(config: NodeConfig) -> ssl.SSLContext | None:
    """The counter front's HTTPS context when node.toml names a certificate and key."""
    t = config.transport
    if t.https_cert is None or t.https_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(t.https_cert, t.https_key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cannot load the HTTPS certificate: {e}", field="transport.https_cert") from e
    return context


def node_clock(config: NodeConfig, clock: Clock) -> Clock:
    """``clock`` moved by ``[clock] offset_ms`` when set (a skewed host, as simulated)."""
    if not config.clock.offset_ms:
        return clock
    log.warning(
        "node %s runs its clock %+d ms off ([clock] offset_ms)", config.node_id, config.clock.offset_ms
    )
    return OffsetClock(clock, config.clock.offset_ms)


def opening_keys(config: NodeConfig) -> tuple[NodeKey, ...]:
    """The keys of ``opening_key_files`` (a rotation's next or old key), under the same passphrase."""
    keys = []
    for path in config.opening_key_files:
        try:
            keys.append(load_key(path, key_passphrase(os.environ)))
        except ConfigError as e:
            raise ConfigError(e.reason, code=e.code, field="opening_key_files") from e
    return tuple(keys)


def _check_listed(config: NodeConfig, manifest: TrustedManifest, key: NodeKey) -> None:
    """A node whose key the federation does not list could sign nothing anyone accepts."""
    member = manifest.member(config.node_id)
    if member is None:
        raise ConfigError(f"{config.node_id!r} is not a member of the anchor manifest", field="node_id")
    if key.key_id not in {k.key_id for k in member.keys}:
        raise ConfigError(
            f"key {key.key_id} is not listed for {config.node_id} in the manifest", field="key_file"
        )


def build_node(
    config: NodeConfig,
    clock: Clock | None = None,
    *,
    limits_clock: Clock | None = None,
    hasher: PasswordHasher | None = None,
) -> Node:
    """``limits_clock`` times the per-peer and per-clerk rate limits (default: ``clock``);
    a test gives them a FakeClock of their own to move bucket time and nothing else.
    ``hasher``: argon2 parameters for the accounts (default: argon2-cffi's); a test federation
    passes cheap ones, as the password checks are the same code whatever they cost."""
    clock = node_clock(config, clock or SystemClock())
    limits_clock = limits_clock or clock
    key = load_key(config.key_file, key_passphrase(os.environ))
    others = opening_keys(config)
    manifest = load_trusted_manifest(config)
    _check_listed(config, manifest, key)
    definitions, data_resources = load_catalogues(config)
    db = open_node_database(config)
    trust = Trust(config.node_id, key, manifest, others)
    verifier = EnvelopeVerifier(
        config.node_id,
        lambda: trust.manifest,
        SqlNonceStore(db, window_ms=2 * config.max_skew_ms),
        clock,
        max_skew_ms=config.max_skew_ms,
    )
    tls = node_tls(config, manifest)
    channels = Channels(trust, config.limits.max_body_bytes + 1024 * 1024, tls)
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
        claim_lease_s=config.delivery.claim_lease_s,
        on_receipt=apply_delivery_receipt,  # widened below, once the bundle runner exists
        rng=random.Random(),
    )
    index = CatalogueIndex()
    data_index = DataIndex()
    own_services: dict[str, catalogue_pb2.ServiceDefinition] = {d.service_id: d for d in definitions}
    sync = CatalogueSync(
        db=db,
        trust=trust,
        index=index,
        channels=channels,
        verifier=verifier,
        clock=clock,
        own_entries=[sign_entry(d, config.node_id, key) for d in definitions],
        data_index=data_index,
        own_data=[sign_data_entry(r, config.node_id, key) for r in data_resources],
    )
    gossip = ManifestGossip(
        trust=trust,
        channels=channels,
        verifier=verifier,
        clock=clock,
        store=config.data_dir / CURRENT_MANIFEST,
        interval_s=config.delivery.gossip_interval_s,
    )
    checkpoints = Checkpoints(
        db=db,
        trust=trust,
        channels=channels,
        verifier=verifier,
        clock=clock,
        interval_s=config.audit_checkpoint_interval_s,
        every_records=config.audit_checkpoint_records,
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
    bundles = Bundles(
        db=db,
        trust=trust,
        catalogue=index,
        origin=origin,
        owner=owner,
        clock=clock,
        wake=delivery.wake,
        poll_interval_s=config.delivery.poll_interval_s,
        max_skew_ms=config.max_skew_ms,
        unsynced=sync.unsynced,
    )
    # The runner needs delivery.wake, so delivery exists first; nothing is sent before start.
    delivery.on_receipt = _receipts_to(bundles)
    owner.on_bundle = bundles.start_run
    webhooks = WebhookDispatcher(
        db=db,
        owner=owner,
        url=config.handlers.webhook_url,
        clock=clock,
        backoff=Backoff(config.delivery.initial_backoff_s, config.delivery.max_backoff_s),
        poll_interval_s=config.delivery.poll_interval_s,
    )
    owner.on_webhook = webhooks.wake
    # Supervision clues (docs/clues.md): the node's signed dispatch rules, verified by its own key.
    rules = None
    if config.dispatch_rules is not None:
        path = config.dispatch_rules
        rules = parse_dispatch_rules(read_signed(path, key.public_key), str(path))
        if rules.node_id != config.node_id:
            raise ConfigError(
                f"dispatch rules belong to {rules.node_id!r}, not {config.node_id!r}", field="dispatch_rules"
            )
    clues = Clues(
        db=db,
        trust=trust,
        rules=rules,
        policy=policy,
        clock=clock,
        wake=delivery.wake,
        max_skew_ms=config.max_skew_ms,
    )
    secret = db.transact(local_secret)  # made once, before the node serves
    data_holder, data_asker = _data_sharing(
        config, db, trust, data_resources, data_index, policy, clock, delivery, channels, verifier, secret
    )
    backend = NodeBackend(
        db=db,
        trust=trust,
        catalogue=index,
        origin=origin,
        owner=owner,
        policy=policy,
        clock=clock,
        clues=clues,
        data_asker=data_asker,
        data_holder=data_holder,
        secret=secret,
    )
    backend.stalled_peers = delivery.stalled_peers
    backend.bundles = bundles
    users = UserStore(db, clock, hasher)
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
            accept=bundles.accept,
            apply_status=bundles.apply_status,
            catalogue=sync.served,
            clock=clock,
            wake=delivery.wake,
            peer_seen=delivery.peer_seen,
            max_batch=limits.max_batch,
            accept_clue=clues.accept,
            apply_clue_update=clues.apply_update,
            accept_data_request=data_holder.accept_request,
            apply_data_update=data_asker.apply_update,
            answer_query=data_holder.answer,
            forward_query=delivery.channels.relay_query,
            limits=PeerLimits(
                trust,
                limits_clock,
                rate=limits.peer_calls_per_s,
                burst=limits.peer_burst,
                max_concurrent=limits.peer_max_concurrent_calls,
            ),
        ),
        server,
    )
    counter_limits = CounterLimits(
        max_body_bytes=limits.max_body_bytes,
        max_attachments=limits.max_attachments,
        max_attachment_bytes=limits.max_attachment_bytes,
    )
    door_limits = http_limits(limits_clock, limits)
    counter_pb2_grpc.add_CounterServiceServicer_to_server(
        CounterServicer(backend, users, counter_limits, door_limits.clerks), server
    )
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    http_app = build_http_app(backend, users, clock, counter_limits, door_limits)
    return Node(
        config=config,
        clock=clock,
        db=db,
        trust=trust,
        index=index,
        delivery=delivery,
        sync=sync,
        gossip=gossip,
        checkpoints=checkpoints,
        policy=policy,
        backend=backend,
        users=users,
        webhooks=webhooks,
        bundles=bundles,
        grpc_server=server,
        http_app=http_app,
        grpc_credentials=None
        if tls is None
        else server_credentials(tls, lambda: trust.manifest.members, mutual=config.transport.mutual_tls),
        http_ssl=https_context(config),
    )
