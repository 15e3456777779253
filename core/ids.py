"""Ids this node mints for what it creates: applications, clues, data queries and requests,
policy decisions."""

from __future__ import annotations

import secrets


def new_id(now_ms: int) -> str:
    """Time-ordered and unguessable: 12 hex digits of milliseconds, 16 of randomness. The
    randomness keeps ids from several replicas apart; the time prefix makes each new id land at
    the end of its table's key index, where a random id wrote a page of its own somewhere in it
    (docs/performance.md, "Ninth round")."""
    return f"{now_ms:012x}{secrets.token_hex(8)}"
