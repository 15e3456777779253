"""The node's own random secret, apart from its signing key.

Some keys must outlive a key rotation: the subject digests that name every held record
(node/sharing/checks.py) and the check codes printed on citizens' receipts (node/counter/
backend.py). Deriving them from the signing key would orphan the records and void the receipts
at each rotation, so they come from 32 random bytes made once per node, in its database and
therefore shared by its replicas.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlmodel import Session

from core.db import conflict_insert
from node.models import NodeSecret


def local_secret(s: Session) -> bytes:
    """Made on first use; two replicas racing to make it keep the first (the insert does
    nothing when the row exists)."""
    row = s.get(NodeSecret, 1)
    if row is None:
        fresh = conflict_insert(s, NodeSecret).values(id=1, secret=secrets.token_bytes(32))
        s.execute(fresh.on_conflict_do_nothing())
        row = s.get(NodeSecret, 1)
    assert row is not None  # inserted above, or by whoever won the race
    return bytes(row.secret)


def derived_key(secret: bytes, purpose: bytes) -> bytes:
    """One key per purpose, so no two uses of the secret can be played against each other."""
    return hmac.new(secret, b"yrd-purpose\0" + purpose, hashlib.sha256).digest()
