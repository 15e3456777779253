"""Sections 6.6, 6.7 and 10 of docs/protocol.md: signing-key choice, routing, the owner's checks.

Written from the document alone, like the rest of this package; each rule cites its section.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tests.independent import wire
from tests.independent.primitives import Rejected
from tests.independent.ref_manifest import Manifest

ACTIVE = 1

# 10.1, field 1: 1 to 64 characters of 0-9 a-z -, the first not '-'. ASCII only, so no \w.
_APPLICATION_ID = re.compile(r"[0-9a-z][0-9a-z-]{0,63}")


@dataclass(frozen=True)
class Transfer:
    """An ApplicationTransfer by the field numbers of the 10.1 table."""

    application_id: str
    origin_node: str
    service_id: str
    service_version: int
    submitted_at_ms: int
    purpose: str
    consent: bool
    sealed_payload: bytes
    fields_present: tuple[str, ...]
    status_on_receipt: bool  # 10.1 field 10: read, never checked (10.6 is the origin's business)


def read_transfer(raw: bytes) -> Transfer:
    strings = dict.fromkeys((1, 2, 3, 6), "")
    version = submitted = 0
    consent = on_receipt = False
    sealed = b""
    present: list[str] = []
    schema = dict.fromkeys((1, 2, 3, 6, 8, 9), wire.LENGTH_DELIMITED) | dict.fromkeys(
        (4, 5, 7, 10), wire.VARINT
    )
    for number, value in wire.known_fields(raw, schema):
        if number in strings:
            assert isinstance(value, bytes)
            strings[number] = wire.as_string(value)
        elif number == 4:
            assert isinstance(value, int)
            version = value
        elif number == 5:
            assert isinstance(value, int)
            submitted = wire.as_int64(value)
        elif number == 7:
            consent = value != 0
        elif number == 10:
            on_receipt = value != 0
        elif number == 8:
            assert isinstance(value, bytes)
            sealed = value
        else:
            assert isinstance(value, bytes)
            present.append(wire.as_string(value))
    return Transfer(
        strings[1],
        strings[2],
        strings[3],
        version,
        submitted,
        strings[6],
        consent,
        sealed,
        tuple(present),
        on_receipt,
    )


def check_transfer(
    t: Transfer,
    *,
    sender: str,
    services: dict[str, int],
    now_ms: int,
    max_skew_ms: int,
    max_age_ms: int,
    max_ahead_ms: int,
    form_fields: list[str],
) -> None:
    """10.3 steps 1, 2, 4, 5, 6 and 9 (step 3 needs a store, 7 and 8 the opened payload)."""
    if t.origin_node != sender:
        raise Rejected("origin_mismatch", t.origin_node)
    if _APPLICATION_ID.fullmatch(t.application_id) is None:
        raise Rejected("invalid_application_id", t.application_id[:80])
    if t.service_id not in services:
        raise Rejected("unknown_service", t.service_id)
    if t.service_version != services[t.service_id]:
        raise Rejected("unknown_version", str(t.service_version))
    if now_ms + max_skew_ms < t.submitted_at_ms <= now_ms + max_ahead_ms:
        raise Rejected("stamped_ahead", str(t.submitted_at_ms))
    if not now_ms - max_age_ms <= t.submitted_at_ms <= now_ms + max_skew_ms:
        raise Rejected("bad_time", str(t.submitted_at_ms))
    # "differs (as a multiset)": the same names, each as often.
    if sorted(t.fields_present) != sorted(form_fields):
        raise Rejected("fields_present_mismatch", ",".join(t.fields_present))


def owner_of(manifest: Manifest, division_code: str) -> str:
    """6.7: the member with the longest jurisdiction prefix the code starts with."""
    best = max(
        (
            (len(prefix), member.node_id)
            for member in manifest.members
            for prefix in member.jurisdictions
            if division_code.startswith(prefix)
        ),
        default=None,
    )
    if best is None:
        raise Rejected("no_route", division_code)
    return best[1]


def signing_key_id(manifest: Manifest, node_id: str, at_ms: int) -> str:
    """6.6 step 2: the active key valid at ``at_ms`` with the latest not_before_ms, ties to the
    larger key id; none at all is `no_signing_key`."""
    member = manifest.member(node_id)
    usable = [
        key
        for key in (member.keys if member else ())
        if key.status == ACTIVE and key.not_before_ms <= at_ms < key.not_after_ms
    ]
    if not usable:
        raise Rejected("no_signing_key", node_id)
    return max(usable, key=lambda key: (key.not_before_ms, key.key_id)).key_id
