"""Does one rule's condition set cover another's? The basis of the "shadowed" lint.

``covers(a, b)`` must never say yes wrongly (lint would then call a live rule dead), so
every dimension answers conservatively: when it cannot prove that all inputs of ``b`` are
inputs of ``a`` it says no, and a shadowed rule may go unreported rather than a live one
be reported.
"""

from __future__ import annotations

from policies.spec import Conditions, FieldCondition, ServiceSelector, TimeWindow


def covers(a: Conditions, b: Conditions) -> bool:
    return (
        b.directions <= a.directions
        and a.kind == b.kind
        and _set_covers(a.domains, b.domains)
        and _prefixes_cover(a.regions, b.regions)
        and _set_covers(a.clue_sources, b.clue_sources)
        and _set_covers(a.peer_nodes, b.peer_nodes)
        and _prefixes_cover(a.peer_jurisdictions, b.peer_jurisdictions)
        and _services_cover(a.services, b.services)
        and _prefixes_cover(a.service_owners, b.service_owners)
        and _set_covers(a.service_departments, b.service_departments)
        and (a.owned_by_peer is None or a.owned_by_peer == b.owned_by_peer)
        and _set_covers(a.purposes, b.purposes)
        and _set_covers(a.roles, b.roles)
        and (a.consent is None or a.consent == b.consent)
        and _fields_cover(a.fields, b.fields)
        and _time_covers(a.time, b.time)
    )


def _set_covers(a: frozenset[str] | None, b: frozenset[str] | None) -> bool:
    return a is None or (b is not None and b <= a)


def _prefixes_cover(a: tuple[str, ...] | None, b: tuple[str, ...] | None) -> bool:
    return a is None or (b is not None and all(p.startswith(a) for p in b))


def _services_cover(a: ServiceSelector | None, b: ServiceSelector | None) -> bool:
    if a is None:
        return True
    if b is None:
        return False
    if not all(a.matches(i) for i in b.exact):
        return False
    # A pattern of b is covered by an identical pattern of a, or by a's "prefix*" pattern
    # when b's literal part starts with that prefix; anything subtler is not claimed.
    for p in b.patterns:
        literal = p.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
        if not any(q == p or (q.endswith("*") and literal.startswith(q[:-1])) for q in a.patterns):
            return False
    return True


def _fields_cover(a: FieldCondition | None, b: FieldCondition | None) -> bool:
    if a is None:
        return True
    b = b or FieldCondition()
    if a.any is not None and not (
        (b.any is not None and b.any <= a.any) or (b.all is not None and not b.all.isdisjoint(a.any))
    ):
        return False
    if a.all is not None and not (b.all is not None and a.all <= b.all):
        return False
    if a.none is not None and not (
        (b.none is not None and a.none <= b.none) or (b.only is not None and b.only.isdisjoint(a.none))
    ):
        return False
    return a.only is None or (b.only is not None and b.only <= a.only)


def _time_covers(a: tuple[TimeWindow, ...] | None, b: tuple[TimeWindow, ...] | None) -> bool:
    if a is None:
        return True
    if b is None:
        return False
    return all(any(wb.within(wa) for wa in a) for wb in b)
