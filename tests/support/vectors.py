"""docs/protocol-vectors.json, loaded once for the tests that hold our code to it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from yrd.envelope.v1.envelope_pb2 import Envelope

ROOT = Path(__file__).resolve().parent.parent.parent
VECTORS: dict[str, Any] = json.loads((ROOT / "docs" / "protocol-vectors.json").read_text(encoding="utf-8"))
SEEDS = {k["key_id"]: bytes.fromhex(k["seed"]) for k in VECTORS["keys"]}


def envelope(fields: dict[str, Any]) -> Envelope:
    """An Envelope from a vector's fields (bytes fields are hex)."""
    env = Envelope(
        sender=fields["sender"],
        key_id=fields["key_id"],
        destination=fields["destination"],
        method=fields["method"],
        created_at_ms=fields["created_at_ms"],
    )
    for name in ("nonce", "body", "in_reply_to", "signature"):
        setattr(env, name, bytes.fromhex(fields[name]))
    return env
