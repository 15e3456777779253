"""Integer form fields are bounded: a count of family members is neither -5 nor 2**63."""

from __future__ import annotations

import pytest
from yrd.catalogue.v1 import catalogue_pb2

from core.errors import InvalidInput
from registry.forms import MAX_INTEGER, MIN_INTEGER, validate_form

FIELDS = [catalogue_pb2.FormField(name="members", type=catalogue_pb2.FieldType.FIELD_TYPE_INTEGER)]


@pytest.mark.parametrize("value", [MIN_INTEGER, 3, MAX_INTEGER])
def test_counts_within_bounds_pass(value: int) -> None:
    assert validate_form(FIELDS, {"members": value}) == {"members": value}


@pytest.mark.parametrize("value", [-5, MAX_INTEGER + 1, 2**63])
def test_counts_out_of_bounds_name_the_field(value: int) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_form(FIELDS, {"members": value})
    assert info.value.field == "form.members"
