"""Bundle definitions: the loader's own checks, the union checks of ``yrd catalogue lint``,
the time limit along the dependency graph, and the sample catalogue's bundles."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from core.errors import ConfigError, InvalidInput
from node.cases.admission import admit
from node.cases.deadlines import add_working_days, bundle_due_ms
from node.cases.handlers import credit_code, issue_results, uscc_check_char
from node.cli.main import main
from registry.bundles import component_problems, components, is_bundle, longest_path_days
from registry.catalogue import SAMPLES_DIR, load_catalogue_file
from simulations.sample_applications import application_body

CATALOGUES = sorted(SAMPLES_DIR.glob("*.toml"))  # the dispatch rules are in dispatch/

HEAD = """
node_id = "jiangsu"

[[services]]
id = "js.a"
name = "甲"
name_en = "A"
owner = "320500"
department = "苏州市市场监督管理局"
time_limit_days = 3
version = 1
handler = "auto"
[[services.form]]
name = "company_name"
label = "企业名称"
type = "string"
required = true
max_length = 100
[[services.materials]]
name = "申请书"
required = true
[[services.results]]
name = "credit_code"
label = "统一社会信用代码"
type = "string"
max_length = 18

[[services]]
id = "js.b"
name = "乙"
name_en = "B"
owner = "320000"
department = "国家税务总局江苏省税务局"
time_limit_days = 2
version = 1
handler = "auto"
[[services.form]]
name = "credit_code"
label = "统一社会信用代码"
type = "string"
required = true
max_length = 18
[[services.materials]]
name = "申请书"
required = true
"""

BUNDLE = """
[[services]]
id = "js.ab"
name = "甲乙一件事"
name_en = "A and B"
owner = "320500"
department = "苏州市市场监督管理局"
time_limit_days = {days}
version = 1
handler = "bundle"
[[services.form]]
name = "company_name"
label = "企业名称"
type = "string"
required = true
max_length = 100
[[services.materials]]
name = "申请书"
required = true
"""

GOOD_COMPONENTS = """
[[services.components]]
name = "a"
service = "js.a"
map = { company_name = "form.company_name" }
[[services.components]]
name = "b"
service = "js.b"
after = ["a"]
map = { credit_code = "a.credit_code" }
"""


def write(tmp_path: Path, components_toml: str, days: int = 5, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(HEAD + BUNDLE.format(days=days) + components_toml, encoding="utf-8")
    return path


def refused(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        load_catalogue_file(path)
    return err.value


def test_a_good_bundle_loads_with_its_parts_in_order(tmp_path: Path) -> None:
    _, defs = load_catalogue_file(write(tmp_path, GOOD_COMPONENTS))
    bundle = next(d for d in defs if is_bundle(d))
    assert [(c.name, list(c.after)) for c in components(bundle)] == [("a", []), ("b", ["a"])]
    assert longest_path_days(components(bundle), {"a": 3, "b": 2}) == {"a": 3, "b": 5}


def test_a_cycle_is_refused_naming_it(tmp_path: Path) -> None:
    cyclic = GOOD_COMPONENTS.replace('service = "js.a"\n', 'service = "js.a"\nafter = ["b"]\n')
    err = refused(write(tmp_path, cyclic))
    assert err.field == "services[2].components"
    assert "cycle" in err.reason
    assert "a -> b -> a" in err.reason or "b -> a -> b" in err.reason


def test_an_unknown_dependency_is_refused(tmp_path: Path) -> None:
    err = refused(write(tmp_path, GOOD_COMPONENTS.replace('after = ["a"]', 'after = ["x"]')))
    assert err.field == "services[2].components[1].after"


def test_a_mapping_from_a_part_that_is_not_waited_for_is_refused(tmp_path: Path) -> None:
    err = refused(write(tmp_path, GOOD_COMPONENTS.replace('after = ["a"]\n', "")))
    assert err.field == "services[2].components[1].map.credit_code"


def test_a_mapping_to_a_field_the_component_lacks_is_refused(tmp_path: Path) -> None:
    bad = GOOD_COMPONENTS.replace("map = { credit_code", 'map = { tax_number = "a.credit_code", credit_code')
    err = refused(write(tmp_path, bad))
    assert err.field == "services[2].components[1].map.tax_number"
    assert "no form field" in err.reason


def test_a_mapping_from_an_undeclared_result_is_refused(tmp_path: Path) -> None:
    err = refused(write(tmp_path, GOOD_COMPONENTS.replace('"a.credit_code"', '"a.licence_no"')))
    assert err.field == "services[2].components[1].map.credit_code"
    assert "declares no result" in err.reason


def test_a_promise_shorter_than_the_dependency_graph_is_refused(tmp_path: Path) -> None:
    err = refused(write(tmp_path, GOOD_COMPONENTS, days=4))
    assert err.field == "services[2].time_limit_days" and "need 5" in err.reason


def test_lint_checks_components_of_other_files_and_names_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The bundle names a component published by another node: the loader cannot check it.
    remote = GOOD_COMPONENTS.replace('service = "js.b"', 'service = "sh.b"')
    bundle_file = write(tmp_path, remote, name="jiangsu.toml")
    load_catalogue_file(bundle_file)
    assert main(["catalogue", "lint", str(bundle_file)]) == 1
    assert "no service 'sh.b' in the catalogue" in capsys.readouterr().out

    other = tmp_path / "shanghai.toml"
    other.write_text(
        HEAD.replace('node_id = "jiangsu"', 'node_id = "shanghai"')
        .replace('"js.a"', '"sh.a"')
        .replace('"js.b"', '"sh.b"')
        .replace('"320500"', '"310000"')
        .replace('"320000"', '"310000"'),
        encoding="utf-8",
    )
    assert main(["catalogue", "lint", str(bundle_file), str(other)]) == 0
    renamed = other.read_text(encoding="utf-8").replace(
        'name = "credit_code"\nlabel = "统一社会信用代码"\ntype = "string"\nrequired = true',
        'name = "tax_code"\nlabel = "纳税人识别号"\ntype = "string"\nrequired = true',
    )
    other.write_text(renamed, encoding="utf-8")
    assert main(["catalogue", "lint", str(bundle_file), str(other)]) == 1
    out = capsys.readouterr().out
    assert "components[1].map.credit_code: 'sh.b' has no form field 'credit_code'" in out


def test_the_samples_lint_clean_and_each_bundle_spans_departments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["catalogue", "lint"]) == 0
    union = {d.service_id: d for p in CATALOGUES for d in load_catalogue_file(p)[1]}
    bundles = [d for d in union.values() if is_bundle(d)]
    assert len(bundles) >= 5
    spanning = 0
    for b in bundles:
        parts = [union[c.service_id] for c in components(b)]
        assert len({p.department for p in parts}) >= 2, b.service_id
        owners = {p.owner for p in parts}
        if len({o[:2] for o in owners}) >= 2 or len(owners) >= 2:
            spanning += 1
        assert not list(component_problems(b, union.get))
    assert spanning >= 2


def test_every_sample_service_gets_an_admissible_application() -> None:
    for path in CATALOGUES:
        for defn in load_catalogue_file(path)[1]:
            for seed in range(3):
                body = application_body(defn, random.Random(seed))
                admit(
                    defn,
                    applicant_name=body["applicant"]["name"],
                    applicant_id_number=body["applicant"]["id_number"],
                    form=body["form"],
                    materials=[a["material"] for a in body["attachments"]],
                    consent=body["consent"],
                    purpose="service-delivery",
                )


def test_credit_codes_carry_both_check_characters() -> None:
    assert uscc_check_char("91350100M000100Y4") == "3"  # a published code, 91350100M000100Y43
    code = credit_code("320500", "0190a3b4c5d6e7f8a9b0c1d2")
    assert code[:8] == "91320500" and code[-1] == uscc_check_char(code[:17])
    assert code == credit_code("320500", "0190a3b4c5d6e7f8a9b0c1d2")  # a retried approval
    _, defs = load_catalogue_file(SAMPLES_DIR / "jiangsu.toml")
    licence = next(d for d in defs if d.service_id == "js.suzhou.business-licence")
    issued = issue_results(licence, "0190a3b4c5d6e7f8a9b0c1d2", 0, {"credit_code": "91320500MA1X2Y3Z4Q"})
    assert issued == {"credit_code": "91320500MA1X2Y3Z4Q"}


def test_the_promise_follows_the_longest_chain_of_working_days() -> None:
    start = 1_767_225_600_000  # 2026-01-01 08:00 CST, a holiday
    days = {"licence": 3, "seal": 4, "tax": 4, "hq_filing": 6}
    assert bundle_due_ms(start, days) == add_working_days(start, 6)
    assert bundle_due_ms(start, days) > add_working_days(start, 4)


async def test_lint_with_a_node_config_checks_against_the_peers_it_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.federation import Federation, allow_all_specs

    fed = await Federation(tmp_path, allow_all_specs(tmp_path)).start()
    try:
        config_dir = fed.configs["anhui"].data_dir
        await fed.stop_node("anhui")  # the lint opens the node's database as a stopped node's
    finally:
        await fed.close()
    config = next(p for p in (config_dir, config_dir.parent) if (p / "node.toml").exists()) / "node.toml"
    # The retirement bundle's first part is Shanghai's: only the synced union knows it.
    assert main(["catalogue", "lint", "--config", str(config)]) == 0
    assert "0 problems" in capsys.readouterr().out
    lonely = tmp_path / "anhui-alone.toml"
    lonely.write_text((SAMPLES_DIR / "anhui.toml").read_text(encoding="utf-8"), encoding="utf-8")
    assert main(["catalogue", "lint", str(lonely)]) == 1
    assert "no service 'sh.pension.transfer'" in capsys.readouterr().out


def test_a_signed_bundle_entry_is_verified_like_any_and_refused_when_cyclic() -> None:
    from core.keys import NodeKey
    from registry.catalogue import sign_entry, verify_entry

    key = NodeKey.from_seed(b"\x07" * 32)

    class Keys:
        def verify_key(self, node_id: str, key_id: str, at_ms: int) -> bytes:
            return key.public_key

    _, defs = load_catalogue_file(SAMPLES_DIR / "jiangsu.toml")
    bundle = next(d for d in defs if d.service_id == "js.business-startup")
    entry = sign_entry(bundle, "jiangsu", key)
    assert verify_entry(entry, Keys(), lambda node, code: True, 0) == bundle
    bundle.bundle.components[0].after.append("tax")  # licence <- tax <- licence
    with pytest.raises(InvalidInput) as err:
        verify_entry(sign_entry(bundle, "jiangsu", key), Keys(), lambda node, code: True, 0)
    assert (err.value.code, err.value.field) == ("catalogue_entry_invalid", "entry.definition.components")
