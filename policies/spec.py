"""A bundle after validation: rules, their conditions and the quotas, with source lines.

Every condition is optional and ``None`` means "any"; lists inside one condition are
alternatives (OR) and different conditions must all hold (AND). Lines are kept so lint,
explain and test failures can point at the YAML an operator has to change.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Literal

from policies.model import Direction, Kind, Obligations

Effect = Literal["allow", "deny"]
QuotaScope = Literal["peer", "service"]

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class TimeWindow:
    """Local days (0 = Monday) and minutes of the day; ``end`` before ``start`` wraps midnight."""

    days: frozenset[int]
    start_min: int
    end_min: int

    def contains(self, weekday: int, minute: int) -> bool:
        if weekday not in self.days:
            return False
        if self.start_min < self.end_min:
            return self.start_min <= minute < self.end_min
        return minute >= self.start_min or minute < self.end_min

    def within(self, other: TimeWindow) -> bool:
        """True when every instant of self is also in ``other`` (used by lint)."""
        if not self.days <= other.days:
            return False
        if self.start_min < self.end_min and other.start_min < other.end_min:
            return other.start_min <= self.start_min and self.end_min <= other.end_min
        if self.start_min > self.end_min and other.start_min > other.end_min:
            return other.start_min <= self.start_min and self.end_min <= other.end_min
        return self.start_min < self.end_min and (
            self.start_min >= other.start_min or self.end_min <= other.end_min
        )

    def describe(self) -> str:
        days = ",".join(DAY_NAMES[d] for d in sorted(self.days))
        return f"{days} {_hhmm(self.start_min)}-{_hhmm(self.end_min)}"


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


@dataclass(frozen=True)
class ServiceSelector:
    """Service ids, exact or glob (``js.suzhou.*``): a pattern is any id containing * ? or [."""

    exact: frozenset[str]
    patterns: tuple[str, ...]
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, ids: tuple[str, ...]) -> ServiceSelector:
        patterns = tuple(i for i in ids if is_pattern(i))
        regex = re.compile("|".join(fnmatch.translate(p) for p in patterns)) if patterns else None
        return cls(frozenset(i for i in ids if not is_pattern(i)), patterns, regex)

    def matches(self, service_id: str) -> bool:
        if service_id in self.exact:
            return True
        return self._regex is not None and self._regex.match(service_id) is not None


def is_pattern(service_id: str) -> bool:
    return any(c in service_id for c in "*?[")


@dataclass(frozen=True)
class FieldCondition:
    """On the names of the fields present: at least one of ``any``, every one of ``all``,
    none of ``none``, and nothing outside ``only``."""

    any: frozenset[str] | None = None
    all: frozenset[str] | None = None
    none: frozenset[str] | None = None
    only: frozenset[str] | None = None

    def holds(self, fields: frozenset[str]) -> bool:
        if self.any is not None and self.any.isdisjoint(fields):
            return False
        if self.all is not None and not self.all <= fields:
            return False
        if self.none is not None and not self.none.isdisjoint(fields):
            return False
        return self.only is None or fields <= self.only


@dataclass(frozen=True)
class Conditions:
    directions: frozenset[Direction]
    peer_nodes: frozenset[str] | None = None
    peer_jurisdictions: tuple[str, ...] | None = None
    services: ServiceSelector | None = None
    service_owners: tuple[str, ...] | None = None
    service_departments: frozenset[str] | None = None
    owned_by_peer: bool | None = None
    purposes: frozenset[str] | None = None
    roles: frozenset[str] | None = None
    consent: bool | None = None
    fields: FieldCondition | None = None
    time: tuple[TimeWindow, ...] | None = None
    # What the rule decides: applications (the default, so older bundles never admit clues) or
    # clues, which match on their domain, region prefix and source instead of a service.
    kind: Kind = "application"
    domains: frozenset[str] | None = None
    regions: tuple[str, ...] | None = None
    clue_sources: frozenset[str] | None = None


@dataclass(frozen=True)
class Rule:
    id: str
    effect: Effect
    when: Conditions
    obligations: Obligations
    description: str
    line: int
    order: int


@dataclass(frozen=True)
class Quota:
    """A token bucket per peer node or per service id among the exchanges it selects:
    ``burst`` tokens at most, refilled at ``per_minute`` a minute."""

    id: str
    scope: QuotaScope
    directions: frozenset[Direction]
    peer_nodes: frozenset[str] | None
    services: ServiceSelector | None
    per_minute: float
    burst: int
    line: int
    # The kinds of exchange whose tokens it counts; None: every kind.
    kinds: frozenset[Kind] | None = None


@dataclass(frozen=True)
class Bundle:
    node: str
    revision: str
    description: str
    utc_offset_min: int
    rules: tuple[Rule, ...]
    quotas: tuple[Quota, ...]
    source: str
    digest: str

    @property
    def full_revision(self) -> str:
        """The author's revision plus the content digest, so an edit without a bump is visible."""
        return f"{self.revision}+{self.digest[:12]}"
