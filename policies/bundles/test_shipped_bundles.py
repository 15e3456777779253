"""The shipped bundles pass their own test cases and lint clean against the sample catalogues.

Kept beside the bundles so whoever edits a bundle finds its guard next to it; every case of
every ``*.tests.yaml`` is one pytest item, named after the case.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.cases import CaseResult, run_case_file
from policies.catalogue import read_catalogues, read_data_ids, sample_catalogue_paths
from policies.lint import lint_bundle
from policies.schema import load_bundle

HERE = Path(__file__).parent
BUNDLES = sorted(p for p in HERE.glob("*.yaml") if not p.name.endswith(".tests.yaml"))
CATALOGUE = read_catalogues(sample_catalogue_paths())
DATA = read_data_ids(sample_catalogue_paths())
MEMBERS = {"shanghai": ("31",), "jiangsu": ("32",), "zhejiang": ("33",), "anhui": ("34",)}


def _results() -> list[CaseResult]:
    return [r for path in sorted(HERE.glob("*.tests.yaml")) for r in run_case_file(path, CATALOGUE)]


RESULTS = _results()


def test_every_member_ships_a_bundle_with_tests() -> None:
    assert [p.stem for p in BUNDLES] == sorted(MEMBERS)
    assert all(p.with_name(p.stem + ".tests.yaml").is_file() for p in BUNDLES)


@pytest.mark.parametrize("result", RESULTS, ids=[f"{Path(r.file).stem}: {r.case.name}" for r in RESULTS])
def test_case(result: CaseResult) -> None:
    assert result.passed, str(result)


@pytest.mark.parametrize("path", BUNDLES, ids=[p.stem for p in BUNDLES])
def test_bundle_lints_clean(path: Path) -> None:
    bundle = load_bundle(path)
    assert bundle.node == path.stem
    assert [str(f) for f in lint_bundle(bundle, CATALOGUE, MEMBERS, DATA)] == []


@pytest.mark.parametrize("path", BUNDLES, ids=[p.stem for p in BUNDLES])
def test_every_rule_and_quota_is_exercised(path: Path) -> None:
    """A rule or quota that no case reaches is one nobody has seen work."""
    bundle = load_bundle(path)
    mine = [r.decision for r in RESULTS if Path(r.file).name == f"{path.stem}.tests.yaml"]
    reached = {d.deciding_rule for d in mine} | {i for d in mine for i in d.rule_ids}
    assert {r.id for r in bundle.rules} | {q.id for q in bundle.quotas} <= reached
