"""What an operator and a person see of data sharing (docs/sharing.md): the records file an
operator loads (``yrd data load``), the disclosure logs at both ends, and the call meter
(``yrd data report``, ``GET /api/v1/data-meter``).

The records file is JSON, one document per node:
``{"node_id": "jiangsu", "records": [{"resource": "js.nucleic-acid", "subject": "<id>",
"updated_at": "2026-11-29T08:00:00+08:00", "fields": {...}}]}``; every record is checked
against its resource's fields (types, choices, resident ids) before any is stored, and an
error names the record and the field.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select
from yrd.catalogue.v1 import catalogue_pb2

from core.errors import ConfigError, InvalidInput, clip
from core.statements import driver, insert_into
from node.cases.deadlines import iso
from node.models import DataDisclosure, DataMeter, DataRecordRow
from node.sharing.checks import check_subject, split, subject_ref
from registry.forms import validate_form

MAX_RECORDS_BYTES = 64 * 1024 * 1024
Record = tuple[str, dict[str, Any], int]  # subject id, fields, updated_at_ms


def read_records_file(
    path: Path, node_id: str, resources: Mapping[str, catalogue_pb2.DataResource]
) -> dict[str, list[Record]]:
    """The records of a file by resource, each checked against the resource it names."""
    try:
        if path.stat().st_size > MAX_RECORDS_BYTES:
            raise ConfigError(f"{path} is larger than {MAX_RECORDS_BYTES} bytes", field="records")
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}", field="records") from e
    except (UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{path} is not JSON: {e}", field="records") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("records"), list):
        raise ConfigError(f"{path}: expected an object with a records array", field="records")
    if doc.get("node_id") != node_id:
        raise ConfigError(f"{path}: records of {clip(doc.get('node_id'))}, not {node_id}", field="node_id")
    out: dict[str, list[Record]] = defaultdict(list)
    for i, raw in enumerate(doc["records"]):
        where = f"records[{i}]"
        try:
            resource_id, record = _record(raw, resources)
        except (InvalidInput, AttributeError) as e:
            why = e.reason if isinstance(e, InvalidInput) else "must be an object"
            # validate_form names a field form.<name>; in a records file it is fields.<name>.
            named = e.field.replace("form.", "fields.", 1) if isinstance(e, InvalidInput) and e.field else ""
            field = f"{where}.{named}" if named else where
            raise ConfigError(f"{path}: {why}", field=field) from e
        out[resource_id].append(record)
    return dict(out)


def _record(raw: dict[str, Any], resources: Mapping[str, catalogue_pb2.DataResource]) -> tuple[str, Record]:
    unknown = sorted(set(raw) - {"resource", "subject", "updated_at", "fields"})
    if unknown:
        raise InvalidInput("unknown key", field=unknown[0])
    resource_id = raw.get("resource")
    res = resources.get(resource_id) if isinstance(resource_id, str) else None
    if res is None or not isinstance(resource_id, str):
        raise InvalidInput(f"{clip(resource_id)} is not a resource this node holds", field="resource")
    subject = raw.get("subject")
    if not isinstance(subject, str):
        raise InvalidInput("the subject's id", field="subject")
    check_subject(res.subject_kind, subject, "subject")
    try:
        at = datetime.fromisoformat(str(raw.get("updated_at")))
    except ValueError:
        raise InvalidInput("an ISO 8601 date-time with its offset", field="updated_at") from None
    if at.tzinfo is None:
        raise InvalidInput("an ISO 8601 date-time with its offset", field="updated_at")
    fields = validate_form(res.fields, raw.get("fields"))
    return resource_id, (subject, fields, int(at.timestamp() * 1000))


def store_records(
    s: Session,
    secret: bytes,
    resources: Mapping[str, catalogue_pb2.DataResource],
    by_resource: Mapping[str, list[Record]],
) -> dict[str, int]:
    """Add or replace the records (read by :func:`read_records_file`), keyed by subject digest;
    how many of each resource were stored.

    One upsert per record, run together on the driver: a merge looked each record up first
    (a statement more per record in a file of up to 64 MB), and two loads at once on
    PostgreSQL (the CLI and a running node, or two replicas) both found no row and the second
    INSERT failed on the first's key."""
    rows = [
        {
            "resource_id": resource_id,
            "subject_ref": subject_ref(secret, resources[resource_id].subject_kind, subject),
            "fields_json": json.dumps(fields, ensure_ascii=False),
            "updated_at_ms": at,
        }
        for resource_id, records in by_resource.items()
        for subject, fields, at in records
    ]
    driver(s).executemany(_UPSERT, rows)
    return {rid: len(records) for rid, records in by_resource.items()}


_UPSERT = insert_into(DataRecordRow.__table__, on_conflict_update=("fields_json", "updated_at_ms"))  # type: ignore[attr-defined]


def disclosure_view(d: DataDisclosure) -> dict[str, Any]:
    return {
        "side": d.side,
        "query_id": d.query_id,
        "at": iso(d.at_ms),
        "asker_node": d.asker_node,
        "asker_department": d.asker_department,
        "asked_by": d.asked_by,
        "holder_node": d.holder_node,
        "resource_id": d.resource_id,
        "purpose": d.purpose,
        "basis": d.basis,
        "fields": list(split(d.fields)),
        "outcome": d.outcome,
        "reason_code": d.reason_code,
    }


def read_disclosures(
    s: Session, *, subject_ref: str | None, side: str | None, limit: int = 200
) -> list[dict[str, Any]]:
    """Newest first; ``subject_ref``: one person's or company's only."""
    q = select(DataDisclosure).order_by(col(DataDisclosure.id).desc()).limit(limit)
    if subject_ref is not None:
        q = q.where(DataDisclosure.subject_ref == subject_ref)
    if side is not None:
        q = q.where(DataDisclosure.side == side)
    return [disclosure_view(d) for d in s.exec(q).all()]


def read_meter(
    s: Session, *, since: str | None = None, until: str | None = None, resource: str | None = None
) -> dict[str, Any]:
    """Calls per day, resource, asker and outcome between two days (inclusive, CST)."""
    q = select(DataMeter).order_by(
        col(DataMeter.day), col(DataMeter.resource_id), col(DataMeter.asker_node), col(DataMeter.outcome)
    )
    if since:
        q = q.where(DataMeter.day >= since)
    if until:
        q = q.where(DataMeter.day <= until)
    if resource:
        q = q.where(DataMeter.resource_id == resource)
    rows = [
        {
            "day": m.day,
            "resource_id": m.resource_id,
            "asker_node": m.asker_node,
            "outcome": m.outcome,
            "calls": m.calls,
        }
        for m in s.exec(q).all()
    ]
    return {"rows": rows, "total": sum(r["calls"] for r in rows)}
