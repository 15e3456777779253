"""The forms owners require: their JSON Schema and the checks a submitted form must pass.

The schema does the structural part (unknown fields, missing ones, types, lengths,
choices) because a clerk's browser and the owner see the same published schema; the
checks a schema cannot express (a resident ID's check digit, a real calendar date, a
division that exists) are done here afterwards. Every problem is an InvalidInput naming
``form.<field>`` so the counter can point at the box to fix.
"""

from __future__ import annotations

import datetime
import functools
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator, ValidationError
from yrd.catalogue.v1 import catalogue_pb2

from core.errors import InvalidInput
from registry.divisions import is_province_prefix, is_valid_code

FormField = catalogue_pb2.FormField
FieldType = catalogue_pb2.FieldType

# A field without its own max_length still gets this ceiling: every input is bounded.
MAX_TEXT_LENGTH = 2000
MAX_NAME_LENGTH = 50
# Integer fields (counts of family members, years of residence) get the same kind of ceiling:
# the catalogue gives no bounds, and an unbounded integer (2**63) breaks whatever stores it.
MIN_INTEGER = 0
MAX_INTEGER = 10_000

# [0-9] and not \d: Python's \d also matches non-ASCII digits, which no register accepts.
RESIDENT_ID_PATTERN = "^[0-9]{17}[0-9Xx]$"
PHONE_PATTERN = "^(?:1[3-9][0-9]{9}|0[0-9]{2,3}-?[0-9]{7,8})$"
DATE_PATTERN = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
DIVISION_PATTERN = "^[0-9]{6}$"

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK_CHARS = "10X98765432"
# Holders of residence permits for Hong Kong, Macao and Taiwan residents carry IDs with
# these prefixes (81, 82, 83); 83 is not a division in GB/T 2260.
_PERMIT_PREFIXES = frozenset({"81", "82", "83"})
_NAME_PUNCTUATION = frozenset(" ·•.-'")

_FORMAT_REASONS = {
    FieldType.FIELD_TYPE_DATE: "应为 YYYY-MM-DD 日期 / must be a date YYYY-MM-DD",
    FieldType.FIELD_TYPE_RESIDENT_ID: "应为18位居民身份证号码 / must be an 18-character resident ID",
    FieldType.FIELD_TYPE_PHONE: "应为手机或固定电话号码 / must be a mainland mobile or landline number",
    FieldType.FIELD_TYPE_DIVISION: "应为6位行政区划代码 / must be a six-digit division code",
}


def _invalid(field: str, reason: str) -> InvalidInput:
    return InvalidInput(reason, code="invalid_form_field", field=field)


def resident_id_check_char(first17: str) -> str:
    """The GB 11643 check character (ISO 7064 MOD 11-2) of the first 17 digits."""
    total = sum(int(digit) * weight for digit, weight in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK_CHARS[total % 11]


def resident_id_problem(value: str) -> str | None:
    """Why ``value`` is not a GB 11643 resident ID, or None when it is one."""
    if not re.fullmatch(RESIDENT_ID_PATTERN, value):
        return "应为17位数字加校验位 / must be 17 digits and a check character"
    prefix = value[:2]
    if not (is_province_prefix(prefix) or prefix in _PERMIT_PREFIXES):
        return "地址码不存在 / the region prefix is not a province"
    # A region code retired since issue stays valid on old cards, so only the province is checked.
    try:
        datetime.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return "出生日期无效 / the birth date is not a real date"
    if value[17].upper() != resident_id_check_char(value[:17]):
        return "校验位错误 / the check character is wrong"
    return None


def check_resident_id(value: str, field: str) -> str:
    """The ID with a lower-case ``x`` made upper-case, or InvalidInput naming ``field``."""
    problem = resident_id_problem(value)
    if problem is not None:
        raise _invalid(field, f"居民身份证号码{problem}")
    return value.upper()


def is_valid_phone(value: str) -> bool:
    return bool(re.fullmatch(PHONE_PATTERN, value))


def parse_date(value: str) -> datetime.date | None:
    """The date in strict ``YYYY-MM-DD`` form, None otherwise (fromisoformat alone allows more)."""
    if not re.fullmatch(DATE_PATTERN, value):
        return None
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        return None


def personal_fields(fields: Iterable[FormField]) -> set[str]:
    return {f.name for f in fields if f.personal}


def _property_schema(field: FormField) -> dict[str, Any]:
    prop: dict[str, Any] = {"title": field.label or field.name}
    kind = field.type
    if kind == FieldType.FIELD_TYPE_STRING:
        prop["type"] = "string"
        prop["maxLength"] = min(field.max_length or MAX_TEXT_LENGTH, MAX_TEXT_LENGTH)
        if field.required:
            prop["minLength"] = 1
    elif kind == FieldType.FIELD_TYPE_INTEGER:
        prop.update(type="integer", minimum=MIN_INTEGER, maximum=MAX_INTEGER)
    elif kind == FieldType.FIELD_TYPE_DATE:
        prop.update(type="string", format="date", pattern=DATE_PATTERN)
    elif kind == FieldType.FIELD_TYPE_RESIDENT_ID:
        prop.update(type="string", pattern=RESIDENT_ID_PATTERN)
    elif kind == FieldType.FIELD_TYPE_PHONE:
        prop.update(type="string", pattern=PHONE_PATTERN)
    elif kind == FieldType.FIELD_TYPE_DIVISION:
        prop.update(type="string", pattern=DIVISION_PATTERN)
    elif kind == FieldType.FIELD_TYPE_ENUM:
        prop.update(type="string", enum=list(field.choices))
    elif kind == FieldType.FIELD_TYPE_BOOLEAN:
        prop["type"] = "boolean"
    else:
        raise InvalidInput(
            f"字段类型未知 / field type {kind} is not known",
            code="invalid_form_definition",
            field=f"form.{field.name}.type",
        )
    if field.personal:
        prop["x-personal"] = True
    return prop


def form_json_schema(fields: Sequence[FormField]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the form; ``x-personal`` marks personal data."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {f.name: _property_schema(f) for f in fields},
        "required": [f.name for f in fields if f.required],
        "additionalProperties": False,
    }


@dataclass(frozen=True)
class _Validators:
    """One form schema twice: compiled to Python code (fastjsonschema), which says only
    whether a form conforms, in a tenth of the time; and jsonschema's validator, which lists
    every problem of a form the first refused, to name the field to fix."""

    conforms: Callable[[object], object]
    explains: Draft202012Validator


@functools.lru_cache(maxsize=256)
def _validators(serialized_fields: tuple[bytes, ...]) -> _Validators:
    """Building the schema costs more than checking a form against it; forms of one
    service arrive over and over, so the validators are kept per distinct field list."""
    schema = form_json_schema([FormField.FromString(b) for b in serialized_fields])
    # Formats are not asserted, as jsonschema does not assert them: each field's pattern and
    # _check_format hold the real rules.
    conforms = fastjsonschema.compile(schema, use_default=False, use_formats=False)
    return _Validators(conforms, Draft202012Validator(schema))


def _schema_problem(
    error: ValidationError, fields: Sequence[FormField], form: dict[Any, Any]
) -> tuple[int, str, str]:
    """(rank, field name, reason) of one schema error; the lowest rank is reported first."""
    position = {f.name: i for i, f in enumerate(fields)}
    if error.validator == "additionalProperties":
        unknown = sorted(str(k)[:64] for k in form if k not in position)[0]
        return -1, unknown, "未知字段 / unknown field"
    if error.validator == "required":
        missing = next(f.name for f in fields if f.required and f.name not in form)
        return position[missing], missing, "必填项缺失 / required field is missing"
    name = str(error.path[0])
    field = fields[position[name]]
    if error.validator == "type":
        reason = f"类型错误 / must be of type {error.validator_value}"
    elif error.validator == "maxLength":
        reason = f"超过最大长度 {error.validator_value} / longer than {error.validator_value} characters"
    elif error.validator == "minLength":
        reason = "不能为空 / must not be empty"
    elif error.validator in ("minimum", "maximum"):
        reason = f"应在 {MIN_INTEGER} 至 {MAX_INTEGER} 之间 / must be from {MIN_INTEGER} to {MAX_INTEGER}"
    elif error.validator == "enum":
        reason = "取值不在可选范围 / must be one of: " + ", ".join(field.choices)
    else:
        reason = _FORMAT_REASONS.get(field.type, "格式不正确 / bad format")
    return position[name], name, reason


def _check_format(field: FormField, value: Any) -> tuple[Any, str | None]:
    """The normalised value and the problem a schema cannot see, if any. The field types are
    read as the module's constants: through the enum's wrapper each costs a __getattr__,
    four per field of every form checked."""
    kind = field.type
    if kind == catalogue_pb2.FIELD_TYPE_INTEGER:
        return int(value), None
    if kind == catalogue_pb2.FIELD_TYPE_DATE and parse_date(value) is None:
        return value, "不是有效日期 / not a real calendar date"
    if kind == catalogue_pb2.FIELD_TYPE_RESIDENT_ID:
        problem = resident_id_problem(value)
        return value.upper(), None if problem is None else f"居民身份证号码{problem}"
    if kind == catalogue_pb2.FIELD_TYPE_DIVISION and not is_valid_code(value):
        return value, "行政区划代码不存在 / not a GB/T 2260 division code"
    return value, None


def validate_form(fields: Sequence[FormField], form: object) -> dict[str, Any]:
    """The normalised form (trimmed, blank optional fields dropped, in field order), or
    InvalidInput on the first problem: unknown fields first, then fields in form order."""
    if not isinstance(form, dict):
        raise _invalid("form", "表单应为对象 / the form must be a JSON object")
    by_name = {f.name: f for f in fields}
    cleaned: dict[Any, Any] = {}
    for key, raw in form.items():
        value = raw.strip() if isinstance(raw, str) else raw
        known = by_name.get(key) if isinstance(key, str) else None
        if value == "" and known is not None and not known.required:
            continue
        cleaned[key] = value
    validators = _validators(tuple(f.SerializeToString(deterministic=True) for f in fields))
    try:
        validators.conforms(cleaned)
        problems: list[tuple[int, str, str]] = []
    except fastjsonschema.JsonSchemaValueException:
        problems = [_schema_problem(e, fields, cleaned) for e in validators.explains.iter_errors(cleaned)]
    flawed = {name for _, name, _ in problems}
    result: dict[str, Any] = {}
    for rank, field in enumerate(fields):
        if field.name in cleaned and field.name not in flawed:
            result[field.name], problem = _check_format(field, cleaned[field.name])
            if problem is not None:
                problems.append((rank, field.name, problem))
    if problems:
        _, name, reason = min(problems)
        label = by_name[name].label or name if name in by_name else ""
        raise _invalid(f"form.{name}", f"{label}：{reason}" if label else reason)
    return result


def validate_applicant(name: object, id_number: object) -> tuple[str, str]:
    """The applicant's trimmed name and resident ID; they travel beside the form, not in it."""
    if not isinstance(name, str) or not (clean_name := unicodedata.normalize("NFC", name.strip())):
        raise _invalid("applicant.name", "姓名不能为空 / the name is required")
    if len(clean_name) > MAX_NAME_LENGTH:
        raise _invalid("applicant.name", f"姓名过长 / longer than {MAX_NAME_LENGTH} characters")
    if any(not (unicodedata.category(c)[0] in "LM" or c in _NAME_PUNCTUATION) for c in clean_name):
        raise _invalid("applicant.name", "姓名含有非法字符 / the name holds characters names do not")
    if not isinstance(id_number, str):
        raise _invalid("applicant.id_number", "居民身份证号码必填 / the resident ID is required")
    return clean_name, check_resident_id(id_number.strip(), "applicant.id_number")
