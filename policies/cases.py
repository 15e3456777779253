"""Test cases kept beside a bundle (``<name>.tests.yaml``), run by ``yrd policy test``.

Like ``opa test``, a case is an input and the expected outcome, including the rule that
decides it: "denied" alone would also pass when the deny comes from the wrong rule or from
the default deny after an allow rule was broken. Each case runs on a fresh engine and a
fake clock, so cases do not share quota and ``repeat`` can exhaust a burst deterministically.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import cast

import yaml

from core.clock import FakeClock
from core.errors import ConfigError
from policies.catalogue import CatalogueService
from policies.engine import PolicyEngine
from policies.model import KINDS, LOG_LEVELS, Decision, Direction, Kind, PolicyInput, clue_input
from policies.schema import FIELD_RE, NODE_RE, PREFIX_RE, SERVICE_RE, WORD_RE, load_bundle
from policies.yamlsrc import Reader, compose

_TOP = ("bundle", "peers", "services", "defaults", "cases")
_INPUT = (
    "direction",
    "peer",
    "peer_jurisdiction",
    "service",
    "service_owner",
    "service_department",
    "purpose",
    "role",
    "fields",
    "consent",
    "at",
    "kind",
    "domain",
    "region",
    "source",
)
_EXPECT = (
    "allowed",
    "rule",
    "code",
    "matched",
    "strip",
    "mask",
    "require_consent",
    "require_second_approval",
    "log",
)
_SUFFIX = ".tests.yaml"


@dataclass(frozen=True)
class Case:
    name: str
    line: int
    input: PolicyInput
    repeat: int
    expect: dict[str, object]


@dataclass(frozen=True)
class CaseResult:
    file: str
    case: Case
    decision: Decision
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        head = f"{'PASS' if self.passed else 'FAIL'} {self.file}:{self.case.line}: {self.case.name}"
        return "\n".join([head, *(f"    {p}" for p in self.problems)])


def case_file_for(bundle: Path) -> Path:
    return bundle.with_name(bundle.stem + _SUFFIX)


def run_case_file(path: Path, catalogue: Mapping[str, CatalogueService]) -> list[CaseResult]:
    bundle_path, cases = load_cases(path, catalogue)
    bundle = load_bundle(bundle_path)
    results = []
    for case in cases:
        engine = PolicyEngine(bundle, FakeClock())
        decision = engine.decide(case.input)
        for _ in range(case.repeat - 1):
            decision = engine.decide(case.input)
        results.append(CaseResult(str(path), case, decision, tuple(_compare(case.expect, decision))))
    return results


def _compare(expect: dict[str, object], d: Decision) -> list[str]:
    o = d.obligations
    actual: dict[str, object] = {
        "allowed": d.allowed,
        "rule": d.deciding_rule,
        "code": d.code,
        "matched": sorted(d.rule_ids),
        "strip": sorted(o.strip),
        "mask": sorted(o.mask),
        "require_consent": o.require_consent,
        "require_second_approval": o.require_second_approval,
        "log": o.log_level,
    }
    problems = [f"{k}: expected {v!r}, got {actual[k]!r}" for k, v in expect.items() if actual[k] != v]
    if problems:
        problems.append(f"reason: {d.reason}")
    return problems


def load_cases(path: Path, catalogue: Mapping[str, CatalogueService]) -> tuple[Path, list[Case]]:
    """The bundle the file tests and its cases. Service owners and departments come from
    ``catalogue`` unless the file's ``services`` map or the case itself gives them."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read test file {path}: {e}", field="tests") from e
    r = Reader(str(path))
    top = r.mapping(compose(text, str(path)), "", _TOP, required=("cases",)) or {}
    name = r.string(top["bundle"], "bundle") if "bundle" in top else None
    bundle_path = path.with_name(name or path.name.removesuffix(_SUFFIX) + ".yaml")
    peers = {
        key: r.string(node, f"peers.{key}", PREFIX_RE) or ""
        for key, node in (r.mapping(top["peers"], "peers", None) or {} if "peers" in top else {}).items()
    }
    services = {s.id: (s.owner, s.department) for s in catalogue.values()}
    for key, node in (
        r.mapping(top["services"], "services", None) or {} if "services" in top else {}
    ).items():
        m = (
            r.mapping(node, f"services.{key}", ("owner", "department"), required=("owner", "department"))
            or {}
        )
        if {"owner", "department"} <= m.keys():
            owner = r.string(m["owner"], f"services.{key}.owner", PREFIX_RE)
            services[key] = (owner or "", r.string(m["department"], f"services.{key}.department") or "")
    defaults = (r.mapping(top["defaults"], "defaults", _INPUT) or {}) if "defaults" in top else {}
    ctx = _Context(defaults, peers, services)
    cases = []
    for i, item in enumerate((r.sequence(top["cases"], "cases") or []) if "cases" in top else []):
        case = _case(r, item, f"cases[{i}]", ctx)
        if case is not None:
            cases.append(case)
    r.check()
    return bundle_path, cases


@dataclass(frozen=True)
class _Context:
    """What the file gives every case: default input keys and the peer/service lookups."""

    defaults: dict[str, yaml.Node]
    peers: Mapping[str, str]
    services: Mapping[str, tuple[str, str]]


def _case(r: Reader, node: yaml.Node, where: str, ctx: _Context) -> Case | None:
    m = r.mapping(node, where, ("name", "input", "repeat", "expect"), required=("name", "input", "expect"))
    if m is None or not {"name", "input", "expect"} <= m.keys():
        return None
    name = r.string(m["name"], f"{where}.name")
    given = r.mapping(m["input"], f"{where}.input", _INPUT)
    repeat = r.integer(m["repeat"], f"{where}.repeat", minimum=1) if "repeat" in m else 1
    expect = _expect(r, m["expect"], f"{where}.expect")
    if given is None:
        return None
    inp = _input(r, m["input"], f"{where}.input", {**ctx.defaults, **given}, ctx)
    if name is None or inp is None or repeat is None or expect is None:
        return None
    return Case(name, node.start_mark.line + 1, inp, repeat, expect)


def _input(
    r: Reader, node: yaml.Node, where: str, v: dict[str, yaml.Node], ctx: _Context
) -> PolicyInput | None:
    kind = r.string(v["kind"], f"{where}.kind") if "kind" in v else "application"
    if kind == "clue":
        return _clue_input(r, node, where, v, ctx)
    if kind not in ("application", "data"):
        r.error(v["kind"], f"{where}.kind", f"{kind!r} is not one of {', '.join(KINDS)}")
        return None
    missing = [k for k in ("direction", "peer", "service", "purpose", "role", "consent", "at") if k not in v]
    if missing:
        r.error(node, where, f"missing {', '.join(missing)} (in the case or in defaults)")
        return None
    direction = r.string(v["direction"], f"{where}.direction")
    if direction is not None and direction not in ("outbound", "inbound"):
        r.error(v["direction"], f"{where}.direction", f"{direction!r} is neither outbound nor inbound")
    peer = r.string(v["peer"], f"{where}.peer", NODE_RE) or ""
    service = r.string(v["service"], f"{where}.service", SERVICE_RE) or ""
    known = ctx.services.get(service)
    jurisdiction = _or_lookup(r, node, v, f"{where}.peer_jurisdiction", ctx.peers.get(peer))
    owner = _or_lookup(r, node, v, f"{where}.service_owner", known[0] if known else None)
    department = _or_lookup(r, node, v, f"{where}.service_department", known[1] if known else None)
    fields = r.names(v["fields"], f"{where}.fields", FIELD_RE) if "fields" in v else ()
    purpose = r.string(v["purpose"], f"{where}.purpose", WORD_RE)
    role = r.string(v["role"], f"{where}.role", WORD_RE)
    consent = r.boolean(v["consent"], f"{where}.consent")
    at_ms = _instant(r, v["at"], f"{where}.at")
    values = (direction, jurisdiction, owner, department, fields, purpose, role, consent, at_ms)
    if any(x is None for x in values) or direction not in ("outbound", "inbound"):
        return None
    assert purpose is not None and role is not None and consent is not None and at_ms is not None
    return PolicyInput(
        direction=cast(Direction, direction),
        peer_node=peer,
        peer_jurisdiction=jurisdiction or "",
        service_id=service,
        service_owner=owner or "",
        service_department=department or "",
        purpose=purpose,
        role=role,
        fields=frozenset(fields or ()),
        consent=consent,
        at_ms=at_ms,
        kind=cast(Kind, kind),
    )


def _clue_input(
    r: Reader, node: yaml.Node, where: str, v: dict[str, yaml.Node], ctx: _Context
) -> PolicyInput | None:
    """A clue is decided on its domain and region; service, purpose, fields and consent are not
    asked (a default for them in the file is ignored, so one file can mix both kinds)."""
    missing = [k for k in ("direction", "peer", "domain", "region", "role", "at") if k not in v]
    if missing:
        r.error(node, where, f"missing {', '.join(missing)} (in the case or in defaults)")
        return None
    direction = r.string(v["direction"], f"{where}.direction")
    if direction is not None and direction not in ("outbound", "inbound"):
        r.error(v["direction"], f"{where}.direction", f"{direction!r} is neither outbound nor inbound")
    peer = r.string(v["peer"], f"{where}.peer", NODE_RE) or ""
    jurisdiction = _or_lookup(r, node, v, f"{where}.peer_jurisdiction", ctx.peers.get(peer))
    domain = r.string(v["domain"], f"{where}.domain", WORD_RE)
    region = r.string(v["region"], f"{where}.region", PREFIX_RE)
    role = r.string(v["role"], f"{where}.role", WORD_RE)
    at_ms = _instant(r, v["at"], f"{where}.at")
    source = r.string(v["source"], f"{where}.source", WORD_RE) if "source" in v else ""
    if None in (jurisdiction, domain, region, role, at_ms, source) or direction not in (
        "outbound",
        "inbound",
    ):
        return None
    assert domain is not None and region is not None and role is not None and at_ms is not None
    return clue_input(
        cast(Direction, direction), peer, jurisdiction or "", domain, region, role, at_ms, source or ""
    )


def _or_lookup(
    r: Reader, node: yaml.Node, v: dict[str, yaml.Node], field: str, known: str | None
) -> str | None:
    key = field.rsplit(".", 1)[1]
    if key in v:
        return r.string(v[key], field)
    if known is None:
        r.error(node, field, "not given, and not known from the peers or services maps or the catalogue")
    return known


def _instant(r: Reader, node: yaml.Node, where: str) -> int | None:
    text = r.string(node, where)
    try:
        at = datetime.fromisoformat(text) if text is not None else None
    except ValueError:
        at = None
    if text is not None and (at is None or at.tzinfo is None):
        r.error(node, where, f"{text!r} is not an ISO 8601 time with a UTC offset")
        return None
    return None if at is None else round(at.timestamp() * 1000)


def _expect(r: Reader, node: yaml.Node, where: str) -> dict[str, object] | None:
    m = r.mapping(node, where, _EXPECT, required=("allowed", "rule"))
    if m is None or not {"allowed", "rule"} <= m.keys():
        return None
    out: dict[str, object] = {}
    for key, value in m.items():
        field = f"{where}.{key}"
        if key in ("allowed", "require_consent", "require_second_approval"):
            out[key] = r.boolean(value, field)
        elif key == "rule":
            # "" is the default deny, so an empty string is a legitimate expectation here.
            is_empty = isinstance(value, yaml.ScalarNode) and value.value == "" and value.style in ("'", '"')
            out[key] = "" if is_empty else r.string(value, field)
        elif key in ("matched", "strip", "mask"):
            names = r.names(value, field)
            out[key] = None if names is None else sorted(names)
        elif key == "log":
            level = None if value.tag == "tag:yaml.org,2002:null" else r.string(value, field)
            if level is not None and level not in LOG_LEVELS:
                r.error(value, field, f"{level!r} is not one of {', '.join(LOG_LEVELS)}")
            out[key] = level
        else:
            out[key] = r.string(value, field)
    return out
