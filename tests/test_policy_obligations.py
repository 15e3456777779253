"""Obligations applied to a form: stripped keys are gone, masked values keep their shape."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from policies.model import Obligations
from policies.obligations import apply_obligations, mask_text, mask_value


def test_strip_removes_keys_and_mask_replaces_values() -> None:
    form: dict[str, object] = {
        "phone": "13812345678",
        "residence_address": "上海市黄浦区某路1号",
        "reason": "就医",
    }
    out = apply_obligations(
        form, Obligations(strip=frozenset({"residence_address"}), mask=frozenset({"phone"}))
    )
    assert out == {"phone": "138****5678", "reason": "就医"}
    assert form["phone"] == "13812345678"  # the caller's form is untouched


def test_fields_named_but_absent_are_ignored() -> None:
    assert apply_obligations({"a": 1}, Obligations(strip=frozenset({"b"}), mask=frozenset({"c"}))) == {"a": 1}


def test_mask_shapes() -> None:
    assert mask_text("13812345678") == "138****5678"
    assert mask_text("31010119900307123X") == "310***********123X"
    assert mask_text("张三") == "张*"
    assert mask_text("王小明") == "王*明"
    assert mask_text("a") == "*"
    assert mask_text("") == ""


def test_mask_value_keeps_containers_and_hides_scalars() -> None:
    value = {"name": "王小明", "members": ["张三", None], "age": 1234567890, "married": True}
    assert mask_value(value) == {
        "name": "王*明",
        "members": ["张*", None],
        "age": "123***7890",
        "married": "*",
    }


@given(st.text(min_size=2, max_size=40))
def test_masking_keeps_the_length_and_hides_the_middle(text: str) -> None:
    masked = mask_text(text)
    assert len(masked) == len(text)
    keep = (3, 4) if len(text) >= 8 else (1, 1 if len(text) > 2 else 0)
    assert masked[keep[0] : len(text) - keep[1]] == "*" * (len(text) - sum(keep))
