"""Fuzzing the policy bundle loader (oracle in tests/fuzz/policy.py), alias bombs included."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from core.errors import ConfigError
from policies.schema import parse_bundle
from policies.yamlsrc import MAX_DEPTH
from tests.fuzz import FUZZ, MODES
from tests.fuzz.policy import KEY, SEEDS, SOURCE, check_bundle, check_signature, fuzz_one

BILLION_LAUGHS = """\
node: shanghai
revision: r1
description: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
rules: *i
"""

# One rule and one long list, each referenced thousands of times: a few hundred kilobytes of
# text that a walker of the composed tree would visit tens of millions of times.
QUADRATIC = (
    "node: shanghai\nrevision: r1\nrules:\n"
    "  - &r {id: r, effect: allow, when: {direction: outbound, fields: {any: &l ["
    + ", ".join(["f"] * 3000)
    + "]}}}\n"
    + "  - *r\n" * 3000
)

DOCS = [yaml.load(seed, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) for seed in SEEDS]
YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(st.binary(max_size=600))
@example(b"")
@example(bytes([0]) + b"\xff\xfe")  # not UTF-8
@example(bytes([0]) + b"[" * 2000)  # deep enough to exhaust PyYAML's recursive composer
@example(bytes([0]) + b"a: &x 1\nb: *x\n")
@example(bytes([0]) + b"\n\r%&")  # a lone \r ends a YAML line too: the oracle once miscounted
@example(bytes([0]) + b"(")  # a root that is no mapping: its error once named no field
@example(bytes([len(SEEDS) * MODES]) + b"\x00\x01\x5b" * 30)  # the signature's JSON damaged
def test_any_bytes_give_a_bundle_or_an_error_with_file_line_field(data: bytes) -> None:
    fuzz_one(data)


@pytest.mark.parametrize("text", [BILLION_LAUGHS, QUADRATIC], ids=["billion-laughs", "quadratic"])
def test_alias_bombs_are_refused_at_their_first_anchor(text: str) -> None:
    """Refused by the composer at the first anchor, before any alias could be expanded or walked."""
    first_anchor = next(i for i, line in enumerate(text.splitlines(), 1) if "&" in line)
    with pytest.raises(ConfigError) as err:
        parse_bundle(text.encode(), SOURCE)
    assert err.value.extra["line"] == first_anchor
    assert "anchors and aliases" in err.value.reason


def test_nesting_is_capped_below_the_recursion_limit() -> None:
    ok = "node: shanghai\nrevision: r\nrules: " + "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2)
    with pytest.raises(ConfigError) as err:
        parse_bundle(ok.encode(), SOURCE)
    assert "nested deeper" not in err.value.reason  # refused by the schema, not the cap
    deep = "rules: " + "[" * 100_000
    with pytest.raises(ConfigError) as err:
        parse_bundle(deep.encode(), SOURCE)
    assert "nested deeper" in err.value.reason


def test_the_shipped_bundles_parse_untouched() -> None:
    for seed in SEEDS:
        assert parse_bundle(seed, SOURCE).rules


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
@given(st.data(), st.sampled_from(range(len(SEEDS))), YAML_VALUES)
def test_shipped_bundles_with_one_subtree_replaced(data: st.DataObject, which: int, value: Any) -> None:
    """Structure-aware mutation: any node of a real bundle replaced by any YAML value."""
    doc = copy.deepcopy(DOCS[which])
    path = data.draw(st.sampled_from(_paths(doc)[1:]))
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    check_bundle(
        yaml.dump(doc, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), allow_unicode=True).encode()
    )


@FUZZ
@given(st.binary(max_size=300), st.binary(max_size=300))
@example(b"x", b'{"alg": ' + b"1" * 5000 + b"}")  # past Python's integer digit limit
@example(b"x", b"[" * 100_000)  # deeper than json's recursion
def test_any_signature_file_is_refused_with_a_code(data: bytes, sig: bytes) -> None:
    check_signature(data, sig)


def test_a_good_signature_passes_the_oracle() -> None:
    from policies.signing import sign_bundle_bytes

    check_signature(SEEDS[0], sign_bundle_bytes(SEEDS[0], KEY))
