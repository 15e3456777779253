"""The federated data catalogue (docs/sharing.md): the data resources a member's departments
hold, declared as ``[[data]]`` tables in the node's catalogue TOML, signed by the holder node
and synced with the service catalogue.

A resource says whose records it holds (a person by resident id, a company by unified social
credit code), which fields each record has and which of them are personal, how often it is
updated, and its sharing class under "share by default, not sharing is the exception"
(以共享为原则、不共享为例外): unconditional (shared on a consented request), conditional (shared
once the holder grants a request) or not shared (with the legal reason, which every refusal
quotes). As with service entries, the same structural checks run on our own TOML (a
ConfigError naming ``data[2].fields[1].type``) and on every entry a peer relays
(``data_entry_invalid``), and the signature covers the exact bytes carried.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError
from yrd.catalogue.v1 import catalogue_pb2

from core.errors import ConfigError, InvalidInput, NotFound, clip
from core.keys import NodeKey
from core.toml import TomlTable, parse_toml
from registry.catalogue import FIELD_NAME, FIELD_TYPES, SERVICE_ID, Serves, VerifyKeys, check_signed_entry
from registry.divisions import is_valid_code

log = logging.getLogger(__name__)

DataResource = catalogue_pb2.DataResource
SignedDataEntry = catalogue_pb2.SignedDataEntry
FieldType = catalogue_pb2.FieldType

SIGNING_CONTEXT = b"yrd-data-resource-v1\x00"
MAX_ENTRY_BYTES = 32 * 1024
MAX_FIELDS = 64
MAX_TEXT = 200
MAX_LEGAL_REASON = 500

# The sharing classes of the catalogue; the codes travel on the wire, the names are what a
# department reads.
SHARING: dict[str, str] = {
    "unconditional": "无条件共享",
    "conditional": "有条件共享",
    "not_shared": "不予共享",
}
SUBJECT_KINDS = ("person", "company")
FREQUENCIES = ("realtime", "daily", "weekly", "monthly", "yearly")


def _text_problem(value: str, limit: int = MAX_TEXT) -> str | None:
    if not value.strip():
        return "must not be empty"
    if len(value) > limit:
        return f"longer than {limit} characters"
    return None


def resource_problems(res: DataResource) -> Iterator[tuple[str, str]]:
    """Each (path, reason) wrong with a resource; paths use the TOML key names."""
    if not SERVICE_ID.fullmatch(res.resource_id):
        yield "id", "must be 3-128 characters of a-z, 0-9, '.', '-'"
    for key, value in (("name", res.name), ("name_en", res.name_en), ("department", res.department)):
        if (problem := _text_problem(value)) is not None:
            yield key, problem
    if not is_valid_code(res.holder):
        yield "holder", f"{clip(res.holder)} is not a GB/T 2260 division code"
    if res.subject_kind not in SUBJECT_KINDS:
        yield "subject_kind", f"must be one of {', '.join(SUBJECT_KINDS)}"
    if res.update_frequency not in FREQUENCIES:
        yield "update_frequency", f"must be one of {', '.join(FREQUENCIES)}"
    if res.sharing not in SHARING:
        yield "sharing", f"must be one of {', '.join(SHARING)}"
    if res.sharing == "not_shared" and _text_problem(res.legal_reason, MAX_LEGAL_REASON) is not None:
        yield "legal_reason", "a not_shared resource names its legal reason (at most 500 characters)"
    if res.sharing != "not_shared" and res.legal_reason:
        yield "legal_reason", "only a not_shared resource has a legal reason"
    if res.version < 1:
        yield "version", "must be at least 1"
    if not 1 <= len(res.fields) <= MAX_FIELDS:
        yield "fields", f"between 1 and {MAX_FIELDS} fields"
    seen: set[str] = set()
    for i, field in enumerate(res.fields):
        where = f"fields[{i}]"
        if not FIELD_NAME.fullmatch(field.name):
            yield f"{where}.name", "must be 1-64 characters of a-z, 0-9, '_', starting with a letter"
        elif field.name in seen:
            yield f"{where}.name", f"field {field.name!r} appears twice"
        seen.add(field.name)
        if (problem := _text_problem(field.label, 100)) is not None:
            yield f"{where}.label", problem
        if field.type not in FIELD_TYPES.values():
            yield f"{where}.type", f"must be one of {', '.join(FIELD_TYPES)}"
        is_enum = field.type == FieldType.FIELD_TYPE_ENUM
        if is_enum and not field.choices:
            yield f"{where}.choices", "an enum field needs choices"
        if not is_enum and field.choices:
            yield f"{where}.choices", "only an enum field has choices"


# --- the TOML tables -----------------------------------------------------------------------------


def _field_from_toml(t: TomlTable) -> catalogue_pb2.FormField:
    kind = t.take("type", str, required=True)
    if kind not in FIELD_TYPES:
        raise ConfigError(f"must be one of {', '.join(FIELD_TYPES)}", field=t.path("type"))
    choices = t.take("choices", list, [])
    if not all(isinstance(c, str) for c in choices):
        raise ConfigError("choices are strings", field=t.path("choices"))
    field = catalogue_pb2.FormField(
        name=t.take("name", str, required=True),
        label=t.take("label", str, required=True),
        type=FIELD_TYPES[kind],
        personal=t.take("personal", bool, False),
        choices=choices,
    )
    t.finish()
    return field


def _resource_from_toml(t: TomlTable) -> DataResource:
    version = t.take("version", int, 1)
    if not 1 <= version < 2**63:
        raise ConfigError("must be at least 1", field=t.path("version"))
    res = DataResource(
        resource_id=t.take("id", str, required=True),
        name=t.take("name", str, required=True),
        name_en=t.take("name_en", str, required=True),
        holder=t.take("holder", str, required=True),
        department=t.take("department", str, required=True),
        subject_kind=t.take("subject_kind", str, required=True),
        update_frequency=t.take("update_frequency", str, required=True),
        sharing=t.take("sharing", str, required=True),
        legal_reason=t.take("legal_reason", str, ""),
        version=version,
        fields=[_field_from_toml(f) for f in t.tables("fields", required=True)],
    )
    t.finish()
    if (problem := next(resource_problems(res), None)) is not None:
        raise ConfigError(problem[1], field=t.path(problem[0]))
    return res


def parse_data_resources(data: bytes, source: str) -> list[DataResource]:
    """The ``[[data]]`` tables of a catalogue file; every other top-level key is the service
    catalogue's (registry/catalogue.py checks those)."""
    doc = parse_toml(data, f"catalogue {source}", "catalogue_file")
    raw = doc.get("data", [])
    if not isinstance(raw, list) or not all(isinstance(d, dict) for d in raw):
        raise ConfigError(f"{source}: must be an array of tables ([[data]])", field="data")
    resources: list[DataResource] = []
    seen: set[str] = set()
    try:
        for i, table in enumerate(raw):
            res = _resource_from_toml(TomlTable(table, f"data[{i}]."))
            if res.resource_id in seen:
                raise ConfigError(f"resource {res.resource_id!r} appears twice", field=f"data[{i}].id")
            seen.add(res.resource_id)
            resources.append(res)
    except ConfigError as e:
        if e.reason.startswith(source):
            raise
        raise ConfigError(f"{source}: {e.reason}", code=e.code, field=e.field) from e
    return resources


def load_data_resources(path: Path) -> list[DataResource]:
    """The data resources declared in a node's catalogue TOML (see docs/sharing.md)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read catalogue {path}: {e.strerror}", field="catalogue_file") from e
    resources = parse_data_resources(data, str(path))
    log.info("loaded %d data resources from %s", len(resources), path)
    return resources


# --- signing and verification ----------------------------------------------------------------------


def _signed_message(resource_bytes: bytes) -> bytes:
    return SIGNING_CONTEXT + struct.pack(">I", len(resource_bytes)) + resource_bytes


def sign_data_entry(res: DataResource, node_id: str, key: NodeKey) -> SignedDataEntry:
    data = res.SerializeToString(deterministic=True)
    if len(data) > MAX_ENTRY_BYTES:
        raise InvalidInput(
            f"resource is {len(data)} bytes, more than {MAX_ENTRY_BYTES}",
            code="data_entry_invalid",
            field=f"data.{res.resource_id}",
        )
    return SignedDataEntry(
        resource=data, node_id=node_id, key_id=key.key_id, signature=key.sign(_signed_message(data))
    )


def _refused(field: str, reason: str) -> InvalidInput:
    return InvalidInput(reason, code="data_entry_invalid", field=field)


def verify_data_entry(entry: SignedDataEntry, keys: VerifyKeys, serves: Serves, at_ms: int) -> DataResource:
    """The resource an entry carries, once its holder's signature, its structure and the
    signer's right to the holding jurisdiction are all checked."""
    check_signed_entry(
        entry.resource,
        "entry.resource",
        MAX_ENTRY_BYTES,
        entry.node_id,
        entry.key_id,
        entry.signature,
        keys,
        at_ms,
        _signed_message(entry.resource),
        _refused,
    )
    try:
        res = DataResource.FromString(entry.resource)
    except DecodeError as e:
        raise _refused("entry.resource", "not a DataResource") from e
    if (problem := next(resource_problems(res), None)) is not None:
        raise _refused(f"entry.resource.{problem[0]}", problem[1])
    if not serves(entry.node_id, res.holder):
        raise _refused("entry.resource.holder", f"{entry.node_id!r} does not serve {res.holder}")
    return res


# --- the union, searchable -------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldResource:
    node_id: str  # the member that holds it and answers queries for it
    resource: DataResource


class DataIndex:
    """Every verified resource of the federation by id. A snapshot is replaced whole per
    node, so a search never sees half of a catalogue update."""

    def __init__(self) -> None:
        self._by_node: dict[str, dict[str, DataResource]] = {}
        self._by_id: dict[str, HeldResource] = {}

    def replace_node(self, node_id: str, resources: Iterable[DataResource]) -> None:
        self._by_node[node_id] = {r.resource_id: r for r in resources}
        by_id: dict[str, HeldResource] = {}
        for node in sorted(self._by_node):
            for rid, res in self._by_node[node].items():
                if rid in by_id:  # two members claim one id: the first keeps it, nobody guesses
                    log.warning("data resource %s declared by %s and %s", rid, by_id[rid].node_id, node)
                    continue
                by_id[rid] = HeldResource(node, res)
        self._by_id = by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, resource_id: str) -> HeldResource:
        found = self._by_id.get(resource_id)
        if found is None:
            raise NotFound(
                f"no data resource {clip(resource_id)} in the catalogue",
                code="unknown_resource",
                field="resource_id",
            )
        return found

    def search(
        self, q: str | None = None, holder: str | None = None, sharing: str | None = None
    ) -> list[HeldResource]:
        """Resources whose id, names or department contain ``q`` (case-folded), held under the
        division prefix ``holder``, of the sharing class ``sharing``; in id order."""
        needle = (q or "").strip().casefold()
        out = []
        for rid in sorted(self._by_id):
            held = self._by_id[rid]
            r = held.resource
            text = " ".join((r.resource_id, r.name, r.name_en, r.department)).casefold()
            if needle and needle not in text:
                continue
            if holder and not r.holder.startswith(holder.rstrip("0") or holder):
                continue
            if sharing and r.sharing != sharing:
                continue
            out.append(held)
        return out


def resource_to_api(held: HeldResource) -> dict[str, Any]:
    r = held.resource
    return {
        "id": r.resource_id,
        "name": r.name,
        "name_en": r.name_en,
        "holder": r.holder,
        "holder_node": held.node_id,
        "department": r.department,
        "subject_kind": r.subject_kind,
        "update_frequency": r.update_frequency,
        "sharing": r.sharing,
        "sharing_name": SHARING[r.sharing],
        "legal_reason": r.legal_reason,
        "version": r.version,
        "fields": [
            {
                "name": f.name,
                "label": f.label,
                "type": next(k for k, v in FIELD_TYPES.items() if v == f.type),
                "personal": f.personal,
            }
            for f in r.fields
        ],
    }
