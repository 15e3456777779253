"""Service definitions: read from an operator's TOML, signed by the owner, verified on arrival.

An entry is signed over the exact definition bytes it carries (protobuf is not canonical,
so nobody re-serialises before verifying), which lets any node relay another's entries
without being able to alter them. The same structural checks run on our own TOML (as a
ConfigError naming ``services[3].form[1].type``) and on every entry a peer sends (as
``catalogue_entry_invalid``), so a malformed definition never reaches the index.
"""

from __future__ import annotations

import hashlib
import logging
import re
import struct
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from google.protobuf.message import DecodeError
from nacl.exceptions import CryptoError
from nacl.signing import VerifyKey
from yrd.catalogue.v1 import catalogue_pb2

from core.errors import ConfigError, Conflict, InvalidInput, YrdError
from core.keys import NodeKey
from core.toml import parse_toml
from registry.bundles import BUNDLE_HANDLER, bundle_problems, component_problems
from registry.divisions import is_valid_code
from registry.forms import MAX_TEXT_LENGTH

log = logging.getLogger(__name__)

ServiceDefinition = catalogue_pb2.ServiceDefinition
SignedServiceEntry = catalogue_pb2.SignedServiceEntry
Catalogue = catalogue_pb2.Catalogue
FieldType = catalogue_pb2.FieldType

# The four provinces' sample catalogues, for `yrd node init`, simulations and tests.
SAMPLES_DIR = Path(__file__).parent / "samples"

SIGNING_CONTEXT = b"yrd-catalogue-entry-v1\x00"
MAX_ENTRY_BYTES = 64 * 1024
HANDLERS = ("auto", "worklist", "webhook", BUNDLE_HANDLER)
MAX_TIME_LIMIT_DAYS = 365
MAX_FORM_FIELDS = 100
MAX_MATERIALS = 50
MAX_TEXT = 200

SERVICE_ID = re.compile(r"[a-z0-9][a-z0-9.-]{2,127}")
NODE_ID = re.compile(r"[a-z][a-z0-9-]{0,62}")
FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")

FIELD_TYPES = {
    "string": FieldType.FIELD_TYPE_STRING,
    "integer": FieldType.FIELD_TYPE_INTEGER,
    "date": FieldType.FIELD_TYPE_DATE,
    "resident_id": FieldType.FIELD_TYPE_RESIDENT_ID,
    "phone": FieldType.FIELD_TYPE_PHONE,
    "division": FieldType.FIELD_TYPE_DIVISION,
    "enum": FieldType.FIELD_TYPE_ENUM,
    "boolean": FieldType.FIELD_TYPE_BOOLEAN,
}

Serves = Callable[[str, str], bool]
"""``serves(node_id, division_code)``: whether the federation lets that node own that division."""


class VerifyKeys(Protocol):
    """What the federation manifest offers: the raw Ed25519 public key a node used, if the
    key was valid at ``at_ms``; any YrdError otherwise."""

    def verify_key(self, node_id: str, key_id: str, at_ms: int) -> bytes: ...


# --- structural checks, shared by the TOML loader and by verification --------------------------


def _text_problem(value: str, limit: int = MAX_TEXT) -> str | None:
    if not value.strip():
        return "must not be empty"
    if len(value) > limit:
        return f"longer than {limit} characters"
    return None


def definition_problems(defn: ServiceDefinition) -> Iterator[tuple[str, str]]:
    """Each (path, reason) wrong with a definition; paths use the TOML key names."""
    if not SERVICE_ID.fullmatch(defn.service_id):
        yield "id", "must be 3-128 characters of a-z, 0-9, '.', '-'"
    for key, value in (("name", defn.name), ("name_en", defn.name_en), ("department", defn.department)):
        if (problem := _text_problem(value)) is not None:
            yield key, problem
    if not is_valid_code(defn.owner):
        yield "owner", f"{defn.owner!r} is not a GB/T 2260 division code"
    if not 1 <= defn.time_limit_days <= MAX_TIME_LIMIT_DAYS:
        yield "time_limit_days", f"must be between 1 and {MAX_TIME_LIMIT_DAYS} working days"
    if defn.version < 1:
        yield "version", "must be at least 1"
    if defn.handler not in HANDLERS:
        yield "handler", f"must be one of {', '.join(HANDLERS)}"
    if len(defn.form) > MAX_FORM_FIELDS:
        yield "form", f"more than {MAX_FORM_FIELDS} fields"
    yield from _fields_problems("form", defn.form)
    if len(defn.results) > MAX_FORM_FIELDS:
        yield "results", f"more than {MAX_FORM_FIELDS} results"
    yield from _fields_problems("results", defn.results)
    if len(defn.materials) > MAX_MATERIALS:
        yield "materials", f"more than {MAX_MATERIALS} materials"
    names = [m.name for m in defn.materials]
    for i, name in enumerate(names):
        if (problem := _text_problem(name)) is not None:
            yield f"materials[{i}].name", problem
        elif name in names[:i]:
            yield f"materials[{i}].name", f"material {name!r} appears twice"
    yield from bundle_problems(defn)


def _fields_problems(key: str, fields: Iterable[catalogue_pb2.FormField]) -> Iterator[tuple[str, str]]:
    seen: set[str] = set()
    for i, field in enumerate(fields):
        where = f"{key}[{i}]"
        if not FIELD_NAME.fullmatch(field.name):
            yield f"{where}.name", "must be 1-64 characters of a-z, 0-9, '_', starting with a letter"
        elif field.name in seen:
            yield f"{where}.name", f"field {field.name!r} appears twice"
        seen.add(field.name)
        if (problem := _text_problem(field.label, 100)) is not None:
            yield f"{where}.label", problem
        if field.type not in FIELD_TYPES.values():
            yield f"{where}.type", f"must be one of {', '.join(FIELD_TYPES)}"
        if field.max_length > MAX_TEXT_LENGTH:
            yield f"{where}.max_length", f"must be at most {MAX_TEXT_LENGTH}"
        is_enum = field.type == FieldType.FIELD_TYPE_ENUM
        if is_enum and not field.choices:
            yield f"{where}.choices", "an enum field needs choices"
        if not is_enum and field.choices:
            yield f"{where}.choices", "only an enum field has choices"
        if len(set(field.choices)) != len(field.choices):
            yield f"{where}.choices", "choices repeat"
        if any(_text_problem(c, 100) for c in field.choices):
            yield f"{where}.choices", "a choice is empty or longer than 100 characters"


# --- the TOML file ---------------------------------------------------------------------------------

_SERVICE_KEYS: dict[str, type] = {
    "id": str,
    "name": str,
    "name_en": str,
    "owner": str,
    "department": str,
    "time_limit_days": int,
    "version": int,
    "handler": str,
    "form": list,
    "materials": list,
    "results": list,
    "components": list,
}
_FIELD_KEYS: dict[str, type] = {
    "name": str,
    "label": str,
    "type": str,
    "required": bool,
    "max_length": int,
    "personal": bool,
    "choices": list,
}
_MATERIAL_KEYS: dict[str, type] = {"name": str, "required": bool}
_COMPONENT_KEYS: dict[str, type] = {"name": str, "service": str, "after": list, "map": dict}
_DEFAULTS: dict[str, Any] = {
    "required": False,
    "personal": False,
    "max_length": 0,
    "choices": [],
    "results": [],
    "components": [],
    "after": [],
    "map": {},
}


def _table(raw: object, keys: dict[str, type], where: str) -> dict[str, Any]:
    """The table's values, each of its declared type; optional keys get their defaults."""
    if not isinstance(raw, dict):
        raise ConfigError("must be a table", field=where)
    for key in raw:
        if key not in keys:
            raise ConfigError(f"unknown key {key!r}", field=f"{where}.{key}")
    out: dict[str, Any] = {}
    for key, kind in keys.items():
        if key not in raw:
            if key not in _DEFAULTS:
                raise ConfigError("is required", field=f"{where}.{key}")
            out[key] = _DEFAULTS[key]
            continue
        value = raw[key]
        # bool is an int in Python; a TOML `true` is never a count.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"must be a {kind.__name__}", field=f"{where}.{key}")
        out[key] = value
    return out


def _require_uint32(table: dict[str, Any], key: str, where: str) -> None:
    """Protobuf refuses out-of-range integers with a bare ValueError; name the key instead."""
    if not 0 <= table[key] < 2**32:
        raise ConfigError("must be between 0 and 2^32-1", field=f"{where}.{key}")


def _field_from_toml(raw: object, where: str) -> catalogue_pb2.FormField:
    t = _table(raw, _FIELD_KEYS, where)
    if t["type"] not in FIELD_TYPES:
        raise ConfigError(f"must be one of {', '.join(FIELD_TYPES)}", field=f"{where}.type")
    if not all(isinstance(c, str) for c in t["choices"]):
        raise ConfigError("choices are strings", field=f"{where}.choices")
    _require_uint32(t, "max_length", where)
    return catalogue_pb2.FormField(
        name=t["name"],
        label=t["label"],
        type=FIELD_TYPES[t["type"]],
        required=t["required"],
        max_length=t["max_length"],
        personal=t["personal"],
        choices=t["choices"],
    )


def _component_from_toml(raw: object, where: str) -> catalogue_pb2.BundleComponent:
    t = _table(raw, _COMPONENT_KEYS, where)
    if not all(isinstance(a, str) for a in t["after"]):
        raise ConfigError("after lists component names", field=f"{where}.after")
    for to, source in t["map"].items():
        if not isinstance(source, str):
            raise ConfigError("must be 'form.<field>' or '<component>.<result>'", field=f"{where}.map.{to}")
    return catalogue_pb2.BundleComponent(
        name=t["name"],
        service_id=t["service"],
        after=t["after"],
        mappings=[catalogue_pb2.FieldMapping(to=to, source=source) for to, source in t["map"].items()],
    )


def _service_from_toml(raw: object, where: str) -> ServiceDefinition:
    t = _table(raw, _SERVICE_KEYS, where)
    for key in ("time_limit_days", "version"):
        _require_uint32(t, key, where)
    materials = [_table(m, _MATERIAL_KEYS, f"{where}.materials[{i}]") for i, m in enumerate(t["materials"])]
    defn = ServiceDefinition(
        service_id=t["id"],
        name=t["name"],
        name_en=t["name_en"],
        owner=t["owner"],
        department=t["department"],
        form=[_field_from_toml(f, f"{where}.form[{i}]") for i, f in enumerate(t["form"])],
        materials=[catalogue_pb2.Material(name=m["name"], required=m["required"]) for m in materials],
        time_limit_days=t["time_limit_days"],
        version=t["version"],
        handler=t["handler"],
        results=[_field_from_toml(f, f"{where}.results[{i}]") for i, f in enumerate(t["results"])],
        bundle=catalogue_pb2.BundleDefinition(
            components=[
                _component_from_toml(c, f"{where}.components[{i}]") for i, c in enumerate(t["components"])
            ]
        ),
    )
    if (problem := next(definition_problems(defn), None)) is not None:
        raise ConfigError(problem[1], field=f"{where}.{problem[0]}")
    return defn


def load_catalogue_file(path: Path) -> tuple[str, list[ServiceDefinition]]:
    """The node id and the services of a catalogue TOML file (see docs/catalogue.md)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read catalogue {path}: {e.strerror}", field="catalogue_file") from e
    raw = parse_toml(data, f"catalogue {path}", "catalogue_file")
    for key in raw:
        if key not in ("node_id", "services", "data"):  # data: registry/data_catalogue.py
            raise ConfigError(f"unknown key {key!r}", field=key)
    node_id = raw.get("node_id")
    if not isinstance(node_id, str) or not NODE_ID.fullmatch(node_id):
        raise ConfigError("must be a node id such as 'shanghai'", field="node_id")
    services = raw.get("services", [])
    if not isinstance(services, list):
        raise ConfigError("must be an array of tables ([[services]])", field="services")
    definitions: list[ServiceDefinition] = []
    seen: set[str] = set()
    for i, entry in enumerate(services):
        defn = _service_from_toml(entry, f"services[{i}]")
        if defn.service_id in seen:
            raise ConfigError(f"service {defn.service_id!r} appears twice", field=f"services[{i}].id")
        seen.add(defn.service_id)
        definitions.append(defn)
    check_local_bundles(definitions)
    log.info("loaded %d services for node %s from %s", len(definitions), node_id, path)
    return node_id, definitions


def check_local_bundles(definitions: list[ServiceDefinition]) -> None:
    """Bundles whose components are all in the same file are checked against them now;
    one that names another member's matter waits for ``yrd catalogue lint`` and the lead
    node, which know the union."""
    local = {d.service_id: d for d in definitions}
    for i, defn in enumerate(definitions):
        if defn.handler != BUNDLE_HANDLER:
            continue
        if any(c.service_id not in local for c in defn.bundle.components):
            continue
        problem = next(component_problems(defn, local.get), None)
        if problem is not None:
            raise ConfigError(problem[1], field=f"services[{i}].{problem[0]}")


# --- signing and verification ----------------------------------------------------------------------


def _signed_message(definition_bytes: bytes) -> bytes:
    return SIGNING_CONTEXT + struct.pack(">I", len(definition_bytes)) + definition_bytes


def sign_entry(defn: ServiceDefinition, node_id: str, key: NodeKey) -> SignedServiceEntry:
    data = defn.SerializeToString(deterministic=True)
    if len(data) > MAX_ENTRY_BYTES:
        raise InvalidInput(
            f"definition is {len(data)} bytes, more than {MAX_ENTRY_BYTES}",
            code="catalogue_entry_invalid",
            field=f"services.{defn.service_id}",
        )
    return SignedServiceEntry(
        definition=data, node_id=node_id, key_id=key.key_id, signature=key.sign(_signed_message(data))
    )


def _refused(field: str, reason: str) -> InvalidInput:
    return InvalidInput(reason, code="catalogue_entry_invalid", field=field)


def check_signed_entry(
    content: bytes,
    content_field: str,
    max_bytes: int,
    node_id: str,
    key_id: str,
    signature: bytes,
    keys: VerifyKeys,
    at_ms: int,
    signed: bytes,
    refused: Callable[[str, str], InvalidInput],
) -> None:
    """What every signed catalogue entry (a service, a data resource) passes before a byte of
    its content is parsed: a size bound, a key of the signer valid at ``at_ms``, and the
    signature over ``signed`` (each kind's own domain-separated message)."""
    if len(content) > max_bytes:
        raise refused(content_field, f"larger than {max_bytes} bytes")
    try:
        public_key = keys.verify_key(node_id, key_id, at_ms)
    except YrdError as e:
        raise refused("entry.key_id", f"no valid key {key_id!r} for {node_id!r}: {e.reason}") from e
    try:
        VerifyKey(public_key).verify(signed, signature)
    except CryptoError as e:
        raise refused("entry.signature", f"signature by {node_id!r} does not verify") from e


def verify_entry(
    entry: SignedServiceEntry, keys: VerifyKeys, serves: Serves, at_ms: int
) -> ServiceDefinition:
    """The definition an entry carries, once its owner's signature, its structure and the
    signer's right to the owner jurisdiction are all checked."""
    check_signed_entry(
        entry.definition,
        "entry.definition",
        MAX_ENTRY_BYTES,
        entry.node_id,
        entry.key_id,
        entry.signature,
        keys,
        at_ms,
        _signed_message(entry.definition),
        _refused,
    )
    try:
        defn = ServiceDefinition.FromString(entry.definition)
    except DecodeError as e:
        raise _refused("entry.definition", "not a ServiceDefinition") from e
    if (problem := next(definition_problems(defn), None)) is not None:
        raise _refused(f"entry.definition.{problem[0]}", problem[1])
    if not serves(entry.node_id, defn.owner):
        raise _refused("entry.definition.owner", f"{entry.node_id!r} does not serve {defn.owner}")
    return defn


def build_catalogue(node_id: str, entries: Iterable[SignedServiceEntry]) -> Catalogue:
    """The catalogue a node serves, in (signer, service id) order so that the same entries
    always give the same bytes and therefore the same digest."""
    keyed: dict[tuple[str, str], SignedServiceEntry] = {}
    for entry in entries:
        key = (entry.node_id, ServiceDefinition.FromString(entry.definition).service_id)
        if key in keyed:
            raise Conflict(f"{key[1]!r} from {key[0]!r} appears twice", code="duplicate_service")
        keyed[key] = entry
    return Catalogue(node_id=node_id, entries=[keyed[k] for k in sorted(keyed)])


def catalogue_digest(catalogue_bytes: bytes) -> bytes:
    """SHA-256 of the serialized catalogue as carried: equal digests, nothing to fetch."""
    return hashlib.sha256(catalogue_bytes).digest()
