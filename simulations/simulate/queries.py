"""Consented data queries for the load: a counter asks the health-code screen of one person.

The screen is every resource of the topology's directly reached nodes that holds persons'
records and is shared unconditionally (with the shipped samples: Shanghai's health code,
Jiangsu's nucleic-acid results, Zhejiang's vaccinations, as the demo's screen), asked with the
person's recorded consent. Where nodes sit behind a relay (the delta's cities, each holding its
residence permits) each query also asks one of theirs, chosen at random, through its relay.
The person is one whose records the holders loaded (``registry/samples/data_records/``), so
most items come back answered and some ``no_record``; what a killed or paused holder (or a
relay before it) cannot answer within the deadline comes back ``missing``, as a clerk would
see it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from registry.data_catalogue import load_data_resources
from simulations.local_federation import NodeSpec

PURPOSE = "health-check"
DEADLINE_MS = 3000
OUTCOMES = ("answered", "no_record", "refused", "missing")


@dataclass(frozen=True)
class Screen:
    """What a counter may ask: the screen's resources, for any of the persons on record."""

    resources: tuple[str, ...]
    subjects: tuple[str, ...]
    relayed: tuple[str, ...] = ()  # held behind a relay: one of them joins each query


def screen_of(specs: Sequence[NodeSpec]) -> Screen | None:
    """The health-code screen of this topology, or None when no node holds such records."""
    held = {
        spec.node_id: [
            r.resource_id
            for r in load_data_resources(spec.catalogue)
            if r.subject_kind == "person" and r.sharing == "unconditional"
        ]
        for spec in specs
    }
    resources = [r for spec in specs if not spec.relay for r in held[spec.node_id]]
    relayed = [r for spec in specs if spec.relay for r in held[spec.node_id]]
    subjects: set[str] = set()
    for spec in specs:
        if spec.records is None:
            continue
        doc = json.loads(spec.records.read_text(encoding="utf-8"))
        subjects.update(r["subject"] for r in doc["records"] if r["resource"] in resources)
    if not resources or not subjects:
        return None
    return Screen(tuple(resources), tuple(sorted(subjects)), tuple(relayed))


def query_body(screen: Screen, subject: str, now: datetime, rng: random.Random) -> dict[str, Any]:
    """The JSON body of ``POST /api/v1/queries``, with the person's consent for an hour."""
    resources = [*screen.resources, *([rng.choice(screen.relayed)] if screen.relayed else [])]
    return {
        "subject": {"kind": "person", "id": subject},
        "purpose": PURPOSE,
        "resources": [{"id": r} for r in resources],
        "deadline_ms": DEADLINE_MS,
        "consent": {
            "given_by": "模拟市民",
            "subject_id": subject,
            "resources": resources,
            "purpose": PURPOSE,
            "until": (now + timedelta(hours=1)).isoformat(),
        },
    }


async def ask(
    http: aiohttp.ClientSession, url: str, token: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    async with http.post(
        f"{url}/api/v1/queries", json=body, headers={"Authorization": f"Bearer {token}"}
    ) as r:
        doc = await r.json(content_type=None)
        return r.status, doc if isinstance(doc, dict) else {}
