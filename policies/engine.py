"""Deciding: deny overrides allow, nothing applicable means deny, quotas last.

The order of the checks is the policy: an explicit deny wins over any allow; without an
allowing rule the answer is the default deny; an allow whose rules ask for recorded
consent is refused when there is none (consent cannot be applied after the fact the way
a strip can); and only an exchange that would be allowed spends a quota token, so a peer
hammering a refused route cannot use up its own budget for legitimate traffic.
"""

from __future__ import annotations

from core.clock import Clock
from core.ids import new_id
from policies.index import RuleIndex
from policies.model import (
    CODE_ALLOWED,
    CODE_CONSENT_REQUIRED,
    CODE_DEFAULT_DENY,
    CODE_QUOTA,
    CODE_RULE_DENY,
    NO_OBLIGATIONS,
    Decision,
    Obligations,
    PolicyInput,
)
from policies.quotas import QuotaBook, QuotaCounter
from policies.spec import Bundle, Conditions, Rule

DEFAULT_DENY_REASON = "no rule allows this exchange (default deny)"


def local_time(at_ms: int, utc_offset_min: int) -> tuple[int, int]:
    """(weekday with Monday = 0, minute of the day) at the bundle's UTC offset."""
    minutes = at_ms // 60_000 + utc_offset_min
    return (minutes // 1440 + 3) % 7, minutes % 1440  # 1970-01-01 was a Thursday


def dynamic_match(c: Conditions, inp: PolicyInput, weekday: int, minute: int) -> bool:
    """Conditions that vary per application (the index has settled the rest)."""
    if c.purposes is not None and inp.purpose not in c.purposes:
        return False
    if c.clue_sources is not None and inp.clue_source not in c.clue_sources:
        return False
    if c.roles is not None and inp.role not in c.roles:
        return False
    if c.consent is not None and inp.consent != c.consent:
        return False
    if c.fields is not None and not c.fields.holds(inp.fields):
        return False
    return c.time is None or any(w.contains(weekday, minute) for w in c.time)


def rule_reason(rule: Rule) -> str:
    verb = "allowed" if rule.effect == "allow" else "denied"
    text = f"{verb} by rule {rule.id} (line {rule.line})"
    return f"{text}: {rule.description}" if rule.description else text


class PolicyEngine:
    """One loaded bundle, compiled. ``decide`` is synchronous and allocation-light because it
    runs on the event loop for every application, twice (origin and owner)."""

    def __init__(self, bundle: Bundle, clock: Clock, quotas: QuotaCounter | None = None) -> None:
        self.bundle = bundle
        self.revision = bundle.full_revision
        self.quotas: QuotaCounter = quotas if quotas is not None else QuotaBook(clock)
        self.index = RuleIndex(bundle.rules, bundle.quotas)
        self._offset = bundle.utc_offset_min
        self._reasons = {r.id: rule_reason(r) for r in bundle.rules}

    def decide(self, inp: PolicyInput) -> Decision:
        return self.evaluate(inp, consume=True)

    def evaluate(self, inp: PolicyInput, consume: bool) -> Decision:
        """``consume=False`` answers without spending quota (explain, dry runs)."""
        rules, quotas = self.index.candidates(inp)
        weekday, minute = local_time(inp.at_ms, self._offset)
        matched = [r for r in rules if dynamic_match(r.when, inp, weekday, minute)]
        ids = tuple(r.id for r in matched)
        denies = [r for r in matched if r.effect == "deny"]
        if denies:
            return self._decision(
                inp.at_ms, CODE_RULE_DENY, ids, denies[0].id, self._reasons[denies[0].id], _merge(denies)
            )
        allows = [r for r in matched if r.effect == "allow"]
        if not allows:
            return self._decision(inp.at_ms, CODE_DEFAULT_DENY, ids, "", DEFAULT_DENY_REASON, NO_OBLIGATIONS)
        obligations = _merge(allows)
        if obligations.require_consent and not inp.consent:
            asking = next(r for r in allows if r.obligations.require_consent)
            reason = f"rule {asking.id} (line {asking.line}) requires recorded consent and none was given"
            return self._decision(inp.at_ms, CODE_CONSENT_REQUIRED, ids, asking.id, reason, obligations)
        refused = self.quotas.admit(quotas, inp, consume)
        if refused is not None:
            who = f"{refused.scope} {self.quotas.key_for(refused, inp)}"
            reason = (
                f"quota {refused.id} exhausted for {who} ({refused.per_minute:g}/min, burst {refused.burst})"
            )
            return self._decision(inp.at_ms, CODE_QUOTA, ids, refused.id, reason, obligations)
        return self._decision(
            inp.at_ms, CODE_ALLOWED, ids, allows[0].id, self._reasons[allows[0].id], obligations
        )

    def _decision(
        self,
        at_ms: int,
        code: str,
        ids: tuple[str, ...],
        deciding: str,
        reason: str,
        obligations: Obligations,
    ) -> Decision:
        return Decision(
            decision_id=new_decision_id(at_ms),
            allowed=code == CODE_ALLOWED,
            rule_ids=ids,
            deciding_rule=deciding,
            reason=reason,
            obligations=obligations,
            bundle_revision=self.revision,
            code=code,
        )


def new_decision_id(at_ms: int) -> str:
    """An id minted as the node's other ids are (time first, so the decision log's key index
    grows at its end: two decisions per routed application), marked as a decision's."""
    return "pd-" + new_id(at_ms)


def _merge(rules: list[Rule]) -> Obligations:
    if len(rules) == 1:
        return rules[0].obligations
    merged = rules[0].obligations
    for rule in rules[1:]:
        merged = merged.merged(rule.obligations)
    return merged
