"""The union index: swaps per node, versions, and the lookups the counter uses."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator
from yrd.catalogue.v1 import catalogue_pb2

from core.errors import InvalidInput, NotFound
from registry.catalogue import SAMPLES_DIR, load_catalogue_file
from registry.lookup import CatalogueIndex

NODES = ("shanghai", "jiangsu", "zhejiang", "anhui")


def sample(node: str) -> list[catalogue_pb2.ServiceDefinition]:
    return load_catalogue_file(SAMPLES_DIR / f"{node}.toml")[1]


def full_index() -> CatalogueIndex:
    index = CatalogueIndex()
    for node in NODES:
        index.replace_node(node, sample(node))
    return index


# Each node publishes its own ids, so the union holds every sample entry once.
TOTAL = sum(len(sample(node)) for node in NODES)


def ids(found: list[catalogue_pb2.ServiceDefinition]) -> list[str]:
    return [d.service_id for d in found]


def bumped(defn: catalogue_pb2.ServiceDefinition, version: int, days: int) -> catalogue_pb2.ServiceDefinition:
    copy = catalogue_pb2.ServiceDefinition()
    copy.CopyFrom(defn)
    copy.version, copy.time_limit_days = version, days
    return copy


def test_get_by_id_and_unknown_ids() -> None:
    index = full_index()
    assert len(index) == TOTAL
    assert index.get("zj.hangzhou.hukou.migration").department == "杭州市公安局"
    with pytest.raises(NotFound) as err:
        index.get("sh.nothing")
    assert (err.value.code, err.value.field) == ("unknown_service", "service_id")


def test_search_by_chinese_name() -> None:
    assert ids(full_index().search("异地就医")) == [
        "ah.medical.cross-region-filing",
        "js.medical.cross-region-filing",
        "sh.medical.cross-region-filing",
        "zj.medical.cross-region-filing",
    ]
    assert ids(full_index().search("户口")) == ["sh.hukou.migration", "zj.hangzhou.hukou.migration"]


def test_search_by_english_name_ignores_case_and_width() -> None:
    index = full_index()
    expected = ["sh.housing-fund.transfer", "zj.hangzhou.housing-fund.transfer"]
    assert ids(index.search("transfer of HOUSING Provident")) == expected
    assert ids(index.search("ＴＲＡＮＳＦＥＲ ＯＦ ＨＯＵＳＩＮＧ ＰＲＯＶＩＤＥＮＴ")) == expected


def test_search_by_id_fragment() -> None:
    assert ids(full_index().search("hefei.h")) == ["ah.hefei.housing-fund.retirement-withdrawal"]
    hefei = ids(full_index().search("hefei"))
    assert {"ah.hefei.employment-registration", "ah.hefei.social-card.apply"} <= set(hefei)
    assert all(i.startswith("ah.hefei.") for i in hefei)


def test_search_by_owner_prefix() -> None:
    index = full_index()
    hangzhou = ids(index.search(owner="330100"))
    assert {"zj.hangzhou.housing-fund.transfer", "zj.hangzhou.hukou.migration"} <= set(hangzhou)
    assert all(i.startswith("zj.hangzhou.") for i in hangzhou)
    zhejiang = ids(index.search(owner="33"))
    assert len(zhejiang) == len(sample("zhejiang")) and all(i.startswith("zj.") for i in zhejiang)
    assert set(hangzhou) < set(zhejiang)
    assert ids(index.search(owner="330000")) == zhejiang  # a province's code covers its cities
    assert ids(index.search("就业登记", owner="32")) == ["js.suzhou.employment-registration"]
    assert ids(index.search("登记", owner="310115")) == ["sh.pudong.business-licence"]  # a district
    assert index.search(owner="35") == []


def test_results_and_all_are_in_id_order() -> None:
    index = full_index()
    everything = ids(index.all())
    assert everything == sorted(everything) and len(everything) == TOTAL
    assert ids(index.search(None, None)) == everything
    assert ids(index.search("  ")) == everything


@pytest.mark.parametrize(
    ("q", "owner", "field"), [("x" * 101, None, "q"), (None, "3a", "owner"), (None, "3301001", "owner")]
)
def test_bad_queries_name_the_parameter(q: str | None, owner: str | None, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        full_index().search(q, owner)
    assert err.value.field == field


def test_replacing_a_node_swaps_all_its_entries() -> None:
    index = full_index()
    index.replace_node("anhui", sample("anhui")[:1])
    assert [i for i in ids(index.all()) if i.startswith("ah.")] == ["ah.pension.transfer"]
    index.replace_node("anhui", [])
    assert index.search(owner="34") == []
    assert len(index) == TOTAL - len(sample("anhui"))


def test_a_newer_version_replaces_and_an_older_one_cannot_roll_back() -> None:
    index = full_index()
    filing = index.get("sh.medical.cross-region-filing")
    index.replace_node("shanghai", [bumped(filing, 2, 3), *sample("shanghai")[1:]])
    assert index.get(filing.service_id).time_limit_days == 3
    index.replace_node("shanghai", sample("shanghai"))  # a replayed version-1 catalogue
    assert index.get(filing.service_id).version == 2
    index.replace_node("shanghai", [bumped(filing, 3, 2), bumped(filing, 2, 9)])
    assert index.get(filing.service_id).time_limit_days == 2


def test_two_nodes_claiming_one_id_resolve_the_same_whatever_the_order() -> None:
    theirs = bumped(sample("jiangsu")[0], 1, 7)
    mine = bumped(sample("jiangsu")[0], 1, 9)
    first, second = CatalogueIndex(), CatalogueIndex()
    first.replace_node("jiangsu", [theirs])
    first.replace_node("anhui", [mine])
    second.replace_node("anhui", [mine])
    second.replace_node("jiangsu", [theirs])
    assert first.get(theirs.service_id) == second.get(theirs.service_id) == mine  # "anhui" < "jiangsu"
    second.replace_node("jiangsu", [bumped(theirs, 2, 7)])
    assert second.get(theirs.service_id).version == 2


def test_the_api_shape() -> None:
    index = full_index()
    api = index.to_api(index.get("js.suzhou.sole-proprietor"))
    assert {
        "id",
        "name",
        "name_en",
        "owner",
        "department",
        "time_limit_days",
        "form_schema",
        "materials",
    } <= set(api)
    assert api["owner"] == "320500" and api["owner_name"] == "江苏省苏州市"
    assert api["time_limit_days"] == 3
    Draft202012Validator.check_schema(api["form_schema"])
    assert api["form_schema"]["properties"]["business_address"]["x-personal"] is True
    assert {"name": "经营场所使用证明", "required": True} in api["materials"]
