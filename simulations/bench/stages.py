"""Where a routed application's time goes, stage by stage, read from the nodes' databases.

A p99 alone says the tail is long, not where an application sat. Each node already stamps
the moments that bound the stages, on the host's wall clock that every process shares:

- ``counter``: the harness sends the submit → the origin's handler stamps
  ``application.submitted_at_ms`` (HTTP queueing, parsing, the bearer session);
- ``to_owner``: → the owner's peer service starts on the ``Deliver`` batch holding it (its
  audit record ``in`` ``Deliver``): the origin's transaction and commit, the sender's wake,
  claim and signing, any batch still in flight before it, the network;
- ``owner_to_origin``: → the origin takes in its last status change: its peer service starts
  on the ``NotifyStatus`` batch holding it (audit record ``in`` ``NotifyStatus``), or, for
  changes that rode on the ``Deliver`` receipt (docs/protocol.md 10.6), its sender settles
  that receipt (audit record ``in`` ``Deliver`` ``<id>#<first>-<last>``): the owner's accept
  and commit, then either its sender's wake, claim and signing and the network, or the
  receipt's way back and the origin's settle;
- ``at_origin``: → the harness sees the final status in the origin's database: the
  origin's transaction and commit, plus the watcher's poll interval.

The four add up to the latency from the sent submit. ``owner_reply`` (owner's start →
the origin settles the ``Deliver`` receipt, its audit record ``out`` ``Deliver``) is off
that path and given as a side figure: the owner's accept as its caller sees it.
The databases are opened read-only and only once the load has stopped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from node.delivery.relaying import DELIVER, NOTIFY_STATUS
from simulations.traffic import open_ro, percentile

RODE = "status-on-receipt"  # the key of a run's audit record, apart from the owner's "in Deliver"
STAGES = ("counter", "to_owner", "owner_to_origin", "at_origin", "owner_reply")
QUANTILES = {"p50_ms": 0.5, "p90_ms": 0.9, "p99_ms": 0.99}


def breakdown(
    db_paths: Mapping[str, Path], sent_ms: Mapping[str, float], seen_ms: Mapping[str, float]
) -> dict[str, dict[str, float]]:
    """Per stage, its p50/p90/p99 in ms over the applications in ``sent_ms`` (id → wall-clock
    ms the submit was sent) that the harness saw final (``seen_ms``, the same clock)."""
    submitted: dict[str, int] = {}
    audit: dict[tuple[str, str, str], int] = {}  # (direction, method, application id) -> at_ms
    for path in db_paths.values():
        conn = open_ro(path)
        try:
            submitted.update(conn.execute("SELECT id, submitted_at_ms FROM application").fetchall())
            rows = conn.execute(
                "SELECT direction, method, detail, MAX(at_ms) FROM audit_record"
                " WHERE method IN (?, ?) GROUP BY direction, method, detail",
                (DELIVER, NOTIFY_STATUS),
            ).fetchall()
        finally:
            conn.close()
        for direction, method, detail, at_ms in rows:
            rode = method == DELIVER and "#" in detail  # a run taken in on a receipt: "<id>#1-4"
            key = (direction, RODE, detail.partition("#")[0]) if rode else (direction, method, detail)
            audit[key] = max(at_ms, audit.get(key, at_ms))
    spans: dict[str, list[float]] = defaultdict(list)
    for app_id, sent in sent_ms.items():
        seen = seen_ms.get(app_id)
        back = [audit.get(("in", method, app_id)) for method in (NOTIFY_STATUS, RODE)]
        marks = (
            submitted.get(app_id),
            audit.get(("in", DELIVER, app_id)),
            max((m for m in back if m is not None), default=None),
        )
        if seen is None or None in marks:
            continue  # refused at the counter or not delivered: no stages to tell
        at_counter, at_owner, back_at_origin = (float(m) for m in marks if m is not None)
        spans["counter"].append(at_counter - sent)
        spans["to_owner"].append(at_owner - at_counter)
        spans["owner_to_origin"].append(back_at_origin - at_owner)
        spans["at_origin"].append(seen - back_at_origin)
        replied = audit.get(("out", DELIVER, app_id))
        if replied is not None:
            spans["owner_reply"].append(replied - at_owner)
    return {
        stage: {name: round(percentile(sorted(spans[stage]), q), 1) for name, q in QUANTILES.items()}
        for stage in STAGES
        if spans[stage]
    }
