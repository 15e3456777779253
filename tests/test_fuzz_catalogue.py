"""Fuzzing the catalogue loader and entry verification (oracle in tests/fuzz/catalogue.py)."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import example, given
from hypothesis import strategies as st

from core.errors import ConfigError, InvalidInput
from core.toml import load_toml, parse_toml
from policies.catalogue import read_catalogues
from registry.catalogue import SAMPLES_DIR, load_catalogue_file, verify_entry
from registry.lookup import CatalogueIndex
from tests.fuzz import FUZZ, MODES
from tests.fuzz.catalogue import ENTRY, SEEDS, Keys, check_entry, check_file, fuzz_one, serves

DOCS = [tomllib.loads(seed.decode()) for seed in SEEDS]
TOML_VALUES = st.recursive(
    st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.sampled_from(["", " ", "x" * 300, "310000", "enum", "webhook", "a..b", "-a", "Ab"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@FUZZ
@given(st.binary(max_size=600))
@example(b"")
@example(bytes([0]) + b"a = '\xff'\n")  # not UTF-8
@example(bytes([0]) + b"node_id = 'x'\nservices = " + b"[" * 5000)  # deeper than tomllib recurses
@example(bytes([0]) + b"node_id = 'shanghai'\nservices = [{}]\n")
@example(bytes([len(SEEDS) * MODES + 1]) + b"\x00\x20\x41")  # a byte of the signed definition
def test_any_catalogue_bytes_give_clean_services_or_a_named_error(data: bytes) -> None:
    fuzz_one(data)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@FUZZ
@given(st.data(), st.sampled_from(range(len(SEEDS))), TOML_VALUES)
def test_sample_catalogues_with_one_value_replaced(data: st.DataObject, which: int, value: Any) -> None:
    """Structure-aware mutation: any value of a real catalogue replaced by any TOML value."""
    doc = copy.deepcopy(DOCS[which])
    path = data.draw(st.sampled_from(_paths(doc)[1:]))
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    check_file(tomli_w.dumps(doc).encode())


def test_every_sample_loads_and_the_seed_entry_verifies() -> None:
    for seed in SEEDS:
        check_file(seed)
    assert verify_entry(ENTRY, Keys(), serves, 0).service_id


@FUZZ
@given(
    st.sampled_from(["definition", "node_id", "key_id", "signature"]),
    st.binary(max_size=80) | st.text(max_size=20),
)
def test_a_relay_altering_any_field_of_an_entry_is_refused(field: str, value: bytes | str) -> None:
    entry = copy.deepcopy(ENTRY)
    kind = type(getattr(entry, field))
    new = value if isinstance(value, kind) else (value.encode() if kind is bytes else repr(value))
    if new == getattr(entry, field):
        return
    setattr(entry, field, new)
    with pytest.raises(InvalidInput) as err:
        verify_entry(entry, Keys(), serves, 0)
    assert err.value.code == "catalogue_entry_invalid"
    check_entry(entry.SerializeToString())


@FUZZ
@given(st.binary(max_size=400))
@example(b"a = " + b"[" * 5000)
@example(b"a = " + b"{b = " * 5000)
@example(b"a = '\xff'")
def test_every_toml_reader_gives_a_table_or_a_config_error_naming_its_field(data: bytes) -> None:
    """The node config, members.toml and policy-lint catalogues share core.toml's reading."""
    try:
        parse_toml(data, "fuzz.toml", "config")
    except ConfigError as e:
        assert e.field == "config", e


@pytest.mark.parametrize("text", [b"a = " + b"[" * 5000, b"node_id = '\xff'"], ids=["deep", "not-utf8"])
def test_node_config_and_lint_catalogues_refuse_bad_toml_by_field(tmp_path: Path, text: bytes) -> None:
    path = tmp_path / "x.toml"
    path.write_bytes(text)
    with pytest.raises(ConfigError) as err:
        load_toml(path, "config")
    assert err.value.field == "config"
    with pytest.raises(ConfigError) as err:
        read_catalogues([path])
    assert err.value.field == "catalogue"


INDEX = CatalogueIndex()
INDEX.replace_node("shanghai", load_catalogue_file(SAMPLES_DIR / "shanghai.toml")[1])


@FUZZ
@given(st.text(max_size=120) | st.none(), st.text(max_size=10) | st.none())
@example("ﷺ" * 60, None)  # NFKC makes each of these 18 characters
@example(None, "３３")  # full-width digits
def test_catalogue_search_answers_or_names_the_bad_parameter(q: str | None, owner: str | None) -> None:
    try:
        found = INDEX.search(q, owner)
    except InvalidInput as e:
        assert e.field in ("q", "owner"), e
        return
    assert all(d.owner.startswith((owner or "").rstrip("0")[:2]) for d in found)
