"""The pieces of clue handling that need no federation: the GB 32100-2015 check character,
the dispatch rules loader (every error names file, line and key), routing by the longest
region prefix with the dispatch desk as the fallback, the escalation ladder, and the
contract's code lists kept equal to the registry's."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from core.errors import ConfigError, InvalidInput
from core.keys import NodeKey
from node.counter import clue_contract
from policies.signing import read_signed, sign_bundle
from registry.dispatch import (
    DOMAINS,
    SEVERITIES,
    SOURCES,
    check_credit_code,
    credit_code_check_character,
    level_of,
    parse_dispatch_rules,
)

SAMPLES = Path(__file__).resolve().parent.parent / "registry" / "samples"
HEAD = 'node_id = "jiangsu"\nprovince = "320000"\ndispatch_desk = "调度中心"\n'
DEPT = '\n[[departments]]\nname = "{name}"\nregion = "{region}"\n{extra}'
RULE = '\n[[rules]]\nregion = "{region}"\ndomain = "{domain}"\ndepartment = "{department}"\n'


def test_published_credit_codes_pass_and_a_changed_character_fails() -> None:
    # A widely cited example of a valid code, and a second code whose check character is right.
    for code in ("91350100M000100Y43", "91110108551385082Q"):
        assert check_credit_code(code, "c") == code
    with pytest.raises(InvalidInput) as e:
        check_credit_code("91350100M000100Y44", "subject.credit_code")
    assert (e.value.code, e.value.field) == ("invalid_credit_code", "subject.credit_code")
    for bad in ("91350100M000100Y4", "91350100I000100Y43", "91350100m000100y43", ""):
        with pytest.raises(InvalidInput):
            check_credit_code(bad, "c")


def test_every_single_character_change_is_caught() -> None:
    code = "91350100M000100Y43"
    alphabet = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    for i in range(17):
        for c in alphabet:
            if c != code[i]:
                changed = code[:i] + c + code[i + 1 :]
                assert credit_code_check_character(changed[:17]) != code[17]


def test_levels_follow_the_division_code() -> None:
    assert [level_of(c) for c in ("320000", "320500", "320582")] == ["province", "city", "county"]


def rules(*parts: str) -> bytes:
    return (HEAD + "".join(parts)).encode()


def test_routing_takes_the_longest_prefix_and_falls_back_to_the_desk() -> None:
    r = parse_dispatch_rules((SAMPLES / "dispatch" / "jiangsu.toml").read_bytes(), "jiangsu.dispatch.toml")
    assert r.route("320582", "food_drug").name == "张家港市市场监督管理局"
    assert r.route("320581", "food_drug").name == "苏州市市场监督管理局"
    assert r.route("320211", "food_drug").name == "江苏省市场监督管理局"
    assert r.route("320582", "finance").level == "province"
    ladder = ["张家港市市场监督管理局"]
    while (up := r.above(ladder[-1])) is not None:
        ladder.append(up.name)
    assert ladder == [
        "张家港市市场监督管理局",
        "苏州市市场监督管理局",
        "江苏省市场监督管理局",
        "江苏省一网统管指挥调度中心",
    ]
    sparse = parse_dispatch_rules(
        rules(
            DEPT.format(name="省局", region="320000", extra=""),
            RULE.format(region="32", domain="food_drug", department="省局"),
        ),
        "x",
    )
    assert sparse.route("320582", "finance") == sparse.desk


@pytest.mark.parametrize("node", ["jiangsu", "shanghai", "zhejiang", "anhui"])
def test_the_shipped_rules_load(node: str) -> None:
    r = parse_dispatch_rules((SAMPLES / "dispatch" / f"{node}.toml").read_bytes(), node)
    assert r.node_id == node and r.rules


@pytest.mark.parametrize(
    ("text", "where", "field"),
    [
        (
            rules(
                DEPT.format(name="省局", region="320000", extra=""),
                RULE.format(region="32", domain="weather", department="省局"),
            ),
            "x:9",
            "rules[0].domain",
        ),
        (
            rules(
                DEPT.format(name="省局", region="320000", extra=""),
                RULE.format(region="33", domain="finance", department="省局"),
            ),
            "x:9",
            "rules[0].region",
        ),
        (
            rules(
                DEPT.format(name="省局", region="320000", extra=""),
                RULE.format(region="3299", domain="finance", department="省局"),
            ),
            "x:9",
            "rules[0].region",
        ),
        (
            rules(
                DEPT.format(name="省局", region="320000", extra=""),
                RULE.format(region="32", domain="finance", department="无此局"),
            ),
            "x:9",
            "rules[0].department",
        ),
        (
            rules(
                DEPT.format(name="市局", region="320500", extra='parent = "县局"\n'),
                DEPT.format(name="县局", region="320582", extra=""),
            ),
            "x:5",
            "departments[0].parent",
        ),
        (
            rules(DEPT.format(name="省局", region="320000", extra='colour = "red"\n')),
            "x",
            "departments[0].colour",
        ),
        (rules(DEPT.format(name="局", region="330100", extra="")), "x:5", "departments[0].region"),
    ],
)
def test_a_bad_rule_file_names_file_line_and_key(text: bytes, where: str, field: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_dispatch_rules(text, "x")
    assert e.value.field == field
    assert e.value.reason.startswith(where + ":") or e.value.reason.startswith(where + " ")


def test_rules_are_read_only_when_signed_by_the_node(tmp_path: Path) -> None:
    key, other = NodeKey.generate(), NodeKey.generate()
    path = tmp_path / "dispatch.toml"
    path.write_bytes((SAMPLES / "dispatch" / "jiangsu.toml").read_bytes())
    with pytest.raises(ConfigError) as e:
        read_signed(path, key.public_key)
    assert e.value.code == "bundle_unsigned"
    sign_bundle(path, other)
    with pytest.raises(ConfigError) as e:
        read_signed(path, key.public_key)
    assert e.value.code == "bundle_wrong_key"
    sign_bundle(path, key)
    path.write_bytes(
        path.read_bytes().replace("张家港市市场监督管理局".encode(), "张家港市应急管理局".encode(), 1)
    )
    with pytest.raises(ConfigError) as e:
        read_signed(path, key.public_key)
    assert e.value.code == "bundle_bad_signature"


def test_the_contract_lists_the_registry_codes() -> None:
    assert typing.get_args(clue_contract.Domain) == tuple(DOMAINS)
    assert typing.get_args(clue_contract.ClueSource) == tuple(SOURCES)
    assert typing.get_args(clue_contract.Severity) == SEVERITIES
