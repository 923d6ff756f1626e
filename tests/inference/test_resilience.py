"""Retries, Retry-After, the circuit breaker and timeouts (on the fake clock: no real waiting)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from aos.devhost.azurite import free_ports
from aos.inference import (
    BreakerState,
    ChatMessage,
    CircuitBreaker,
    InferenceTimeoutError,
    InferenceUnavailableError,
)
from aos.inference.resilience import RetryPolicy, parse_retry_after
from tests.inference.conftest import FakeTime, make_client
from tests.inference.fakeserver import FakeLorax, Reply

MESSAGES = [ChatMessage(role="user", content="hello")]


async def test_429_retry_after_seconds_is_honoured(lorax: FakeLorax, fake_time: FakeTime):
    lorax.reply(Reply(status=429, headers={"Retry-After": "2"}), Reply(text="done"))
    async with make_client(lorax.url, fake_time) as client:
        result = await client.generate(MESSAGES)
    assert result.text == "done"
    assert len(lorax.requests) == 2
    assert len(fake_time.sleeps) == 1 and fake_time.sleeps[0] >= 2
    assert result.usage.attempts == 2 and result.usage.calls == 1


async def test_429_retry_after_http_date_is_honoured(lorax: FakeLorax, fake_time: FakeTime):
    when = format_datetime(fake_time.wall + timedelta(seconds=5), usegmt=True)
    lorax.reply(Reply(status=429, headers={"Retry-After": when}), Reply(text="done"))
    async with make_client(lorax.url, fake_time) as client:
        await client.generate(MESSAGES)
    assert len(lorax.requests) == 2
    assert fake_time.sleeps[0] >= 5


async def test_429s_do_not_open_the_circuit(lorax: FakeLorax, fake_time: FakeTime):
    lorax.default = Reply(status=429, headers={"Retry-After": "1"})
    async with make_client(lorax.url, fake_time, breaker_failures="2") as client:
        for _ in range(2):
            with pytest.raises(InferenceUnavailableError, match="HTTP 429"):
                await client.generate(MESSAGES)
        assert client.breaker.state is BreakerState.CLOSED
    assert len(lorax.requests) == 6


async def test_5xx_retried_with_exponential_backoff_then_gives_up(
    lorax: FakeLorax, fake_time: FakeTime
):
    lorax.default = Reply(status=503, body={"error": "unhealthy", "error_type": "healthcheck"})
    async with make_client(lorax.url, fake_time, max_attempts="4") as client:
        with pytest.raises(InferenceUnavailableError) as caught:
            await client.generate(MESSAGES)
    assert "HTTP 503: unhealthy" in caught.value.message
    assert "after 4 attempt(s)" in caught.value.message
    assert caught.value.usage is not None and caught.value.usage.attempts == 4
    assert len(lorax.requests) == 4
    # rand() is 0: the low end of equal jitter, half of 0.5 * 2**n
    assert fake_time.sleeps == [0.25, 0.5, 1.0]


async def test_5xx_then_success(lorax: FakeLorax, fake_time: FakeTime):
    lorax.reply(Reply(status=500), Reply(status=502), Reply(text="fine"))
    async with make_client(lorax.url, fake_time) as client:
        result = await client.generate(MESSAGES)
        assert client.breaker.consecutive_failures == 0
    assert result.text == "fine" and result.usage.attempts == 3


async def test_retry_after_longer_than_aos_waits_fails_at_once(
    lorax: FakeLorax, fake_time: FakeTime
):
    lorax.reply(Reply(status=503, headers={"Retry-After": "3600"}))
    async with make_client(lorax.url, fake_time) as client:
        with pytest.raises(InferenceUnavailableError, match="retry after 3600s"):
            await client.generate(MESSAGES)
    assert len(lorax.requests) == 1 and fake_time.sleeps == []


async def test_circuit_opens_then_half_opens_and_closes(lorax: FakeLorax, fake_time: FakeTime):
    lorax.default = Reply(status=500)
    async with make_client(
        lorax.url,
        fake_time,
        max_attempts="1",
        breaker_failures="3",
        breaker_cooldown_seconds="30",
    ) as client:
        for _ in range(3):
            with pytest.raises(InferenceUnavailableError, match="HTTP 500"):
                await client.generate(MESSAGES)
        assert client.breaker.state is BreakerState.OPEN

        # Open: fails fast, without a request.
        with pytest.raises(InferenceUnavailableError, match="circuit is open") as caught:
            await client.generate(MESSAGES)
        assert "next trial in 30.0s" in caught.value.message
        assert len(lorax.requests) == 3

        # Half-open after the cool-down: one trial goes through; it fails, so open again.
        fake_time.advance(30)
        assert client.breaker.state is BreakerState.HALF_OPEN
        with pytest.raises(InferenceUnavailableError, match="HTTP 500"):
            await client.generate(MESSAGES)
        assert len(lorax.requests) == 4
        assert client.breaker.state is BreakerState.OPEN
        with pytest.raises(InferenceUnavailableError, match="circuit is open"):
            await client.generate(MESSAGES)
        assert len(lorax.requests) == 4

        # Next cool-down: the trial succeeds and the circuit closes.
        fake_time.advance(30)
        lorax.default = Reply(text="back")
        assert (await client.generate(MESSAGES)).text == "back"
        assert client.breaker.state is BreakerState.CLOSED
        assert (await client.generate(MESSAGES)).text == "back"
    assert len(lorax.requests) == 6


async def test_circuit_opening_mid_call_stops_retrying(lorax: FakeLorax, fake_time: FakeTime):
    lorax.default = Reply(status=500)
    async with make_client(lorax.url, fake_time, max_attempts="5", breaker_failures="2") as client:
        with pytest.raises(InferenceUnavailableError, match="circuit is now open"):
            await client.generate(MESSAGES)
    assert len(lorax.requests) == 2 and len(fake_time.sleeps) == 1


async def test_dead_endpoint_fails_fast(fake_time: FakeTime):
    [port] = free_ports(1)  # nothing listens here
    async with make_client(
        f"http://127.0.0.1:{port}", fake_time, max_attempts="2", breaker_failures="2"
    ) as client:
        with pytest.raises(InferenceUnavailableError, match="connection failed") as caught:
            await client.generate(MESSAGES)
        assert caught.value.code == "inference_unavailable"
        assert client.breaker.state is BreakerState.OPEN
        with pytest.raises(InferenceUnavailableError, match="circuit is open") as caught:
            await client.generate(MESSAGES)
        assert caught.value.usage is not None and caught.value.usage.attempts == 0


async def test_timeout_raises_a_clear_error(lorax: FakeLorax, fake_time: FakeTime):
    lorax.default = Reply(text="late", delay=5)
    async with make_client(lorax.url, fake_time, timeout_seconds="0.2", max_attempts="2") as client:
        with pytest.raises(InferenceTimeoutError) as caught:
            await client.generate(MESSAGES)
        assert client.breaker.consecutive_failures == 2
    assert "no answer within 0.2s" in caught.value.message
    assert "after 2 attempt(s)" in caught.value.message
    assert caught.value.code == "inference_timeout"
    assert isinstance(caught.value, InferenceUnavailableError)
    assert len(lorax.requests) == 2


def test_parse_retry_after():
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7", now) == 7
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("Sun, 01 Mar 2026 12:00:09 GMT", now) == 9
    assert parse_retry_after("Sun, 01 Mar 2026 11:00:00 GMT", now) == 0  # past: retry now
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("", now) is None
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-3", now) is None


def test_backoff_grows_caps_and_respects_retry_after():
    policy = RetryPolicy(max_attempts=10, base_delay=0.5, max_delay=8)
    assert [policy.delay(n, None, 1.0) for n in range(1, 7)] == [0.5, 1, 2, 4, 8, 8]
    assert policy.delay(1, None, 0.0) == 0.25  # equal jitter: half to all of the backoff
    assert policy.delay(1, 3.0, 1.0) == 3.0
    assert policy.delay(5, 3.0, 1.0) == 8.0


def test_half_open_lets_one_trial_through_at_a_time():
    fake = FakeTime()
    breaker = CircuitBreaker(1, 10, clock=fake.clock)
    breaker.acquire()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    fake.advance(10)
    breaker.acquire()  # the trial
    with pytest.raises(InferenceUnavailableError, match="a trial call is in flight"):
        breaker.acquire()
    breaker.release()  # the trial was cancelled: another may try
    breaker.acquire()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    breaker.acquire()
