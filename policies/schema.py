"""The bundle schema: YAML text in, a validated :class:`Bundle` out, or every error at once.

A misspelt key or value is an error naming file, line and field (``rules[3].when.purpose``)
rather than a condition that silently never matches; that is what makes "default deny"
safe to rely on. The format is documented with examples in docs/policies.md.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import yaml

from core.errors import ConfigError
from policies.model import KINDS, LOG_LEVELS, Direction, Kind, Obligations
from policies.spec import (
    DAY_NAMES,
    Bundle,
    Conditions,
    Effect,
    FieldCondition,
    Quota,
    QuotaScope,
    Rule,
    ServiceSelector,
    TimeWindow,
)
from policies.yamlsrc import Issue, Reader, compose, raise_issues

NODE_RE = re.compile(r"[a-z0-9-]{2,32}")
ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,79}")
SERVICE_RE = re.compile(r"[a-z0-9*?\[][a-z0-9._*?\[\]-]{0,127}")
PREFIX_RE = re.compile(r"\d{2,12}")
FIELD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
WORD_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
DEPARTMENT_RE = re.compile(r"\S(.{0,126}\S)?")
TZ_RE = re.compile(r"([+-])(\d{2}):(\d{2})")
HHMM_RE = re.compile(r"([01]\d|2[0-3]):([0-5]\d)|24:00")

_TOP = ("node", "revision", "description", "timezone", "quotas", "rules")
_RULE = ("id", "effect", "description", "when", "obligations")
_WHEN = ("direction", "kind", "peer", "service", "clue", "purpose", "role", "fields", "consent", "time")
# Conditions about an application's service or form, meaningless for a clue: a clue rule that
# names one would never match, so it is an error rather than a silent default deny.
_APPLICATION_ONLY = ("service", "purpose", "fields", "consent")
_SERVICE = ("ids", "owners", "departments", "owned_by_peer")
_OBLIGATIONS = ("strip", "mask", "require_consent", "require_second_approval", "log")
_QUOTA = ("id", "per", "direction", "kind", "peers", "services", "per_minute", "burst")
_DAY_GROUPS = {"weekdays": range(5), "weekend": range(5, 7), "daily": range(7)}


def load_bundle(path: Path) -> Bundle:
    """Read and validate a bundle file without checking its signature (lint, test, explain)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read bundle {path}: {e.strerror}", field="bundle") from e
    return parse_bundle(data, str(path))


def parse_bundle(data: bytes, source: str) -> Bundle:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise_issues([Issue(source, data.count(b"\n", 0, e.start) + 1, "(file)", "not UTF-8 text")])
    r = Reader(source)
    top = r.mapping(compose(text, source), "", _TOP, required=("node", "revision", "rules"))
    r.check()
    assert top is not None
    node = r.string(top["node"], "node", NODE_RE)
    revision = r.string(top["revision"], "revision")
    description = r.string(top["description"], "description") if "description" in top else ""
    offset = _timezone(r, top["timezone"]) if "timezone" in top else 8 * 60
    rules = _rules(r, top["rules"])
    quotas = _quotas(r, top["quotas"]) if "quotas" in top else ()
    _unique_ids(r, rules, quotas)
    r.check()
    assert node is not None and revision is not None and offset is not None
    return Bundle(
        node=node,
        revision=revision,
        description=description or "",
        utc_offset_min=offset,
        rules=rules,
        quotas=quotas,
        source=source,
        digest=hashlib.sha256(data).hexdigest(),
    )


def _timezone(r: Reader, node: yaml.Node) -> int | None:
    text = r.string(node, "timezone")
    m = TZ_RE.fullmatch(text or "")
    if text is not None and m is None:
        r.error(node, "timezone", f"{text!r} is not a UTC offset like +08:00")
    if m is None:
        return None
    minutes = int(m.group(2)) * 60 + int(m.group(3))
    return -minutes if m.group(1) == "-" else minutes


def _rules(r: Reader, node: yaml.Node) -> tuple[Rule, ...]:
    items = r.sequence(node, "rules") or []
    rules = []
    for i, item in enumerate(items):
        rule = _rule(r, item, f"rules[{i}]", i)
        if rule is not None:
            rules.append(rule)
    return tuple(rules)


def _rule(r: Reader, node: yaml.Node, where: str, order: int) -> Rule | None:
    m = r.mapping(node, where, _RULE, required=("id", "effect", "when"))
    if m is None or not {"id", "effect", "when"} <= m.keys():
        return None
    rule_id = r.string(m["id"], f"{where}.id", ID_RE)
    effect = r.string(m["effect"], f"{where}.effect")
    if effect is not None and effect not in ("allow", "deny"):
        r.error(m["effect"], f"{where}.effect", f"{effect!r} is neither allow nor deny")
        effect = None
    description = r.string(m["description"], f"{where}.description") if "description" in m else ""
    when = _conditions(r, m["when"], f"{where}.when")
    obligations = Obligations()
    if "obligations" in m:
        clue = isinstance(m["when"], yaml.MappingNode) and any(
            k.value == "kind" and v.value == "clue"
            for k, v in m["when"].value
            if isinstance(v, yaml.ScalarNode)
        )
        # A clue's fields are not stripped or consented to: its rules, like deny rules, log only.
        why = "a deny rule sends nothing" if effect == "deny" else "a clue is sent whole" if clue else None
        obligations = _obligations(r, m["obligations"], f"{where}.obligations", why)
    if rule_id is None or effect is None or when is None:
        return None
    return Rule(
        id=rule_id,
        effect=cast(Effect, effect),
        when=when,
        obligations=obligations,
        description=description or "",
        line=node.start_mark.line + 1,
        order=order,
    )


def _directions(r: Reader, node: yaml.Node, where: str) -> frozenset[Direction] | None:
    values = r.strings(node, where)
    if values is None:
        return None
    bad = [v for v in values if v not in ("outbound", "inbound")]
    if bad:
        r.error(node, where, f"{bad[0]!r} is neither outbound nor inbound")
        return None
    return frozenset(cast(Direction, v) for v in values)


def _conditions(r: Reader, node: yaml.Node, where: str) -> Conditions | None:
    m = r.mapping(node, where, _WHEN, required=("direction",))
    if m is None or "direction" not in m:
        return None
    # Every condition is read even when an earlier one failed, so all errors surface at once.
    directions = _directions(r, m["direction"], f"{where}.direction")
    peer_nodes, peer_prefixes = _peer(r, m["peer"], f"{where}.peer") if "peer" in m else (None, None)
    service = _service(r, m["service"], f"{where}.service") if "service" in m else None
    purposes = _set(r.strings(m["purpose"], f"{where}.purpose", WORD_RE)) if "purpose" in m else None
    roles = _set(r.strings(m["role"], f"{where}.role", WORD_RE)) if "role" in m else None
    consent = r.boolean(m["consent"], f"{where}.consent") if "consent" in m else None
    fields = _fields(r, m["fields"], f"{where}.fields") if "fields" in m else None
    time = _windows(r, m["time"], f"{where}.time") if "time" in m else None
    kind = _kind(r, m, where)
    domains, regions, sources = _clue(r, m["clue"], f"{where}.clue") if "clue" in m else (None, None, None)
    if directions is None or kind is None:
        return None
    return Conditions(
        directions=directions,
        peer_nodes=peer_nodes,
        peer_jurisdictions=peer_prefixes,
        services=service.selector if service else None,
        service_owners=service.owners if service else None,
        service_departments=service.departments if service else None,
        owned_by_peer=service.owned_by_peer if service else None,
        purposes=purposes,
        roles=roles,
        consent=consent,
        fields=fields,
        time=time,
        kind=kind,
        domains=domains,
        regions=regions,
        clue_sources=sources,
    )


def _kind(r: Reader, m: dict[str, yaml.Node], where: str) -> Kind | None:
    kind = r.string(m["kind"], f"{where}.kind") if "kind" in m else "application"
    if kind not in KINDS:
        if kind is not None:
            r.error(m["kind"], f"{where}.kind", f"{kind!r} is not one of {', '.join(KINDS)}")
        return None
    if kind == "clue":
        for key in _APPLICATION_ONLY:
            if key in m:
                r.error(
                    m[key], f"{where}.{key}", "a clue has no service or form; a clue rule cannot match it"
                )
    elif "clue" in m:
        r.error(m["clue"], f"{where}.clue", "clue conditions need kind: clue")
    return cast(Kind, kind)


def _clue(
    r: Reader, node: yaml.Node, where: str
) -> tuple[frozenset[str] | None, tuple[str, ...] | None, frozenset[str] | None]:
    c = r.mapping(node, where, ("domains", "regions", "sources"))
    if c == {}:
        r.error(node, where, "give domains, regions or sources, or drop the condition")
    c = c or {}
    domains = _set(r.strings(c["domains"], f"{where}.domains", WORD_RE)) if "domains" in c else None
    regions = r.strings(c["regions"], f"{where}.regions", PREFIX_RE) if "regions" in c else None
    sources = _set(r.strings(c["sources"], f"{where}.sources", WORD_RE)) if "sources" in c else None
    return domains, regions, sources


def _peer(r: Reader, node: yaml.Node, where: str) -> tuple[frozenset[str] | None, tuple[str, ...] | None]:
    p = r.mapping(node, where, ("nodes", "jurisdictions"))
    if p == {}:
        r.error(node, where, "give nodes or jurisdictions, or drop the condition")
    p = p or {}
    nodes = _set(r.strings(p["nodes"], f"{where}.nodes", NODE_RE)) if "nodes" in p else None
    prefixes = (
        r.strings(p["jurisdictions"], f"{where}.jurisdictions", PREFIX_RE) if "jurisdictions" in p else None
    )
    return nodes, prefixes


@dataclass(frozen=True)
class _ServiceConditions:
    selector: ServiceSelector | None
    owners: tuple[str, ...] | None
    departments: frozenset[str] | None
    owned_by_peer: bool | None


def _service(r: Reader, node: yaml.Node, where: str) -> _ServiceConditions:
    s = r.mapping(node, where, _SERVICE)
    if s == {}:
        r.error(node, where, "give ids, owners, departments or owned_by_peer, or drop the condition")
    s = s or {}
    ids = r.strings(s["ids"], f"{where}.ids", SERVICE_RE) if "ids" in s else None
    return _ServiceConditions(
        selector=ServiceSelector.of(ids) if ids is not None else None,
        owners=r.strings(s["owners"], f"{where}.owners", PREFIX_RE) if "owners" in s else None,
        departments=_set(r.strings(s["departments"], f"{where}.departments", DEPARTMENT_RE))
        if "departments" in s
        else None,
        owned_by_peer=r.boolean(s["owned_by_peer"], f"{where}.owned_by_peer")
        if "owned_by_peer" in s
        else None,
    )


def _set(values: tuple[str, ...] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(values)


def _fields(r: Reader, node: yaml.Node, where: str) -> FieldCondition | None:
    m = r.mapping(node, where, ("any", "all", "none", "only"))
    if not m:
        if m is not None:
            r.error(node, where, "give any, all, none or only, or drop the condition")
        return None
    got = {k: _set(r.strings(v, f"{where}.{k}", FIELD_RE)) for k, v in m.items()}
    return FieldCondition(any=got.get("any"), all=got.get("all"), none=got.get("none"), only=got.get("only"))


def _windows(r: Reader, node: yaml.Node, where: str) -> tuple[TimeWindow, ...] | None:
    items = [node] if isinstance(node, yaml.MappingNode) else r.sequence(node, where)
    if items is None:
        return None
    if not items:
        r.error(node, where, "an empty list of windows matches nothing; remove the condition instead")
    windows = [_window(r, item, f"{where}[{i}]") for i, item in enumerate(items)]
    return tuple(w for w in windows if w is not None) if all(windows) else None


def _window(r: Reader, node: yaml.Node, where: str) -> TimeWindow | None:
    m = r.mapping(node, where, ("days", "from", "to"), required=("from", "to"))
    if m is None or not {"from", "to"} <= m.keys():
        return None
    days: set[int] = set(range(7))
    if "days" in m:
        names = r.strings(m["days"], f"{where}.days") or ()
        days = set()
        for name in names:
            if name in _DAY_GROUPS:
                days.update(_DAY_GROUPS[name])
            elif name in DAY_NAMES:
                days.add(DAY_NAMES.index(name))
            else:
                hint = "mon..sun, weekdays, weekend, daily"
                r.error(m["days"], f"{where}.days", f"{name!r} is not a day ({hint})")
    start, end = _hhmm(r, m["from"], f"{where}.from"), _hhmm(r, m["to"], f"{where}.to")
    if start is None or end is None or not days:
        return None
    if start in (1440, end):
        r.error(node, where, "the window is empty (from equals to, or starts at 24:00)")
        return None
    return TimeWindow(frozenset(days), start, end)


def _hhmm(r: Reader, node: yaml.Node, where: str) -> int | None:
    text = r.string(node, where)
    if text is None:
        return None
    if not HHMM_RE.fullmatch(text):
        r.error(node, where, f"{text!r} is not a time like 08:30 (24:00 allowed as an end)")
        return None
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _obligations(r: Reader, node: yaml.Node, where: str, log_only: str | None) -> Obligations:
    """``log_only`` says why the rule takes only the log obligation, when it does."""
    m = r.mapping(node, where, _OBLIGATIONS) or {}
    if log_only is not None:
        for key in m.keys() - {"log"}:
            r.error(m[key], f"{where}.{key}", f"{log_only}, so it takes only the log obligation")
            del m[key]
    strip = _set(r.strings(m["strip"], f"{where}.strip", FIELD_RE)) if "strip" in m else None
    mask = _set(r.strings(m["mask"], f"{where}.mask", FIELD_RE)) if "mask" in m else None
    level = r.string(m["log"], f"{where}.log") if "log" in m else None
    if level is not None and level not in LOG_LEVELS:
        r.error(m["log"], f"{where}.log", f"{level!r} is not one of {', '.join(LOG_LEVELS)}")
        level = None
    if strip and mask and strip & mask:
        r.error(m["mask"], f"{where}.mask", f"{sorted(strip & mask)} are both stripped and masked")
    return Obligations(
        strip=strip or frozenset(),
        mask=mask or frozenset(),
        require_consent=_flag(r, m, "require_consent", where),
        require_second_approval=_flag(r, m, "require_second_approval", where),
        log_level=level,
    )


def _flag(r: Reader, m: dict[str, yaml.Node], key: str, where: str) -> bool:
    return key in m and r.boolean(m[key], f"{where}.{key}") is True


def _quotas(r: Reader, node: yaml.Node) -> tuple[Quota, ...]:
    out = []
    for i, item in enumerate(r.sequence(node, "quotas") or []):
        where = f"quotas[{i}]"
        m = r.mapping(item, where, _QUOTA, required=("id", "per", "per_minute", "burst"))
        if m is None or not {"id", "per", "per_minute", "burst"} <= m.keys():
            continue
        qid = r.string(m["id"], f"{where}.id", ID_RE)
        scope = r.string(m["per"], f"{where}.per")
        if scope is not None and scope not in ("peer", "service"):
            r.error(m["per"], f"{where}.per", f"{scope!r} is neither peer nor service")
            scope = None
        directions = _directions(r, m["direction"], f"{where}.direction") if "direction" in m else None
        kinds = _kinds(r, m["kind"], f"{where}.kind") if "kind" in m else None
        peers = _set(r.strings(m["peers"], f"{where}.peers", NODE_RE)) if "peers" in m else None
        ids = r.strings(m["services"], f"{where}.services", SERVICE_RE) if "services" in m else None
        per_minute = r.number(m["per_minute"], f"{where}.per_minute", minimum=0.001)
        burst = r.integer(m["burst"], f"{where}.burst", minimum=1)
        if qid is None or scope is None or per_minute is None or burst is None:
            continue
        out.append(
            Quota(
                id=qid,
                scope=cast(QuotaScope, scope),
                directions=directions or frozenset(("outbound", "inbound")),
                peer_nodes=peers,
                services=ServiceSelector.of(ids) if ids else None,
                per_minute=per_minute,
                burst=burst,
                line=item.start_mark.line + 1,
                kinds=kinds,
            )
        )
    return tuple(out)


def _kinds(r: Reader, node: yaml.Node, where: str) -> frozenset[Kind] | None:
    """A quota's ``kind``: one kind or a list, so data queries can have buckets of their own
    instead of spending the tokens meant for applications."""
    values = r.strings(node, where)
    if values is None:
        return None
    bad = [v for v in values if v not in KINDS]
    if bad:
        r.error(node, where, f"{bad[0]!r} is not one of {', '.join(KINDS)}")
        return None
    return frozenset(cast(Kind, v) for v in values)


def _unique_ids(r: Reader, rules: tuple[Rule, ...], quotas: tuple[Quota, ...]) -> None:
    """Rule and quota ids share one space, since a decision names either as its deciding rule."""
    seen: dict[str, int] = {}
    entries = [("rule", x.id, x.line) for x in rules] + [("quota", q.id, q.line) for q in quotas]
    for kind, ident, line in entries:
        if ident in seen:
            r.error_at(line, f"{kind} {ident}", f"id already used on line {seen[ident]}")
        seen.setdefault(ident, line)
