"""Shared fixtures and the hypothesis profile. PostgreSQL tests get a fresh schema each
(search_path in the URL), so runs sharing the one test database never see each other's tables
or leftovers."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator

import psycopg
import pytest
from hypothesis import settings

PG_URL = os.environ.get("YRD_TEST_PG_URL", "")

# `make test` runs the suite in parallel workers (pytest-xdist). Each takes its own share of
# the ports nodes are laid out on (simulations/local_federation.py), and the nodes it starts as
# processes inherit it: a port one worker found free is never the one another is about to bind.
if worker := os.environ.get("PYTEST_XDIST_WORKER"):
    _count = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    _share = (32768 - 20000) // _count
    # A worker that replaces a crashed one is numbered past the count (gw2 of two): it wraps
    # round to a share in the range, which a live worker may hold too (a collision is then
    # possible, as without shares), rather than ports past it, in the kernel's ephemeral range.
    _low = 20000 + int(worker.removeprefix("gw")) % _count * _share
    os.environ["YRD_PORTS"] = f"{_low}-{_low + _share - 1}"

# No wall-clock limits in tests: these machines are shared and noisy, so hypothesis's default
# 200 ms deadline per example would fail correct code under load.
settings.register_profile("yrd", deadline=None)
settings.load_profile("yrd")


@pytest.fixture
def new_pg_schema() -> Iterator[Callable[[], str]]:
    """Make fresh schemas on demand (a database URL each); dropped after the test."""
    if not PG_URL:
        pytest.skip("YRD_TEST_PG_URL is not set")
    made: list[str] = []

    def new() -> str:
        name = f"yrd_t_{secrets.token_hex(4)}"
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        made.append(name)
        sep = "&" if "?" in PG_URL else "?"
        return f"{PG_URL}{sep}options=-csearch_path%3D{name}"

    yield new
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        for name in made:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
