"""Manifest gossip: ask peers for a newer manifest and adopt it when it carries a
quorum of the one we trust. The adopted manifest is kept beside the anchor so a
restart does not fall back to an older membership."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc
from yrd.peer.v1 import peer_pb2

from core.clock import Clock
from core.errors import YrdError
from node import metrics
from node.delivery.channels import Channels
from node.delivery.peer_client import parse_body, signed_call
from node.trust.envelope import EnvelopeVerifier
from node.trust.keyring import Trust
from registry.manifest import save_signed_manifest

log = logging.getLogger(__name__)
GET_MANIFEST = "/yrd.peer.v1.PeerService/GetManifest"


class ManifestGossip:
    def __init__(
        self,
        *,
        trust: Trust,
        channels: Channels,
        verifier: EnvelopeVerifier,
        clock: Clock,
        store: Path,
        interval_s: float = 30.0,
    ) -> None:
        self.trust, self.channels, self.verifier, self.clock = trust, channels, verifier, clock
        self.store, self.interval_s = store, interval_s
        self._task: asyncio.Task[None] | None = None

    async def ask(self, peer: str) -> bool:
        """Ask one peer; True when we adopted a newer manifest from it."""
        query = peer_pb2.ManifestQuery(known_version=self.trust.manifest.manifest.version)
        body = await signed_call(
            self.channels.peer(peer).GetManifest,
            peer_pb2.GetManifestRequest,
            trust=self.trust,
            verifier=self.verifier,
            clock=self.clock,
            peer=peer,
            method=GET_MANIFEST,
            body=query.SerializeToString(),
        )
        answer = parse_body(peer_pb2.ManifestAnswer, body)
        if not answer.HasField("manifest"):
            return False
        if not self.trust.accept_successor(answer.manifest, self.clock.now_ms()):
            return False
        save_signed_manifest(self.store, answer.manifest)
        metrics.MANIFEST_EXPIRES.set(self.trust.manifest.manifest.expires_at_ms / 1000)
        return True

    async def run(self) -> None:
        while True:
            await self.clock.sleep(self.interval_s)
            for member in list(self.trust.manifest.members):
                peer = member.node_id
                if peer == self.trust.node_id or self.trust.next_hop(peer) != peer:
                    continue
                try:
                    await self.ask(peer)
                except (grpc.aio.AioRpcError, YrdError) as e:
                    log.debug("manifest gossip with %s failed: %r", peer, str(e))

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="manifest-gossip")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
