"""What lint needs to know about the federation: catalogued services, data resources and
member prefixes.

Read straight from the TOML files operators already keep (catalogues with ``[[services]]``
and ``[[data]]`` tables, the members file with ``[[members]]``) rather than through the
registry, so linting a bundle needs neither a running node nor a signed manifest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError
from core.toml import parse_toml

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "registry" / "samples"


@dataclass(frozen=True)
class CatalogueService:
    id: str
    owner: str
    department: str


def _read_toml(path: Path) -> dict[str, object]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}", field="catalogue") from e
    return parse_toml(data, str(path), "catalogue")


def read_catalogues(paths: Iterable[Path]) -> dict[str, CatalogueService]:
    """Services of every catalogue file, by id; files without ``[[services]]`` add nothing."""
    found: dict[str, CatalogueService] = {}
    for path in paths:
        services = _read_toml(path).get("services", [])
        if not isinstance(services, list):
            raise ConfigError(f"{path}: services must be an array of tables", field="services")
        for i, entry in enumerate(services):
            where = f"services[{i}]"
            if not isinstance(entry, dict):
                raise ConfigError(f"{path}: {where} must be a table", field=where)
            values = [entry.get(k) for k in ("id", "owner", "department")]
            if not all(isinstance(v, str) and v for v in values):
                raise ConfigError(f"{path}: {where} needs id, owner and department strings", field=where)
            service = CatalogueService(str(values[0]), str(values[1]), str(values[2]))
            found[service.id] = service
    return found


def read_data_ids(paths: Iterable[Path]) -> frozenset[str]:
    """Ids of the data resources (``[[data]]``) of every catalogue file: what a data rule's
    ``service`` selector and a quota over data calls name."""
    found: set[str] = set()
    for path in paths:
        resources = _read_toml(path).get("data", [])
        if not isinstance(resources, list):
            raise ConfigError(f"{path}: data must be an array of tables", field="data")
        for i, entry in enumerate(resources):
            rid = entry.get("id") if isinstance(entry, dict) else None
            if not isinstance(rid, str) or not rid:
                raise ConfigError(f"{path}: data[{i}] needs an id string", field=f"data[{i}]")
            found.add(rid)
    return frozenset(found)


def sample_catalogue_paths() -> list[Path]:
    """The catalogues shipped in registry/samples, the default universe for lint."""
    return sorted(SAMPLES_DIR.glob("*.toml")) if SAMPLES_DIR.is_dir() else []


def read_members(path: Path) -> dict[str, tuple[str, ...]]:
    """Node id -> jurisdiction prefixes, from a members file (``[[members]]`` tables)."""
    members = _read_toml(path).get("members", [])
    if not isinstance(members, list):
        raise ConfigError(f"{path}: members must be an array of tables", field="members")
    out: dict[str, tuple[str, ...]] = {}
    for i, entry in enumerate(members):
        node_id = entry.get("node_id") if isinstance(entry, dict) else None
        prefixes = entry.get("jurisdictions") if isinstance(entry, dict) else None
        if not isinstance(node_id, str) or not isinstance(prefixes, list):
            raise ConfigError(f"{path}: members[{i}] needs node_id and jurisdictions", field=f"members[{i}]")
        out[node_id] = tuple(str(p) for p in prefixes)
    return out
