"""The values that cross the engine's boundary: what is asked, and what was decided.

They are frozen so a decision handed to the outbox, the decision log and the clerk is the
same object everywhere, and slotted because the engine builds one per decision on the hot
path. Only field NAMES ever appear here; the form values stay with the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Direction = Literal["outbound", "inbound"]
Kind = Literal["application", "clue", "data"]
# "data": a consented query for a data resource at its holder (docs/sharing.md); decided like an
# application, with the resource id as the service and the fields asked as the fields.
KINDS: Final = ("application", "clue", "data")
DIRECTIONS: Final = ("outbound", "inbound")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")

# Stable machine-readable outcomes, for PolicyDenied(code=...) and metrics; `reason` is prose.
CODE_ALLOWED: Final = "allowed"
CODE_RULE_DENY: Final = "rule_deny"
CODE_DEFAULT_DENY: Final = "default_deny"
CODE_CONSENT_REQUIRED: Final = "consent_required"
CODE_QUOTA: Final = "quota"


@dataclass(frozen=True, slots=True)
class PolicyInput:
    """One question to the engine. ``peer_*`` is the other end: the owner for an outbound
    check, the origin for an inbound one. ``service_owner`` is the owner's GB/T 2260 code."""

    direction: Direction
    peer_node: str
    peer_jurisdiction: str
    service_id: str
    service_owner: str
    service_department: str
    purpose: str
    role: str
    fields: frozenset[str]
    consent: bool
    at_ms: int
    # A supervision clue has no service: it is decided on its domain and GB/T 2260 region
    # (docs/policies.md "Clues"); for an application these stay at their defaults.
    kind: Kind = "application"
    domain: str = ""
    region: str = ""
    clue_source: str = ""  # national | provincial_department | citizen_report


def clue_input(
    direction: Direction,
    peer: str,
    peer_jurisdiction: str,
    domain: str,
    region: str,
    role: str,
    at_ms: int,
    source: str = "",
) -> PolicyInput:
    """The one shape of a clue question, for the node's gate and for bundle test cases alike."""
    return PolicyInput(
        direction=direction,
        peer_node=peer,
        peer_jurisdiction=peer_jurisdiction,
        service_id="",
        service_owner="",
        service_department="",
        purpose="",
        role=role,
        fields=frozenset(),
        consent=False,
        at_ms=at_ms,
        kind="clue",
        domain=domain,
        region=region,
        clue_source=source,
    )


@dataclass(frozen=True, slots=True)
class Obligations:
    """What the caller must do when the decision allows: strip and mask are field names,
    ``log_level`` asks the caller to log the exchange at that level (None: its default)."""

    strip: frozenset[str] = frozenset()
    mask: frozenset[str] = frozenset()
    require_consent: bool = False
    require_second_approval: bool = False
    log_level: str | None = None

    def merged(self, other: Obligations) -> Obligations:
        """Obligations of several allowing rules all apply: union, OR, and the higher level."""
        return Obligations(
            strip=self.strip | other.strip,
            mask=self.mask | other.mask,
            require_consent=self.require_consent or other.require_consent,
            require_second_approval=self.require_second_approval or other.require_second_approval,
            log_level=higher_level(self.log_level, other.log_level),
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "strip": sorted(self.strip),
            "mask": sorted(self.mask),
            "require_consent": self.require_consent,
            "require_second_approval": self.require_second_approval,
            "log_level": self.log_level,
        }


NO_OBLIGATIONS: Final = Obligations()


def higher_level(a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if LOG_LEVELS.index(a) >= LOG_LEVELS.index(b) else b


@dataclass(frozen=True, slots=True)
class Decision:
    """The engine's answer. ``rule_ids`` are all rules that matched (bundle order);
    ``deciding_rule`` is the deny rule, the first allowing rule, the quota id for a quota
    breach, or "" for the default deny. ``code`` is one of the ``CODE_*`` constants."""

    decision_id: str
    allowed: bool
    rule_ids: tuple[str, ...]
    deciding_rule: str
    reason: str
    obligations: Obligations
    bundle_revision: str
    code: str

    def as_dict(self) -> dict[str, object]:
        return {
            "decision_id": self.decision_id,
            "allowed": self.allowed,
            "code": self.code,
            "rule_ids": list(self.rule_ids),
            "deciding_rule": self.deciding_rule,
            "reason": self.reason,
            "obligations": self.obligations.as_dict(),
            "bundle_revision": self.bundle_revision,
        }
