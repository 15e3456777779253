"""Data sharing without a network (docs/sharing.md): the strict catalogue tables, holder
signatures, the searchable union, the consent check, the records file and the meter's day."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from core.clock import FakeClock
from core.db import Database
from core.errors import ConfigError, InvalidInput
from core.keys import NodeKey
from node.counter.contract import CounterLimits
from node.counter.sharing_contract import parse_decision, parse_query
from node.sharing.checks import Consent, check_consent_shape, consent_problem
from node.sharing.holder import meter_day
from node.sharing.records import read_records_file
from node.trust.secret import local_secret
from policies.engine import PolicyEngine
from policies.model import PolicyInput
from policies.obligations import apply_obligations
from policies.schema import parse_bundle
from registry.catalogue import SAMPLES_DIR
from registry.data_catalogue import (
    DataIndex,
    load_data_resources,
    parse_data_resources,
    sign_data_entry,
    verify_data_entry,
)

PERSON = "310101199003071230"
LIMITS = CounterLimits(max_body_bytes=1 << 20, max_attachments=5, max_attachment_bytes=1 << 19)
RESOURCE = """
[[data]]
id = "ah.housing-fund.account"
name = "公积金账户"
name_en = "Housing provident fund account"
holder = "340000"
department = "安徽省住房公积金管理中心"
subject_kind = "person"
update_frequency = "monthly"
sharing = "conditional"

[[data.fields]]
name = "account_status"
label = "账户状态"
type = "enum"
choices = ["正常", "封存"]

[[data.fields]]
name = "balance"
label = "余额"
type = "string"
personal = true
"""


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (('sharing = "conditional"', 'sharing = "sometimes"'), "data[0].sharing"),
        (('sharing = "conditional"', 'sharing = "not_shared"'), "data[0].legal_reason"),
        (('holder = "340000"', 'holder = "349999"'), "data[0].holder"),
        (('subject_kind = "person"', 'subject_kind = "pet"'), "data[0].subject_kind"),
        (('update_frequency = "monthly"', 'update_frequency = "monthly"\ncolour = "red"'), "data[0].colour"),
        (('update_frequency = "monthly"', ""), "data[0].update_frequency"),
        (('type = "string"', 'type = "money"'), "data[0].fields[1].type"),
        (('name = "balance"', 'name = "account_status"'), "data[0].fields[1].name"),
        (('choices = ["正常", "封存"]', ""), "data[0].fields[0].choices"),
        (('update_frequency = "monthly"', 'update_frequency = "monthly"\nversion = "1"'), "data[0].version"),
    ],
)
def test_a_wrong_table_names_its_key(change: tuple[str, str], field: str) -> None:
    text = RESOURCE.replace(*change)
    with pytest.raises(ConfigError) as caught:
        parse_data_resources(text.encode(), "anhui.toml")
    assert caught.value.field == field
    assert caught.value.reason.startswith("anhui.toml")


def test_the_sample_catalogues_hold_the_demo_resources() -> None:
    ids = {
        node: [r.resource_id for r in load_data_resources(SAMPLES_DIR / f"{node}.toml")]
        for node in ("shanghai", "jiangsu", "zhejiang", "anhui")
    }
    assert "sh.health-code" in ids["shanghai"]
    assert "js.nucleic-acid" in ids["jiangsu"]
    assert "zj.vaccination" in ids["zhejiang"]
    anhui = load_data_resources(SAMPLES_DIR / "anhui.toml")
    assert {r.sharing for r in anhui} >= {"conditional"}
    shanghai = load_data_resources(SAMPLES_DIR / "shanghai.toml")
    assert any(r.sharing == "not_shared" and r.legal_reason for r in shanghai)


class Keys:
    def __init__(self, key: NodeKey) -> None:
        self.key = key

    def verify_key(self, node_id: str, key_id: str, at_ms: int) -> bytes:
        assert key_id == self.key.key_id
        return self.key.public_key


def test_an_entry_verifies_only_unaltered_and_from_its_holder() -> None:
    key = NodeKey.from_seed(b"\x01" * 32)
    (res,) = parse_data_resources(RESOURCE.encode(), "anhui.toml")
    entry = sign_data_entry(res, "anhui", key)
    assert verify_data_entry(entry, Keys(key), lambda node, code: node == "anhui", 0) == res
    with pytest.raises(InvalidInput) as caught:
        verify_data_entry(entry, Keys(key), lambda node, code: False, 0)
    assert (caught.value.code, caught.value.field) == ("data_entry_invalid", "entry.resource.holder")
    entry.resource = entry.resource.replace("公积金".encode(), "公职金".encode())
    with pytest.raises(InvalidInput) as caught:
        verify_data_entry(entry, Keys(key), lambda node, code: True, 0)
    assert caught.value.field == "entry.signature"


def test_the_union_is_searched_by_text_holder_and_class() -> None:
    index = DataIndex()
    for node in ("shanghai", "jiangsu", "zhejiang", "anhui"):
        index.replace_node(node, load_data_resources(SAMPLES_DIR / f"{node}.toml"))
    assert [h.resource.resource_id for h in index.search("核酸")] == ["js.nucleic-acid"]
    assert {h.node_id for h in index.search(holder="34")} == {"anhui"}
    assert {h.resource.resource_id for h in index.search(sharing="not_shared")} == {"sh.medical-records"}
    assert index.get("zj.vaccination").node_id == "zhejiang"
    index.replace_node("zhejiang", [])
    assert index.search("vaccination") == []


def test_consent_covers_only_its_subject_resources_purpose_and_term() -> None:
    c = Consent("张三", PERSON, ("js.nucleic-acid",), "health-check", until_ms=1000)
    assert consent_problem(c, PERSON, "js.nucleic-acid", "health-check", 999) is None
    assert consent_problem(None, PERSON, "js.nucleic-acid", "health-check", 0)[0] == "consent_missing"  # type: ignore[index]
    cases = [
        (("320502198506123456", "js.nucleic-acid", "health-check", 0), "consent_subject"),
        ((PERSON, "zj.vaccination", "health-check", 0), "consent_scope"),
        ((PERSON, "js.nucleic-acid", "service-delivery", 0), "consent_purpose"),
        ((PERSON, "js.nucleic-acid", "health-check", 1000), "consent_expired"),
    ]
    for (subject, resource, purpose, now), code in cases:
        problem = consent_problem(c, subject, resource, purpose, now)
        assert problem is not None and problem[0] == code


def test_a_bad_record_is_named_and_nothing_is_read(tmp_path: Path) -> None:
    resources = {r.resource_id: r for r in parse_data_resources(RESOURCE.encode(), "anhui.toml")}
    good = {
        "resource": "ah.housing-fund.account",
        "subject": PERSON,
        "updated_at": "2026-11-01T00:00:00+08:00",
    }
    path = tmp_path / "records.json"
    records = [{**good, "fields": {"account_status": "正常"}}, {**good, "fields": {"account_status": "冻结"}}]
    path.write_text(json.dumps({"node_id": "anhui", "records": records}))
    with pytest.raises(ConfigError) as caught:
        read_records_file(path, "anhui", resources)
    assert caught.value.field == "records[1].fields.account_status"
    records[1] = {**good, "subject": PERSON[:-1] + "1", "fields": {}}
    path.write_text(json.dumps({"node_id": "anhui", "records": records}))
    with pytest.raises(ConfigError) as caught:
        read_records_file(path, "anhui", resources)
    assert caught.value.field == "records[1].subject"
    records[1] = {**good, "updated_at": "2026-11-01T00:00:00", "fields": {}}
    path.write_text(json.dumps({"node_id": "anhui", "records": records}))
    with pytest.raises(ConfigError) as caught:
        read_records_file(path, "anhui", resources)
    assert caught.value.field == "records[1].updated_at"
    with pytest.raises(ConfigError) as caught:
        read_records_file(path, "jiangsu", resources)
    assert caught.value.field == "node_id"


def test_a_call_counts_on_its_day_in_china_standard_time() -> None:
    # 2026-11-29 16:30 UTC is 2026-11-30 00:30 in Shanghai.
    assert meter_day(1_795_969_800_000) == "2026-11-30"
    assert meter_day(1_795_969_800_000 - 3_600_000) == "2026-11-29"


def test_the_contract_wants_times_with_their_offset() -> None:
    body = {
        "subject": {"kind": "person", "id": PERSON},
        "purpose": "health-check",
        "resources": [{"id": "js.nucleic-acid"}],
        "consent": {
            "given_by": "张三",
            "subject_id": PERSON,
            "resources": ["js.nucleic-acid"],
            "purpose": "health-check",
            "until": "2026-12-31T23:59:59",
        },
    }
    with pytest.raises(InvalidInput) as caught:
        parse_query(body, LIMITS)
    assert caught.value.field == "consent.until"
    body["consent"]["until"] = "2026-12-31T23:59:59+08:00"  # type: ignore[index]
    assert parse_query(body, LIMITS).consent.until_ms == 1_798_732_799_000  # type: ignore[union-attr]
    with pytest.raises(InvalidInput):
        parse_decision({"decision": "refuse", "fields": ["balance"]}, LIMITS)


@pytest.mark.parametrize(
    ("consent", "field"),
    [
        ({"given_by": ""}, "consent.given_by"),
        ({"subject_id": ""}, "consent.subject_id"),
        ({"purpose": "Health Check"}, "consent.purpose"),
        ({"resources": []}, "consent.resources"),
        ({"until_ms": 0}, "consent.until"),
    ],
)
def test_every_malformed_part_of_a_consent_is_invalid_consent_naming_the_part(
    consent: dict[str, object], field: str
) -> None:
    good: dict[str, object] = {
        "given_by": "张三",
        "subject_id": PERSON,
        "resources": ("js.nucleic-acid",),
        "purpose": "health-check",
        "until_ms": 1_798_732_799_000,
        "recorded_at_ms": 1_700_000_000_000,
    }
    with pytest.raises(InvalidInput) as caught:
        check_consent_shape(Consent(**{**good, **consent}))  # type: ignore[arg-type]
    assert (caught.value.code, caught.value.field) == ("invalid_consent", field)


DATA_BUNDLE = """\
node: anhui
revision: t
quotas:
  - id: per-resource
    per: service
    direction: inbound
    services: [ah.housing-fund.account]
    per_minute: 1
    burst: 1
rules:
  - id: data
    effect: allow
    when:
      direction: inbound
      kind: data
      service: {ids: [ah.housing-fund.account]}
    obligations:
      mask: balance
      strip: employer
  - id: applications
    effect: allow
    when:
      direction: inbound
"""


def test_a_data_rule_decides_only_data_and_its_quota_applies() -> None:
    engine = PolicyEngine(parse_bundle(DATA_BUNDLE.encode(), "anhui.yaml"), FakeClock())
    asked = PolicyInput(
        direction="inbound",
        peer_node="shanghai",
        peer_jurisdiction="31",
        service_id="ah.housing-fund.account",
        service_owner="340000",
        service_department="安徽省住房公积金管理中心",
        purpose="service-delivery",
        role="node",
        fields=frozenset({"balance", "employer"}),
        consent=True,
        at_ms=0,
        kind="data",
    )
    first = engine.decide(asked)
    assert (first.allowed, first.deciding_rule) == (True, "data")
    assert apply_obligations({"balance": "138520.00", "employer": "某公司"}, first.obligations) == {
        "balance": "138**0.00"
    }
    assert engine.decide(asked).code == "quota"
    as_application = engine.decide(dataclasses.replace(asked, kind="application", service_id="x.y"))
    assert as_application.deciding_rule == "applications"


def test_the_subject_key_is_the_nodes_own_and_kept(tmp_path: Path) -> None:
    """Not derived from the signing key: a key rotation must not orphan every record."""
    one, two = Database(f"sqlite:///{tmp_path / 'one.db'}"), Database(f"sqlite:///{tmp_path / 'two.db'}")
    try:
        for db in (one, two):
            db.create_all()
        first = one.transact(local_secret)
        assert one.transact(local_secret) == first
        assert two.transact(local_secret) != first
        assert len(first) == 32
    finally:
        one.close()
        two.close()
