"""Valid applications for any catalogued service, generated from its published form.

The demo, the simulations and the multi-node tests submit what a counter clerk would:
a real-format resident ID (with its GB 11643 check digit), values of each field's type,
and every required material, so the owner's checks are exercised, not bypassed.
"""

from __future__ import annotations

import base64
import random
from typing import Any

from yrd.catalogue.v1 import catalogue_pb2

from registry.forms import resident_id_check_char

F = catalogue_pb2.FieldType
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰涛明超秀霞平刚"
REGIONS = ("310104", "320102", "320505", "330106", "340104", "320583", "330212")


def resident_id(rng: random.Random) -> str:
    region = rng.choice(REGIONS)
    birth = f"{rng.randint(1960, 2004)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    body = f"{region}{birth}{rng.randint(0, 999):03d}"
    return body + resident_id_check_char(body)


def person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN), resident_id(rng)


def field_value(field: catalogue_pb2.FormField, rng: random.Random) -> Any:
    if field.type == F.FIELD_TYPE_INTEGER:
        return rng.randint(1, 100)
    if field.type == F.FIELD_TYPE_DATE:
        return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if field.type == F.FIELD_TYPE_RESIDENT_ID:
        return resident_id(rng)
    if field.type == F.FIELD_TYPE_PHONE:
        return f"13{rng.randint(0, 999_999_999):09d}"
    if field.type == F.FIELD_TYPE_DIVISION:
        return rng.choice(REGIONS)
    if field.type == F.FIELD_TYPE_ENUM:
        return rng.choice(list(field.choices))
    if field.type == F.FIELD_TYPE_BOOLEAN:
        return rng.random() < 0.5
    limit = field.max_length or 40
    return ("示例" + field.label)[:limit]


def application_body(
    defn: catalogue_pb2.ServiceDefinition, rng: random.Random, *, all_materials: bool = True
) -> dict[str, Any]:
    """The JSON body of ``POST /api/v1/applications`` for this service."""
    name, id_number = person(rng)
    materials = [m for m in defn.materials if m.required or all_materials]
    return {
        "service_id": defn.service_id,
        "applicant": {"name": name, "id_number": id_number},
        "form": {f.name: field_value(f, rng) for f in defn.form if f.required or rng.random() < 0.7},
        "attachments": [
            {
                "material": m.name,
                "filename": f"scan-{i}.pdf",
                "content_type": "application/pdf",
                "data": base64.b64encode(b"%PDF-1.4 sample " + m.name.encode()).decode(),
            }
            for i, m in enumerate(materials)
        ],
        "consent": True,
    }
