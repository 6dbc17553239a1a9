"""RateLimiter: request and token buckets per principal, driven by a fake clock."""

from __future__ import annotations

import pytest

from ferrousforge.api.ratelimit import RateLimiter
from ferrousforge.errors import ConfigError, RateLimited


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_burst_up_to_the_limit_then_429_with_retry_after(clock: FakeClock) -> None:
    limiter = RateLimiter(requests_per_minute=3, tokens_per_minute=None, clock=clock)
    for _ in range(3):
        limiter.admit("alice")
    with pytest.raises(RateLimited) as info:
        limiter.admit("alice")
    # 3/min refills one request every 20 s.
    assert info.value.retry_after == 20
    assert info.value.status == 429
    assert "rate limit of 3 requests/min exceeded for alice" in str(info.value)


def test_retry_after_is_rounded_up_and_at_least_one(clock: FakeClock) -> None:
    limiter = RateLimiter(requests_per_minute=7, tokens_per_minute=None, clock=clock)
    for _ in range(7):
        limiter.admit("a")
    with pytest.raises(RateLimited) as info:
        limiter.admit("a")
    assert info.value.retry_after == 9  # 60/7 = 8.57 s
    clock.advance(8.5)
    with pytest.raises(RateLimited) as info:
        limiter.admit("a")
    assert info.value.retry_after == 1


def test_refill_over_time(clock: FakeClock) -> None:
    limiter = RateLimiter(requests_per_minute=60, tokens_per_minute=None, clock=clock)
    for _ in range(60):
        limiter.admit("a")
    with pytest.raises(RateLimited) as info:
        limiter.admit("a")
    clock.advance(info.value.retry_after)
    limiter.admit("a")
    with pytest.raises(RateLimited):
        limiter.admit("a")
    clock.advance(10)
    for _ in range(10):
        limiter.admit("a")
    with pytest.raises(RateLimited):
        limiter.admit("a")


def test_retrying_exactly_after_retry_after_is_admitted(clock: FakeClock) -> None:
    limiter = RateLimiter(requests_per_minute=7, tokens_per_minute=None, clock=clock)
    for _ in range(7):
        limiter.admit("a")
    for _ in range(20):
        try:
            limiter.admit("a")
        except RateLimited as e:
            clock.advance(e.retry_after)
            limiter.admit("a")


def test_refill_is_capped_at_the_limit(clock: FakeClock) -> None:
    limiter = RateLimiter(requests_per_minute=2, tokens_per_minute=None, clock=clock)
    limiter.admit("a")
    clock.advance(3600)
    limiter.admit("a")
    limiter.admit("a")
    with pytest.raises(RateLimited):
        limiter.admit("a")


def test_token_budget_going_negative_blocks_until_refilled(clock: FakeClock) -> None:
    limiter = RateLimiter(requests_per_minute=None, tokens_per_minute=600, clock=clock)
    limiter.admit("a")
    limiter.charge("a", 900)  # 600 - 900 = -300; refills at 10 tokens/s
    with pytest.raises(RateLimited) as info:
        limiter.admit("a")
    assert info.value.retry_after == 31  # back to exactly 0 after 30 s; > 0 needs a moment more
    assert "token budget of 600 tokens/min exceeded for a" in str(info.value)
    clock.advance(30)
    with pytest.raises(RateLimited):
        limiter.admit("a")
    clock.advance(1)
    limiter.admit("a")


def test_token_budget_within_limit_admits(clock: FakeClock) -> None:
    limiter = RateLimiter(requests_per_minute=None, tokens_per_minute=600, clock=clock)
    limiter.admit("a")
    limiter.charge("a", 599)
    limiter.admit("a")


def test_token_block_does_not_take_a_request_token(clock: FakeClock) -> None:
    limiter = RateLimiter(requests_per_minute=1, tokens_per_minute=60, clock=clock)
    limiter.admit("a")
    limiter.charge("a", 120)  # -60 tokens: 61 s to recover
    clock.advance(60)  # the request bucket is full again, the token bucket still at 0
    with pytest.raises(RateLimited) as info:
        limiter.admit("a")
    assert "token budget" in str(info.value)
    clock.advance(1)
    limiter.admit("a")


def test_principals_are_independent(clock: FakeClock) -> None:
    limiter = RateLimiter(requests_per_minute=1, tokens_per_minute=100, clock=clock)
    limiter.admit("a")
    with pytest.raises(RateLimited):
        limiter.admit("a")
    limiter.admit("b")
    limiter.charge("c", 1000)
    with pytest.raises(RateLimited):
        limiter.admit("c")
    limiter.admit("d")


def test_unlimited_never_raises(clock: FakeClock) -> None:
    limiter = RateLimiter(requests_per_minute=None, tokens_per_minute=None, clock=clock)
    assert not limiter.enabled
    for _ in range(10_000):
        limiter.admit("a")
        limiter.charge("a", 1_000_000)
    assert len(limiter) == 0


def test_unlimited_tokens_ignores_charges(clock: FakeClock) -> None:
    limiter = RateLimiter(requests_per_minute=100, tokens_per_minute=None, clock=clock)
    limiter.admit("a")
    limiter.charge("a", 10**9)
    limiter.admit("a")


@pytest.mark.parametrize("limit", [0, -5])
def test_non_positive_limits_are_config_errors(limit: int) -> None:
    with pytest.raises(ConfigError, match="requests_per_minute"):
        RateLimiter(requests_per_minute=limit, tokens_per_minute=None)
    with pytest.raises(ConfigError, match="tokens_per_minute"):
        RateLimiter(requests_per_minute=None, tokens_per_minute=limit)


def test_idle_buckets_are_dropped_when_the_dict_grows(clock: FakeClock) -> None:
    limiter = RateLimiter(
        requests_per_minute=1, tokens_per_minute=None, clock=clock, max_principals=3
    )
    for pid in ("old1", "old2", "busy"):
        limiter.admit(pid)
    clock.advance(601)
    limiter.admit("busy")  # touched now: recently used, so kept
    limiter.admit("new1")
    assert len(limiter) == 2  # old1 and old2 were idle for more than 10 minutes
    limiter.admit("new2")
    assert len(limiter) == 3  # at the bound: nothing dropped
    limiter.admit("new3")
    assert len(limiter) == 4  # over the bound, but nobody is idle: nothing is forgotten
    with pytest.raises(RateLimited):
        limiter.admit("busy")


def test_a_cached_prompt_is_charged_in_full(clock: FakeClock) -> None:
    from ferrousforge.api.security import TokenCharge
    from ferrousforge.hooks import InferenceEvent
    from ferrousforge.schema import Stats

    limiter = RateLimiter(requests_per_minute=None, tokens_per_minute=600, clock=clock)
    limiter.admit("a")
    stats = Stats(prompt_eval_count=1, eval_count=10)
    stats.prompt_cached = 589  # 1 + 589 + 10 = 600: the whole budget
    TokenCharge(limiter).on_inference_end(InferenceEvent("m", "chat", client="a", stats=stats))
    with pytest.raises(RateLimited):
        limiter.admit("a")
