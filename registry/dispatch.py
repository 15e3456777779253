"""Supervision clues (一网统管): the fixed code lists, the unified social credit code check
(GB 32100-2015) and a node's signed dispatch rules, which map (region prefix, domain) to the
regulator department responsible at the right level (docs/clues.md).

Dispatch rules are signed like policy bundles (the composition root reads them through
policies/signing.py, which registry may not import): a rule file that does not verify
against the node's own key is not loaded, so whoever can write the data folder
cannot silently send every clue to a desk nobody reads. Every error names the file, the
line of the table at fault and the key path, so an operator can fix the file by reading it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from core.errors import ConfigError, InvalidInput, clip
from core.toml import TomlTable, check_node_id, parse_toml
from registry.divisions import is_valid_code

# The domains a clue may concern; the codes travel on the wire and label metrics, the names
# are what a regulator reads. Fixed here so every member reads a code the same way.
DOMAINS: dict[str, str] = {
    "work_safety": "安全生产",
    "eco_environment": "生态环保",
    "food_drug": "食品药品安全",
    "grain_farmland": "粮食安全和耕地保护",
    "epidemic": "疫情防控",
    "finance": "金融",
}
SOURCES: dict[str, str] = {
    "national": "国家系统推送",
    "provincial_department": "省级部门推送",
    "citizen_report": "群众举报",
}
SEVERITIES = ("low", "medium", "high", "critical")
Level = Literal["province", "city", "county"]
LEVEL_RANK: dict[str, int] = {"county": 0, "city": 1, "province": 2}
_PREFIX_DIGITS: dict[str, int] = {"county": 6, "city": 4, "province": 2}

# GB 32100-2015: 18 characters from this alphabet (no I, O, S, V, Z), the last a check
# character over the first 17 with weights 3^i mod 31.
_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_USCC = re.compile(r"[0-9A-HJ-NPQRTUWXY]{18}")
_REGION_PREFIX = re.compile(r"\d{2}(\d{2}(\d{2})?)?")


def credit_code_check_character(first17: str) -> str:
    """The GB 32100-2015 check character of the first 17 characters."""
    total = sum(_USCC_ALPHABET.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return _USCC_ALPHABET[(31 - total % 31) % 31]


def check_credit_code(code: str, field: str) -> str:
    """A unified social credit code with a correct check character, else InvalidInput."""
    if not _USCC.fullmatch(code):
        raise InvalidInput(
            "统一社会信用代码 must be 18 characters of 0-9 and A-Y without I, O, S, V, Z",
            code="invalid_credit_code",
            field=field,
        )
    if credit_code_check_character(code[:17]) != code[17]:
        raise InvalidInput(
            f"统一社会信用代码 {clip(code)} has a wrong check character",
            code="invalid_credit_code",
            field=field,
        )
    return code


def level_of(region_code: str) -> Level:
    """The level of a six-digit division: ``xx0000`` a province, ``xxxx00`` a city, else a county."""
    if region_code.endswith("0000"):
        return "province"
    if region_code.endswith("00"):
        return "city"
    return "county"


def metric_region(region_code: str) -> str:
    """The region as a metric label: the city prefix (four digits), so labels stay bounded."""
    return region_code[:4]


@dataclass(frozen=True)
class Department:
    name: str
    region: str  # six-digit division code of its jurisdiction
    level: Level
    parent: str  # the department one level up; "" means the province's dispatch desk


@dataclass(frozen=True)
class Rule:
    region_prefix: str
    domain: str
    department: str


@dataclass(frozen=True)
class DispatchRules:
    node_id: str
    province: str
    desk: Department
    departments: dict[str, Department]
    rules: tuple[Rule, ...]

    def route(self, region_code: str, domain: str) -> Department:
        """The department of the rule whose region prefix matches longest; the dispatch desk
        when none does, so an unroutable clue is still someone's work."""
        best: Rule | None = None
        for rule in self.rules:
            matches = rule.domain == domain and region_code.startswith(rule.region_prefix)
            if matches and (best is None or len(rule.region_prefix) > len(best.region_prefix)):
                best = rule
        return self.desk if best is None else self.departments[best.department]

    def department(self, name: str) -> Department | None:
        if name == self.desk.name:
            return self.desk
        return self.departments.get(name)

    def above(self, name: str) -> Department | None:
        """The department one level up the jurisdiction hierarchy; None at the dispatch desk."""
        if name == self.desk.name:
            return None
        dept = self.departments.get(name)
        if dept is None or not dept.parent:
            return self.desk
        return self.departments[dept.parent]

    def names(self) -> frozenset[str]:
        return frozenset((self.desk.name, *self.departments))


def _line_finder(text: str, header: str) -> list[int]:
    """Line numbers (1-based) of each ``[[header]]`` table, in order."""
    pattern = re.compile(rf"^\s*\[\[\s*{re.escape(header)}\s*\]\]")
    return [i + 1 for i, line in enumerate(text.splitlines()) if pattern.match(line)]


def parse_dispatch_rules(data: bytes, source: str) -> DispatchRules:
    doc = parse_toml(data, source, "dispatch_rules")
    lines = {kind: _line_finder(data.decode("utf-8"), kind) for kind in ("departments", "rules")}

    def where(kind: str, i: int) -> str:
        found = lines[kind]
        return f"{source}:{found[i]}" if i < len(found) else source

    def fail(message: str, field: str, at: str = source) -> ConfigError:
        return ConfigError(f"{at}: {message}", code="invalid_dispatch_rules", field=field)

    try:
        top = TomlTable(doc, "")
        node_id = check_node_id(top.take("node_id", str, required=True), "node_id")
        province = top.take("province", str, required=True)
        if not is_valid_code(province) or level_of(province) != "province":
            raise fail(f"{clip(province)} is not a province's GB/T 2260 code", "province")
        desk = Department(top.take("dispatch_desk", str, required=True).strip(), province, "province", "")
        if not desk.name:
            raise fail("must not be empty", "dispatch_desk")
        departments: dict[str, Department] = {}
        for i, t in enumerate(top.tables("departments", required=True)):
            at = where("departments", i)
            name = t.take("name", str, required=True).strip()
            region = t.take("region", str, required=True)
            parent = t.take("parent", str, "").strip()
            t.finish()
            if not name or name == desk.name or name in departments:
                raise fail(f"department name {clip(name)!r} is empty or repeated", t.path("name"), at)
            if not is_valid_code(region) or not region.startswith(province[:2]):
                raise fail(f"{clip(region)} is not a division code in {province}", t.path("region"), at)
            departments[name] = Department(name, region, level_of(region), parent)
        _check_parents(departments, fail, lambda i: where("departments", i))
        rules: list[Rule] = []
        seen: set[tuple[str, str]] = set()
        for i, t in enumerate(top.tables("rules", required=True)):
            at = where("rules", i)
            prefix = t.take("region", str, required=True)
            domain = t.take("domain", str, required=True)
            department = t.take("department", str, required=True).strip()
            t.finish()
            if not _REGION_PREFIX.fullmatch(prefix) or not prefix.startswith(province[:2]):
                raise fail(
                    f"{clip(prefix)} is not a 2-, 4- or 6-digit prefix in {province}", t.path("region"), at
                )
            if not is_valid_code(prefix.ljust(6, "0")):
                raise fail(f"{clip(prefix)} names no GB/T 2260 division", t.path("region"), at)
            if domain not in DOMAINS:
                raise fail(f"unknown domain {clip(domain)!r} ({', '.join(DOMAINS)})", t.path("domain"), at)
            if department != desk.name and department not in departments:
                raise fail(f"no department named {clip(department)!r}", t.path("department"), at)
            if (prefix, domain) in seen:
                raise fail(f"a second rule for ({prefix}, {domain})", t.path("region"), at)
            seen.add((prefix, domain))
            rules.append(Rule(prefix, domain, department))
        top.finish()
    except ConfigError as e:
        if e.reason.startswith(source):
            raise
        raise fail(e.reason, e.field or "dispatch_rules") from e
    return DispatchRules(node_id, province, desk, departments, tuple(rules))


def _check_parents(
    departments: dict[str, Department],
    fail: Callable[[str, str, str], ConfigError],
    where: Callable[[int], str],
) -> None:
    """Each ``parent`` names a department a level up whose region contains the child's."""
    for i, (name, dept) in enumerate(departments.items()):
        if not dept.parent:
            continue
        up = departments.get(dept.parent)
        field = f"departments[{i}].parent"
        if up is None:
            raise fail(f"no department named {clip(dept.parent)!r}", field, where(i))
        if LEVEL_RANK[up.level] <= LEVEL_RANK[dept.level] or not dept.region.startswith(
            up.region[: _PREFIX_DIGITS[up.level]]
        ):
            raise fail(
                f"{clip(dept.parent)!r} is not a level above {clip(name)!r} over its region",
                field,
                where(i),
            )
