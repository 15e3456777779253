"""Catalogue exchange: each node pulls every peer's signed catalogue and serves the union.

A pull names the digest the caller already holds, so an unchanged catalogue costs one
small signed round trip. Every entry is verified against its owner's key in the
manifest and the owner's right to the jurisdiction, so a relay or a peer cannot alter
or invent an entry. The last good catalogue of each peer is kept in the database and
served after a restart even while that peer is down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import grpc
from sqlmodel import Session, select
from yrd.catalogue.v1 import catalogue_pb2
from yrd.peer.v1 import peer_pb2

from core.clock import Clock
from core.db import Database
from core.errors import NotFound, YrdError
from core.statements import driver, insert_into
from node import metrics
from node.delivery.channels import Channels
from node.delivery.peer_client import parse_body, signed_call
from node.models import PeerCatalogue
from node.trust.envelope import EnvelopeVerifier
from node.trust.keyring import Trust
from registry.catalogue import build_catalogue, catalogue_digest, verify_entry
from registry.data_catalogue import DataIndex, verify_data_entry
from registry.lookup import CatalogueIndex

log = logging.getLogger(__name__)
GET_CATALOGUE = "/yrd.peer.v1.PeerService/GetCatalogue"


class CatalogueSync:
    def __init__(
        self,
        *,
        db: Database,
        trust: Trust,
        index: CatalogueIndex,
        channels: Channels,
        verifier: EnvelopeVerifier,
        clock: Clock,
        own_entries: Iterable[catalogue_pb2.SignedServiceEntry],
        interval_s: float = 30.0,
        data_index: DataIndex | None = None,
        own_data: Iterable[catalogue_pb2.SignedDataEntry] = (),
    ) -> None:
        self.db, self.trust, self.index, self.channels = db, trust, index, channels
        self.verifier, self.clock, self.interval_s = verifier, clock, interval_s
        self._digests: dict[str, bytes] = {}
        self._entries: dict[str, list[catalogue_pb2.SignedServiceEntry]] = {}
        # The data catalogue (docs/sharing.md) travels in the same signed catalogue, per signer.
        self.data_index = data_index if data_index is not None else DataIndex()
        self._data: dict[str, list[catalogue_pb2.SignedDataEntry]] = {}
        self._task: asyncio.Task[None] | None = None
        own = build_catalogue(trust.node_id, own_entries)
        own.data.extend(own_data)
        self._adopt(trust.node_id, own, b"")

    def served(self) -> tuple[bytes, bytes]:
        """(digest, serialized catalogue) of what this node serves: the union of every
        verified entry it holds, each still under its owner's signature, so a member that
        is reachable only through a relay still has its services known federation-wide."""
        return self._served_digest, self._served_bytes

    def _rebuild_union(self) -> None:
        newest: dict[tuple[str, str], tuple[int, catalogue_pb2.SignedServiceEntry]] = {}
        for entries in self._entries.values():
            for entry in entries:
                defn = catalogue_pb2.ServiceDefinition.FromString(entry.definition)
                key = (entry.node_id, defn.service_id)
                if key not in newest or newest[key][0] < defn.version:
                    newest[key] = (defn.version, entry)
        union = build_catalogue(self.trust.node_id, [e for _, e in newest.values()])
        union.data.extend(e for signer in sorted(self._data) for e in self._data[signer])
        self._served_bytes = union.SerializeToString()
        self._served_digest = catalogue_digest(self._served_bytes)

    def unsynced(self) -> list[str]:
        """Members whose catalogue this node holds nothing of yet (never pulled, directly or
        through their relay): what it does not list may still exist there."""
        return sorted(
            m.node_id
            for m in self.trust.manifest.members
            if m.node_id != self.trust.node_id and m.node_id not in self._entries
        )

    def serves(self, node_id: str, division_code: str) -> bool:
        try:
            return self.trust.manifest.owner_of(division_code).node_id == node_id
        except NotFound:
            return False

    def _verified(
        self, catalogue: catalogue_pb2.Catalogue
    ) -> list[tuple[catalogue_pb2.SignedServiceEntry, catalogue_pb2.ServiceDefinition]]:
        now = self.clock.now_ms()
        good = []
        for entry in catalogue.entries:
            try:
                good.append((entry, verify_entry(entry, self.trust.manifest, self.serves, now)))
            except YrdError as e:
                log.warning("refused catalogue entry from %r: %r", catalogue.node_id, str(e))
        return good

    def _adopt_data(self, peer: str, catalogue: catalogue_pb2.Catalogue) -> None:
        """The data resources ``peer`` serves, taken by the same rule as its service entries."""
        now = self.clock.now_ms()
        by_signer: dict[str, list[tuple[catalogue_pb2.SignedDataEntry, catalogue_pb2.DataResource]]] = {
            peer: []
        }
        for entry in catalogue.data:
            signer = entry.node_id
            if signer != peer and (signer == self.trust.node_id or self.trust.next_hop(signer) == signer):
                continue
            try:
                resource = verify_data_entry(entry, self.trust.manifest, self.serves, now)
            except YrdError as e:
                log.warning("refused data entry from %r: %r", catalogue.node_id, str(e))
                continue
            by_signer.setdefault(signer, []).append((entry, resource))
        for signer, verified in by_signer.items():
            self.data_index.replace_node(signer, [r for _, r in verified])
            self._data[signer] = [e for e, _ in verified]

    async def load_persisted(self) -> None:
        rows = await self.db.run(lambda s: list(s.exec(select(PeerCatalogue)).all()))
        for row in rows:
            if row.node_id != self.trust.node_id and self.trust.manifest.member(row.node_id) is not None:
                self._adopt(row.node_id, catalogue_pb2.Catalogue.FromString(row.catalogue), row.digest)

    def _adopt(self, peer: str, catalogue: catalogue_pb2.Catalogue, digest: bytes) -> None:
        """Take from ``peer`` its own entries, and those of members we cannot reach but
        through a relay; everyone else's entries we take from their owner directly."""
        by_signer: dict[
            str, list[tuple[catalogue_pb2.SignedServiceEntry, catalogue_pb2.ServiceDefinition]]
        ] = {peer: []}
        for entry, defn in self._verified(catalogue):
            signer = entry.node_id
            if signer == peer or (signer != self.trust.node_id and self.trust.next_hop(signer) != signer):
                by_signer.setdefault(signer, []).append((entry, defn))
        for signer, verified in by_signer.items():
            self.index.replace_node(signer, [d for _, d in verified])
            self._entries[signer] = [e for e, _ in verified]
        self._adopt_data(peer, catalogue)
        self._rebuild_union()
        if digest:
            self._digests[peer] = digest
        metrics.CATALOGUE_SERVICES.set(len(self.index))

    async def pull(self, peer: str) -> bool:
        """Fetch one peer's catalogue; True when it changed."""
        query = peer_pb2.CatalogueQuery(known_digest=self._digests.get(peer, b""))
        body = await signed_call(
            self.channels.peer(peer).GetCatalogue,
            peer_pb2.GetCatalogueRequest,
            trust=self.trust,
            verifier=self.verifier,
            clock=self.clock,
            peer=peer,
            method=GET_CATALOGUE,
            body=query.SerializeToString(),
        )
        answer = parse_body(peer_pb2.CatalogueAnswer, body)
        if answer.unchanged:
            return False
        if catalogue_digest(answer.catalogue) != answer.digest:
            raise YrdError("catalogue digest does not match its bytes", code="catalogue_digest")
        catalogue = parse_body(catalogue_pb2.Catalogue, answer.catalogue)
        self._adopt(peer, catalogue, answer.digest)
        now = self.clock.now_ms()

        await self.db.run(lambda s: store_catalogue(s, peer, answer.digest, answer.catalogue, now))
        log.info("catalogue of %s updated: %d entries", peer, len(catalogue.entries))
        return True

    async def pull_all(self) -> dict[str, str]:
        """Pull every peer once; returns peer -> "ok" | error, for health and tests."""
        results: dict[str, str] = {}
        for member in self.trust.manifest.members:
            if member.node_id == self.trust.node_id or self.trust.next_hop(member.node_id) != member.node_id:
                continue  # a member behind a relay: its entries arrive in the relay's union
            try:
                await self.pull(member.node_id)
                results[member.node_id] = "ok"
            except (grpc.aio.AioRpcError, YrdError) as e:
                results[member.node_id] = str(e.code() if isinstance(e, grpc.aio.AioRpcError) else e)
        return results

    async def run(self) -> None:
        """Pull often until every peer has answered once, then every ``interval_s``."""
        while True:
            results = await self.pull_all()
            missing = [p for p, r in results.items() if r != "ok" and p not in self._digests]
            await self.clock.sleep(1.0 if missing else self.interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="catalogue-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def store_catalogue(s: Session, peer: str, digest: bytes, catalogue: bytes, now_ms: int) -> None:
    """Keep a peer's catalogue as fetched. An upsert, not a merge (SELECT, then INSERT or
    UPDATE): the periodic pull and one asked for (health, a test, a replica's) can store one
    peer's catalogue at once, and on PostgreSQL both merges found no row and the second INSERT
    failed on the key."""
    params = {"node_id": peer, "digest": digest, "catalogue": catalogue, "fetched_at_ms": now_ms}
    driver(s).execute(_UPSERT, params)


_UPSERT = insert_into(PeerCatalogue.__table__, on_conflict_update=("digest", "catalogue", "fetched_at_ms"))  # type: ignore[attr-defined]
