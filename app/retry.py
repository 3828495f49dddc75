"""One retry policy type for every retried call: the CoinGecko client, alert delivery, the warehouse.

A :class:`RetryPolicy` is data (attempts, backoff, jitter, time cap, which errors and statuses are
transient); :meth:`RetryPolicy.retrying` turns it into a tenacity ``Retrying`` that callers run
their attempt function with. Callers that need more (CoinGecko honours ``Retry-After``, alerts
share one deadline across a batch) pass their own ``wait``/``stop`` pieces, built on the policy.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

Sleep = Callable[[float], None]
Clock = Callable[[], float]


@dataclass(frozen=True)
class RetryPolicy:
    """Retry policy as data: what is retried, how long to wait, when to give up.

    The wait after failed attempt ``n`` (1-based) is ``min(backoff_max, backoff_initial * 2**(n-1))``
    plus a uniform random ``[0, jitter]`` seconds.

    Attributes:
        max_attempts: attempts per call, the first included.
        backoff_initial: first backoff in seconds; doubles each attempt.
        backoff_max: ceiling of one backoff in seconds (before jitter).
        jitter: uniform random seconds added to each backoff (0: none).
        max_total_seconds: give up rather than wait past this much time since the first attempt
            (None: no time cap, only ``max_attempts``).
        transient: exception types that are retried; any other exception is raised at once
            (none by default: each policy names what it retries).
        retry_statuses: HTTP statuses treated as transient (for HTTP callers).
    """

    max_attempts: int = 3
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    jitter: float = 0.0
    max_total_seconds: float | None = None
    transient: tuple[type[BaseException], ...] = ()
    retry_statuses: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.backoff_initial < 0 or self.backoff_max < 0 or self.jitter < 0:
            raise ValueError(
                "backoff_initial, backoff_max and jitter must be >= 0, got "
                f"{self.backoff_initial}, {self.backoff_max}, {self.jitter}"
            )
        if self.max_total_seconds is not None and self.max_total_seconds <= 0:
            raise ValueError(f"max_total_seconds must be > 0 or None, got {self.max_total_seconds}")

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        Args:
            attempt: the attempt that just failed, 1 for the first.
            rng: jitter source (a fresh one if None).

        Returns:
            The capped exponential backoff plus jitter.
        """
        base = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))
        return base + (rng or random.Random()).uniform(0, self.jitter)

    def is_transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` is one of the policy's transient errors."""
        return isinstance(exc, self.transient)

    def is_retry_status(self, status: int) -> bool:
        """Whether an HTTP ``status`` is one the policy retries."""
        return status in self.retry_statuses

    def retrying(
        self,
        *,
        sleep: Sleep = time.sleep,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        wait: Callable[[RetryCallState], float] | None = None,
        stop: Callable[[RetryCallState], bool] | None = None,
        before_sleep: Callable[[RetryCallState], None] | None = None,
    ) -> Retrying:
        """A tenacity ``Retrying`` that runs a call under this policy.

        Stops after ``max_attempts``, or when the next wait would end past ``max_total_seconds``
        since the ``Retrying`` was built; re-raises the last error (never ``RetryError``).

        Args:
            sleep: how to wait between attempts (tests pass a fake).
            clock: monotonic clock for the total-time cap (tests pass a fake).
            rng: jitter source.
            wait: replaces :meth:`backoff` as the wait (``state -> seconds``).
            stop: an extra stop condition, or-ed with the policy's.
            before_sleep: called before each wait (logging, counters).

        Returns:
            The ``Retrying``; call it with the attempt function and its arguments.
        """
        jitter_rng = rng or random.Random()
        start = clock()

        def policy_wait(state: RetryCallState) -> float:
            return self.backoff(state.attempt_number, jitter_rng)

        def past_time_cap(state: RetryCallState) -> bool:
            if self.max_total_seconds is None:
                return False
            return clock() - start + (state.upcoming_sleep or 0.0) > self.max_total_seconds

        out_of_attempts = stop_after_attempt(self.max_attempts)

        def stop_condition(state: RetryCallState) -> bool:
            return out_of_attempts(state) or past_time_cap(state) or (stop is not None and stop(state))

        kwargs: dict[str, Any] = {}
        if before_sleep is not None:
            kwargs["before_sleep"] = before_sleep
        return Retrying(
            retry=retry_if_exception_type(self.transient),
            stop=stop_condition,
            wait=wait or policy_wait,
            sleep=sleep,
            reraise=True,
            **kwargs,
        )
