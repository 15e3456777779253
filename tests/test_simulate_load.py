"""The load's schedule: submissions at the rate, and at a multiple of it within a surge."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from simulations.simulate.load import Surge, parse_surge, slot_offsets


def per_second(offsets: list[float]) -> list[int]:
    counts = [0] * (int(max(offsets)) + 1)
    for t in offsets:
        counts[int(t)] += 1
    return counts


def test_slots_come_at_the_rate_and_at_its_multiple_within_the_surge() -> None:
    steady = list(slot_offsets(20.0, 3.0, None))
    assert len(steady) == 60 and steady == sorted(steady) and steady[-1] < 3.0
    surged = per_second(list(slot_offsets(20.0, 4.0, Surge(10.0, 1.0, 2.0))))
    assert surged[0] == surged[3] == 20
    assert 199 <= surged[1] <= 201 and 199 <= surged[2] <= 201


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("10@20", "FACTOR@START+SECONDS"),
        ("ten@1+2", "FACTOR@START+SECONDS"),
        ("1@1+2", "above 1"),
        ("nan@1+2", "above 1"),
        ("1000@1+2", "at most 100"),
        ("10@-1+2", "within the 60 s"),
        ("10@50+20", "within the 60 s"),
        ("10@1+0", "within the 60 s"),
        ("10@nan+2", "within the 60 s"),
    ],
)
def test_a_surge_that_cannot_be_run_is_refused_naming_the_option(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_surge(text, 60.0)
    assert e.value.field == "--surge" and problem in e.value.reason


def test_a_surge_is_read_as_factor_start_and_length() -> None:
    assert parse_surge("10@20+15", 60.0) == Surge(10.0, 20.0, 15.0)
