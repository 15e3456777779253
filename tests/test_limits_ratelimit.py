"""The per-caller limiter both doors use (core/ratelimit.py), on a FakeClock."""

from __future__ import annotations

import pytest

from core.clock import FakeClock
from core.errors import RateLimited
from core.ratelimit import ConcurrencyLimiter, RateLimiter


def refusal(limiter: RateLimiter, key: str) -> RateLimited:
    with pytest.raises(RateLimited) as err:
        limiter.check(key, "calls")
    return err.value


def test_a_burst_is_served_then_refused_with_a_retry_after_and_refills_with_time() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, rate=2.0, burst=3)
    for _ in range(3):
        limiter.check("jiangsu", "calls")
    e = refusal(limiter, "jiangsu")
    assert (e.code, e.extra["retry_after_s"]) == ("rate_limited", 1)
    clock.advance(0.5)  # one token back at 2 per second
    limiter.check("jiangsu", "calls")
    refusal(limiter, "jiangsu")
    clock.advance(3600)  # a long pause refills to the burst, never beyond it
    for _ in range(3):
        limiter.check("jiangsu", "calls")
    refusal(limiter, "jiangsu")


def test_one_caller_over_its_limit_leaves_the_others_served() -> None:
    limiter = RateLimiter(FakeClock(), rate=1.0, burst=2)
    for _ in range(2):
        limiter.check("flooder", "calls")
    refusal(limiter, "flooder")
    refusal(limiter, "flooder")  # refusals spend nothing of anyone else's
    limiter.check("anhui", "calls")
    limiter.check("anhui", "calls")


def test_retry_after_says_how_long_a_slow_rate_takes_to_refill() -> None:
    limiter = RateLimiter(FakeClock(), rate=0.1, burst=1)
    limiter.check("k", "requests")
    assert refusal(limiter, "k").extra["retry_after_s"] == 10


def test_the_key_count_is_bounded_and_a_forgotten_key_starts_full() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, rate=1.0, burst=1, max_keys=3)
    for i in range(10):
        limiter.check(f"k{i}", "calls")
    assert len(limiter._buckets) == 3
    limiter.check("k0", "calls")  # forgotten (the stalest), so served again: never worse than waiting
    refusal(limiter, "k9")  # recent keys are remembered


def test_calls_in_flight_are_capped_per_caller_and_released() -> None:
    limiter = ConcurrencyLimiter(2)
    with limiter.hold("jiangsu"), limiter.hold("jiangsu"):
        with pytest.raises(RateLimited) as err, limiter.hold("jiangsu"):
            pass
        assert err.value.code == "too_many_calls"
        with limiter.hold("anhui"):
            assert limiter.in_flight("anhui") == 1
    assert limiter.in_flight("jiangsu") == 0
    with pytest.raises(ValueError), limiter.hold("jiangsu"):
        raise ValueError("a failing call still releases its slot")
    assert limiter.in_flight("jiangsu") == 0
    assert limiter._in_flight == {}  # idle callers cost no memory


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        RateLimiter(FakeClock(), rate=0, burst=1)
    with pytest.raises(ValueError):
        ConcurrencyLimiter(0)
