"""Retries and a circuit breaker, so a slow or dead endpoint costs a turn little and fails clearly.

Retries: on 429, 5xx, timeouts and connection errors, up to AOS_INFERENCE_MAX_ATTEMPTS attempts,
waiting ``base * 2**(n-1)`` seconds (capped) with equal jitter between them — or at least what the
endpoint's ``Retry-After`` header asks (seconds or an HTTP date). An endpoint that asks for more
than MAX_RETRY_AFTER_SECONDS is not waited for: the call fails with InferenceUnavailableError.

Circuit breaker: closed → open after AOS_INFERENCE_BREAKER_FAILURES consecutive failed attempts
(5xx, timeouts, connection errors; a 429 or 4xx shows the endpoint alive) → half-open once
AOS_INFERENCE_BREAKER_COOLDOWN_SECONDS have passed, when one trial call goes through: success
closes the circuit, failure opens it for another cool-down. While open, and while the trial is
in flight, calls fail at once with InferenceUnavailableError without touching the network.

Sleep, clocks and randomness are injectable, so tests assert waits without waiting.
"""

from __future__ import annotations

import logging
import random as _random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import TypeVar

from aos.inference.errors import (
    InferenceError,
    InferenceTimeoutError,
    InferenceUnavailableError,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

BASE_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 8.0
MAX_RETRY_AFTER_SECONDS = 60.0


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent or
    unreadable. A date in the past means 0."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and seconds == seconds else None  # reject negatives, NaN
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class TransientFailure(Exception):
    """One attempt failed in a way worth retrying (raised by an attempt, handled here)."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        counts_as_failure: bool = True,
        timeout: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.counts_as_failure = counts_as_failure
        self.timeout = timeout


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Consecutive-failure circuit breaker with one trial call after a cool-down."""

    def __init__(
        self,
        failure_threshold: int,
        cooldown_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        name: str = "inference endpoint",
    ) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_seconds = cooldown_seconds
        self.name = name
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.cooldown_seconds:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def acquire(self) -> None:
        """Before an attempt: raise InferenceUnavailableError if the circuit does not allow it."""
        state = self.state
        if state is BreakerState.CLOSED:
            return
        if state is BreakerState.HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            logger.info("inference: circuit half-open; letting one trial call through")
            return
        assert self._opened_at is not None
        wait = max(0.0, self.cooldown_seconds - (self._clock() - self._opened_at))
        detail = (
            "a trial call is in flight"
            if state is BreakerState.HALF_OPEN
            else f"next trial in {wait:.1f}s"
        )
        raise InferenceUnavailableError(
            f"{self.name} is unavailable: the circuit is open after {self._failures} consecutive "
            f"failures ({detail}); deciding without the model"
        )

    def record_success(self) -> None:
        if self._opened_at is not None:
            logger.info("inference: circuit closed; the endpoint answered")
        self._failures = 0
        self._opened_at = None
        self._trial_in_flight = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._trial_in_flight or self._opened_at is not None:
            self._trial_in_flight = False
            self._opened_at = self._clock()
            logger.warning("inference: trial call failed; circuit open again")
        elif self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
            logger.warning(
                "inference: circuit open after %d consecutive failures; calls fail fast for %.0fs",
                self._failures,
                self.cooldown_seconds,
            )

    def release(self) -> None:
        """An attempt ended without a verdict (cancelled): let another trial through."""
        self._trial_in_flight = False


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    base_delay: float = BASE_DELAY_SECONDS
    max_delay: float = MAX_DELAY_SECONDS
    max_retry_after: float = MAX_RETRY_AFTER_SECONDS

    def delay(self, attempt: int, retry_after: float | None, rand: float) -> float:
        """Wait after failed attempt `attempt` (1-based): jittered backoff, at least Retry-After."""
        backoff = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        jittered = backoff * (0.5 + 0.5 * rand)
        return jittered if retry_after is None else max(retry_after, jittered)


async def call_with_retries(
    attempt: Callable[[int], Awaitable[T]],
    *,
    policy: RetryPolicy,
    breaker: CircuitBreaker,
    sleep: Callable[[float], Awaitable[object]],
    rand: Callable[[], float] = _random.random,
    target: str = "inference endpoint",
    on_attempt: Callable[[], None] | None = None,
) -> T:
    """Run `attempt(n)` until it returns, raises a non-transient error, or attempts run out."""
    last: TransientFailure | None = None
    for n in range(1, policy.max_attempts + 1):
        breaker.acquire()
        if on_attempt is not None:
            on_attempt()
        try:
            result = await attempt(n)
        except TransientFailure as failure:
            last = failure
            if failure.counts_as_failure:
                breaker.record_failure()
            else:
                breaker.record_success()  # 429: the endpoint is up, just busy
            if n == policy.max_attempts:
                break
            if breaker.state is BreakerState.OPEN:
                raise InferenceUnavailableError(
                    f"{target}: {failure.message}; the circuit is now open after "
                    f"{breaker.consecutive_failures} consecutive failures, so no retry"
                ) from None
            if failure.retry_after is not None and failure.retry_after > policy.max_retry_after:
                raise InferenceUnavailableError(
                    f"{target}: {failure.message}; it asks to retry after "
                    f"{failure.retry_after:.0f}s, longer than AOS waits "
                    f"({policy.max_retry_after:.0f}s)"
                ) from None
            delay = policy.delay(n, failure.retry_after, rand())
            logger.warning(
                "inference: attempt %d of %d to %s failed: %s; retrying in %.2fs",
                n,
                policy.max_attempts,
                target,
                failure.message,
                delay,
            )
            await sleep(delay)
        except InferenceError:
            breaker.record_success()  # it answered: a 4xx or a malformed body is not an outage
            raise
        except BaseException:
            breaker.release()
            raise
        else:
            breaker.record_success()
            return result
    assert last is not None
    error = InferenceTimeoutError if last.timeout else InferenceUnavailableError
    raise error(f"{target}: {last.message} (after {policy.max_attempts} attempt(s))") from None
