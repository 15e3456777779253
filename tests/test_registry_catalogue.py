"""Catalogue files, signed entries and what a relay cannot do to them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from google.protobuf.message import DecodeError
from nacl.signing import VerifyKey
from yrd.catalogue.v1 import catalogue_pb2

from core.errors import ConfigError, Conflict, InvalidInput, NotFound
from core.keys import NodeKey
from registry.catalogue import (
    SAMPLES_DIR,
    build_catalogue,
    catalogue_digest,
    load_catalogue_file,
    sign_entry,
    verify_entry,
)
from registry.divisions import is_valid_code

NOW_MS = 1_767_225_600_000
PREFIXES = {"shanghai": "31", "jiangsu": "32", "zhejiang": "33", "anhui": "34"}
KEYS = {node: NodeKey.from_seed(bytes([i + 1]) * 32) for i, node in enumerate(PREFIXES)}

EXPECTED = {
    "shanghai": {
        "sh.medical.cross-region-filing": ("异地就医登记备案", "上海市医疗保障局", "310000", "auto"),
        "sh.pension.transfer": ("养老保险关系转移接续", "上海市人力资源和社会保障局", "310000", "worklist"),
        "sh.housing-fund.transfer": (
            "住房公积金异地转移接续",
            "上海市住房公积金管理中心",
            "310000",
            "worklist",
        ),
        "sh.hukou.migration": ("户口迁移", "上海市公安局", "310000", "worklist"),
    },
    "jiangsu": {
        "js.driving-licence.replace": ("机动车驾驶证补换领", "江苏省公安厅", "320000", "auto"),
        "js.social-card.apply": ("社会保障卡申领", "江苏省人力资源和社会保障厅", "320000", "auto"),
        "js.suzhou.employment-registration": ("就业登记", "苏州市人力资源和社会保障局", "320500", "worklist"),
        "js.suzhou.sole-proprietor": ("个体工商户登记", "苏州市市场监督管理局", "320500", "worklist"),
    },
    "zhejiang": {
        "zj.industrial-licence": ("工业产品生产许可证", "浙江省市场监督管理局", "330000", "worklist"),
        "zj.medical.cross-region-filing": ("异地就医登记备案", "浙江省医疗保障局", "330000", "auto"),
        "zj.hangzhou.housing-fund.transfer": (
            "住房公积金异地转移接续",
            "杭州住房公积金管理中心",
            "330100",
            "worklist",
        ),
        "zj.hangzhou.hukou.migration": ("户口迁移", "杭州市公安局", "330100", "worklist"),
    },
    "anhui": {
        "ah.pension.transfer": ("养老保险关系转移接续", "安徽省人力资源和社会保障厅", "340000", "worklist"),
        "ah.driving-licence.replace": ("机动车驾驶证补换领", "安徽省公安厅", "340000", "auto"),
        "ah.hefei.social-card.apply": ("社会保障卡申领", "合肥市人力资源和社会保障局", "340100", "auto"),
        "ah.hefei.employment-registration": ("就业登记", "合肥市人力资源和社会保障局", "340100", "worklist"),
    },
}


class FakeKeys:
    """The one method of the manifest that verification needs."""

    def verify_key(self, node_id: str, key_id: str, at_ms: int) -> bytes:
        key = KEYS.get(node_id)
        if key is None or key.key_id != key_id:
            raise NotFound(f"no key {key_id} for {node_id}", code="unknown_key")
        return key.public_key


def serves(node_id: str, division: str) -> bool:
    return division.startswith(PREFIXES.get(node_id, "-"))


def sample(node: str) -> list[catalogue_pb2.ServiceDefinition]:
    node_id, definitions = load_catalogue_file(SAMPLES_DIR / f"{node}.toml")
    assert node_id == node
    return definitions


# --- the sample files --------------------------------------------------------------------------------


@pytest.mark.parametrize("node", list(EXPECTED))
def test_every_sample_loads_with_the_agreed_ids(node: str) -> None:
    definitions = sample(node)
    got = {d.service_id: (d.name, d.department, d.owner, d.handler) for d in definitions}
    assert EXPECTED[node].items() <= got.items()  # the agreed ids stay; issue 12 added more
    matters = [d for d in definitions if d.handler != "bundle"]
    assert len(matters) >= 15
    assert {d.owner[2:] == "0000" for d in matters} == {True, False}  # province and city owners
    for d in definitions:
        assert is_valid_code(d.owner) and d.owner.startswith(PREFIXES[node])
        assert d.name_en and d.version == 1 and 1 <= d.time_limit_days <= 30
        assert any(f.personal for f in d.form), d.service_id
        assert d.materials and any(m.required for m in d.materials)
        names = {f.name for f in d.form}
        assert not names & {"name", "applicant_name", "id_number", "applicant_id_number"}


def test_the_medical_filing_form_has_the_agreed_fields() -> None:
    (filing,) = [d for d in sample("shanghai") if d.service_id == "sh.medical.cross-region-filing"]
    fields = {f.name: f for f in filing.form}
    assert {"insured_region", "settle_city", "reason", "phone", "start_date"} <= set(fields)
    assert list(fields["reason"].choices) == ["异地长期居住", "常驻异地工作", "异地转诊", "临时外出就医"]
    assert fields["phone"].personal


# --- TOML errors name the key ---------------------------------------------------------------------

SERVICE = """
node_id = "shanghai"

[[services]]
id = "sh.test"
name = "测试事项"
name_en = "Test matter"
owner = "310000"
department = "上海市测试局"
time_limit_days = 5
version = 1
handler = "worklist"
materials = []

[[services.form]]
name = "phone"
label = "联系电话"
type = "phone"
personal = true

[[services.form]]
name = "kind"
label = "类型"
type = "enum"
choices = ["a", "b"]
"""


def load_text(tmp_path: Path, text: str) -> list[catalogue_pb2.ServiceDefinition]:
    path = tmp_path / "catalogue.toml"
    path.write_text(text, encoding="utf-8")
    return load_catalogue_file(path)[1]


def test_the_template_loads(tmp_path: Path) -> None:
    (defn,) = load_text(tmp_path, SERVICE)
    assert defn.form[1].type == catalogue_pb2.FieldType.FIELD_TYPE_ENUM


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('type = "enum"', 'type = "choice"', "services[0].form[1].type"),
        ('owner = "310000"', 'owner = "310100"', "services[0].owner"),
        ("time_limit_days = 5", "time_limit_days = true", "services[0].time_limit_days"),
        ("time_limit_days = 5", "time_limit_days = 0", "services[0].time_limit_days"),
        ("time_limit_days = 5", "time_limit_days = 99999999999", "services[0].time_limit_days"),
        ('handler = "worklist"', 'handler = "magic"', "services[0].handler"),
        ('name = "kind"', 'name = "phone"', "services[0].form[1].name"),
        ('choices = ["a", "b"]', "choices = []", "services[0].form[1].choices"),
        ('choices = ["a", "b"]', 'choices = ["a", "a"]', "services[0].form[1].choices"),
        ("personal = true", "personal = true\nsecret = 1", "services[0].form[0].secret"),
        ('id = "sh.test"', 'id = "SH test"', "services[0].id"),
        ('department = "上海市测试局"', "", "services[0].department"),
        ('node_id = "shanghai"', 'node_id = "Shang Hai"', "node_id"),
        ("materials = []", 'materials = [{ name = "x", required = 1 }]', "services[0].materials[0].required"),
        ("version = 1", "version = 1\n[oops", "catalogue_file"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, old: str, new: str, field: str) -> None:
    assert old in SERVICE
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, SERVICE.replace(old, new, 1))
    assert err.value.field == field


def test_a_service_id_may_appear_once(tmp_path: Path) -> None:
    twice = SERVICE + SERVICE[SERVICE.index("[[services]]") :]
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, twice)
    assert err.value.field == "services[1].id"


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_catalogue_file(tmp_path / "absent.toml")
    assert err.value.field == "catalogue_file"


# --- signing and verification -----------------------------------------------------------------------


def signed(node: str, index: int = 0) -> catalogue_pb2.SignedServiceEntry:
    return sign_entry(sample(node)[index], node, KEYS[node])


def test_sign_then_verify_gives_back_the_definition() -> None:
    for node in PREFIXES:
        for i, defn in enumerate(sample(node)):
            assert verify_entry(signed(node, i), FakeKeys(), serves, NOW_MS) == defn


def test_the_signature_covers_the_documented_bytes() -> None:
    entry = signed("jiangsu")
    message = b"yrd-catalogue-entry-v1\x00" + len(entry.definition).to_bytes(4, "big") + entry.definition
    VerifyKey(KEYS["jiangsu"].public_key).verify(message, entry.signature)
    assert entry.key_id == KEYS["jiangsu"].key_id


@pytest.mark.parametrize("flip", [0x01, 0x80])
def test_a_relay_altering_any_byte_is_refused(flip: int) -> None:
    carried = signed("zhejiang", 2).SerializeToString()
    for i in range(len(carried)):
        altered = carried[:i] + bytes([carried[i] ^ flip]) + carried[i + 1 :]
        try:
            entry = catalogue_pb2.SignedServiceEntry.FromString(altered)
        except DecodeError:
            continue
        with pytest.raises(InvalidInput) as err:
            verify_entry(entry, FakeKeys(), serves, NOW_MS)
        assert err.value.code == "catalogue_entry_invalid"


def test_a_relay_replacing_the_definition_is_refused() -> None:
    entry = signed("shanghai")
    defn = catalogue_pb2.ServiceDefinition.FromString(entry.definition)
    defn.time_limit_days = 60
    entry.definition = defn.SerializeToString()
    with pytest.raises(InvalidInput) as err:
        verify_entry(entry, FakeKeys(), serves, NOW_MS)
    assert err.value.field == "entry.signature"


def test_an_entry_for_a_jurisdiction_the_signer_does_not_serve_is_refused() -> None:
    shanghai_matter = sample("shanghai")[0]
    entry = sign_entry(shanghai_matter, "jiangsu", KEYS["jiangsu"])
    with pytest.raises(InvalidInput) as err:
        verify_entry(entry, FakeKeys(), serves, NOW_MS)
    assert (err.value.code, err.value.field) == ("catalogue_entry_invalid", "entry.definition.owner")


def test_an_entry_claiming_another_signer_is_refused() -> None:
    entry = signed("anhui")
    entry.node_id = "jiangsu"
    with pytest.raises(InvalidInput) as err:
        verify_entry(entry, FakeKeys(), serves, NOW_MS)
    assert err.value.field == "entry.key_id"


def test_a_well_signed_but_malformed_definition_is_refused() -> None:
    defn = sample("anhui")[0]
    defn.handler = "magic"
    with pytest.raises(InvalidInput) as err:
        verify_entry(sign_entry(defn, "anhui", KEYS["anhui"]), FakeKeys(), serves, NOW_MS)
    assert err.value.field == "entry.definition.handler"


# --- catalogues and digests -------------------------------------------------------------------------


def test_the_same_entries_in_any_order_give_the_same_digest() -> None:
    entries = [sign_entry(d, "zhejiang", KEYS["zhejiang"]) for d in sample("zhejiang")]
    entries += [sign_entry(d, "anhui", KEYS["anhui"]) for d in sample("anhui")]
    forward = build_catalogue("zhejiang", entries).SerializeToString()
    backward = build_catalogue("zhejiang", list(reversed(entries))).SerializeToString()
    assert forward == backward
    assert catalogue_digest(forward) == hashlib.sha256(forward).digest()
    changed = build_catalogue("zhejiang", entries[1:]).SerializeToString()
    assert catalogue_digest(changed) != catalogue_digest(forward)


def test_a_catalogue_holds_each_signer_service_once() -> None:
    entry = signed("anhui")
    with pytest.raises(Conflict):
        build_catalogue("anhui", [entry, entry])
