"""The union of every node's verified catalogue entries, and the lookups the counter needs.

The index is rebuilt as a new immutable snapshot on each change and swapped in with one
assignment, so a lookup never sees half of a node's catalogue. Lookups are dict reads or
one pass over prepared lowercase strings; catalogues change rarely, lookups happen on
every keystroke at the counter.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from yrd.catalogue.v1 import catalogue_pb2

from core.errors import InvalidInput, NotFound, clip
from registry.divisions import name_of
from registry.forms import form_json_schema

log = logging.getLogger(__name__)

ServiceDefinition = catalogue_pb2.ServiceDefinition

MAX_QUERY_LENGTH = 100
_OWNER_PREFIX = re.compile(r"[0-9]{1,6}")


def _fold(text: str) -> str:
    """Full-width letters and case do not matter to a clerk typing a name."""
    return unicodedata.normalize("NFKC", text).casefold()


def _division_prefix(owner: str) -> str:
    """``330000`` means all of Zhejiang, Hangzhou's ``330100`` included: drop trailing ``00`` pairs."""
    while len(owner) > 2 and owner.endswith("00") and len(owner) % 2 == 0:
        owner = owner[:-2]
    return owner


@dataclass(frozen=True)
class _Snapshot:
    by_node: Mapping[str, Mapping[str, ServiceDefinition]]
    by_id: Mapping[str, ServiceDefinition]
    # (folded "id\0name\0name_en", definition), in service id order.
    rows: tuple[tuple[str, ServiceDefinition], ...]


def _union(by_node: Mapping[str, Mapping[str, ServiceDefinition]]) -> _Snapshot:
    """One definition per service id: the highest version, then the smallest node id, so
    every node computes the same union whatever order the catalogues arrived in."""
    by_id: dict[str, ServiceDefinition] = {}
    for node_id in sorted(by_node):
        for service_id, defn in by_node[node_id].items():
            held = by_id.get(service_id)
            if held is None or defn.version > held.version:
                by_id[service_id] = defn
    rows = tuple((_fold(f"{d.service_id}\0{d.name}\0{d.name_en}"), d) for _, d in sorted(by_id.items()))
    return _Snapshot(by_node=by_node, by_id=by_id, rows=rows)


class CatalogueIndex:
    def __init__(self) -> None:
        self._snapshot = _union({})

    def replace_node(self, node_id: str, definitions: Iterable[ServiceDefinition]) -> None:
        """Swap in everything ``node_id`` now publishes (its entries already verified).

        A service the node held at a higher version keeps that version: a relay replaying an
        old catalogue cannot roll an owner's definition back.
        """
        before = self._snapshot
        previous = before.by_node.get(node_id, {})
        incoming: dict[str, ServiceDefinition] = {}
        for defn in definitions:
            held = incoming.get(defn.service_id)
            if held is None or defn.version > held.version:
                incoming[defn.service_id] = defn
        for service_id, defn in incoming.items():
            old = previous.get(service_id)
            if old is not None and old.version > defn.version:
                log.warning(
                    "node %s offered %s version %d; keeping version %d",
                    node_id,
                    service_id,
                    defn.version,
                    old.version,
                )
                incoming[service_id] = old
        for other, theirs in before.by_node.items():
            if other != node_id:
                for service_id in sorted(incoming.keys() & theirs.keys()):
                    log.warning("service %s is published by both %s and %s", service_id, node_id, other)
        by_node = {k: v for k, v in before.by_node.items() if k != node_id}
        if incoming:
            by_node[node_id] = incoming
        self._snapshot = _union(by_node)
        log.info("catalogue of %s: %d services; %d in the union", node_id, len(incoming), len(self))

    def __len__(self) -> int:
        return len(self._snapshot.by_id)

    def get(self, service_id: str) -> ServiceDefinition:
        defn = self._snapshot.by_id.get(service_id)
        if defn is None:
            raise NotFound(
                f"no service {clip(service_id)} in the catalogue", code="unknown_service", field="service_id"
            )
        return defn

    def all(self) -> list[ServiceDefinition]:
        """Every service of the union, in service id order."""
        return [defn for _, defn in self._snapshot.rows]

    def search(self, q: str | None = None, owner: str | None = None) -> list[ServiceDefinition]:
        """Services whose id, Chinese or English name contains ``q`` (any case) and whose
        owner lies within division ``owner`` (a code prefix such as ``33`` or ``330100``)."""
        needle = _fold(q.strip()) if q else ""
        if len(needle) > MAX_QUERY_LENGTH:
            raise InvalidInput(f"the query is longer than {MAX_QUERY_LENGTH} characters", field="q")
        prefix = ""
        if owner:
            if not _OWNER_PREFIX.fullmatch(owner):
                raise InvalidInput("owner is 1-6 digits of a division code", field="owner")
            prefix = _division_prefix(owner)
        return [
            defn
            for haystack, defn in self._snapshot.rows
            if needle in haystack and defn.owner.startswith(prefix)
        ]

    @staticmethod
    def to_api(defn: ServiceDefinition) -> dict[str, Any]:
        """The service as the HTTP API shows it."""
        return {
            "id": defn.service_id,
            "name": defn.name,
            "name_en": defn.name_en,
            "owner": defn.owner,
            "owner_name": name_of(defn.owner, field="owner"),
            "department": defn.department,
            "time_limit_days": defn.time_limit_days,
            "version": defn.version,
            "handler": defn.handler,
            "form_schema": form_json_schema(defn.form),
            "materials": [{"name": m.name, "required": m.required} for m in defn.materials],
        }
