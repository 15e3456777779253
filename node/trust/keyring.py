"""What this node trusts right now: its own key and the newest verified manifest.

The manifest can be replaced at runtime (gossip of a successor), so everything that
needs it asks this object instead of holding a copy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from yrd.federation.v1 import manifest_pb2

from core.errors import NotFound
from core.keys import NodeKey
from registry.manifest import TrustedManifest, verify_successor

log = logging.getLogger(__name__)


@dataclass
class Trust:
    node_id: str
    key: NodeKey
    manifest: TrustedManifest
    # This node's other keys (``opening_key_files``): around a rotation, for opening only.
    others: tuple[NodeKey, ...] = field(default=(), repr=False)

    def member(self, node_id: str) -> manifest_pb2.Member:
        m = self.manifest.member(node_id)
        if m is None:
            raise NotFound(f"{node_id!r} is not a member of the federation", code="unknown_node")
        return m

    def opening_keys(self) -> list[NodeKey]:
        """The keys payloads sealed to this node may be sealed to: the current one, then each
        other key while the manifest in force lists it for us unrevoked. Peers seal to the key
        their manifest names for us at the time: after the successor's switch time the new
        one (which we open before we switch to signing with it), and until every peer has
        the successor, or for items sealed before and still waiting in outboxes, the old
        one. A key the federation dropped or revoked opens nothing more: its window closed."""
        me = self.manifest.member(self.node_id)
        listed = {k.key_id for k in me.keys if k.status != manifest_pb2.KEY_STATUS_REVOKED} if me else set()
        return [self.key, *(k for k in self.others if k.key_id in listed and k.key_id != self.key.key_id)]

    def next_hop(self, destination: str) -> str:
        """The member to hand an envelope for ``destination`` to: its relay when the
        manifest names one (and we are not that relay), else the destination itself."""
        m = self.member(destination)
        if m.relay and m.relay not in (self.node_id, destination):
            return m.relay
        return destination

    def public_key_of(self, node_id: str, at_ms: int) -> bytes:
        """The key to seal data to: the member's key that signs at ``at_ms``."""
        key_id = self.manifest.signing_key_id(node_id, at_ms)
        return self.manifest.verify_key(node_id, key_id, at_ms)

    def accept_successor(self, candidate: manifest_pb2.SignedManifest, now_ms: int) -> bool:
        """Adopt a newer manifest when it carries a quorum of the current one."""
        if candidate.manifest == self.manifest.signed.manifest:
            return False
        newer = verify_successor(self.manifest, candidate, now_ms)
        log.info("adopted manifest version %d (%s)", newer.manifest.version, newer.fingerprint)
        self.manifest = newer
        return True
