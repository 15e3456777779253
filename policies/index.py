"""Rule lookup by direction, service and peer, so a decision never scans the whole bundle.

Rules are filed in buckets keyed by (direction, service id or "", peer node or ""), where ""
holds the rules that name no exact service (or only patterns) or no peer node. One decision
reads at most four buckets, keeps the rules whose *static* conditions hold (those that depend
only on the service and the peer) and caches that short list per (direction, service, peer):
a node sees a few dozen services and four peers, so later decisions only test purpose, role,
consent, fields and time on a handful of rules.
"""

from __future__ import annotations

from collections import defaultdict

from policies.model import Direction, PolicyInput
from policies.spec import Conditions, Quota, Rule

StaticKey = tuple[Direction, str, str, str, str, str, str, str, str]
Candidates = tuple[tuple[Rule, ...], tuple[Quota, ...]]

# Keys come from requests (a member may name any service id); bound the cache, not trust them.
MAX_CACHED_KEYS = 8192


def static_key(inp: PolicyInput) -> StaticKey:
    return (
        inp.direction,
        inp.service_id,
        inp.service_owner,
        inp.service_department,
        inp.peer_node,
        inp.peer_jurisdiction,
        inp.kind,
        inp.domain,
        inp.region,
    )


def static_match(c: Conditions, key: StaticKey) -> bool:
    """Conditions fixed by the service and peer alone (see module doc)."""
    direction, service_id, owner, department, peer_node, peer_jurisdiction, kind, domain, region = key
    if direction not in c.directions or kind != c.kind:
        return False
    if c.domains is not None and domain not in c.domains:
        return False
    if c.regions is not None and not region.startswith(c.regions):
        return False
    if c.peer_nodes is not None and peer_node not in c.peer_nodes:
        return False
    if c.peer_jurisdictions is not None and not peer_jurisdiction.startswith(c.peer_jurisdictions):
        return False
    if c.services is not None and not c.services.matches(service_id):
        return False
    if c.service_owners is not None and not owner.startswith(c.service_owners):
        return False
    if c.service_departments is not None and department not in c.service_departments:
        return False
    if c.owned_by_peer is not None:
        owned = bool(peer_jurisdiction) and owner.startswith(peer_jurisdiction)
        if owned != c.owned_by_peer:
            return False
    return True


def quota_applies(q: Quota, key: StaticKey) -> bool:
    direction, service_id, _owner, _department, peer_node, _jurisdiction, kind, _domain, _region = key
    if direction not in q.directions:
        return False
    if q.kinds is not None and kind not in q.kinds:
        return False
    if q.peer_nodes is not None and peer_node not in q.peer_nodes:
        return False
    if kind == "clue" and (q.scope == "service" or q.services is not None):
        return False  # a clue has no service: per-service quotas never spend its tokens
    return q.services is None or q.services.matches(service_id)


class RuleIndex:
    def __init__(self, rules: tuple[Rule, ...], quotas: tuple[Quota, ...]) -> None:
        buckets: defaultdict[tuple[str, str, str], list[Rule]] = defaultdict(list)
        for rule in rules:
            c = rule.when
            service_keys = sorted(c.services.exact) if c.services is not None else [""]
            if c.services is not None and c.services.patterns:
                service_keys.append("")
            peer_keys = sorted(c.peer_nodes) if c.peer_nodes is not None else [""]
            for direction in c.directions:
                for service_key in service_keys:
                    for peer_key in peer_keys:
                        buckets[(direction, service_key, peer_key)].append(rule)
        self._buckets = {k: tuple(v) for k, v in buckets.items()}
        self._quotas = quotas
        self._cache: dict[StaticKey, Candidates] = {}

    def candidates(self, inp: PolicyInput) -> Candidates:
        key = static_key(inp)
        found = self._cache.get(key)
        if found is None:
            found = self._gather(key)
            if len(self._cache) >= MAX_CACHED_KEYS:
                self._cache.clear()
            self._cache[key] = found
        return found

    def _gather(self, key: StaticKey) -> Candidates:
        direction, service_id, peer_node = key[0], key[1], key[4]
        seen: dict[int, Rule] = {}
        for service_key in {service_id, ""}:
            for peer_key in {peer_node, ""}:
                for rule in self._buckets.get((direction, service_key, peer_key), ()):
                    seen[rule.order] = rule
        rules = tuple(r for _, r in sorted(seen.items()) if static_match(r.when, key))
        quotas = tuple(q for q in self._quotas if quota_applies(q, key))
        return rules, quotas

    def bucket_sizes(self) -> dict[tuple[str, str, str], int]:
        """For the benchmark report: how evenly the rules spread."""
        return {k: len(v) for k, v in self._buckets.items()}
