"""The one retry policy type (app/retry.py): backoff, attempts, time cap, transient errors."""

from __future__ import annotations

import dataclasses
import random

import pytest

from app.errors import LoadTerminalError, LoadTransientError
from app.retry import RetryPolicy


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _failing(errors: list[BaseException], result: str = "ok"):
    calls = []

    def call() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result

    return call, calls


def test_backoff_doubles_up_to_its_cap_without_jitter():
    policy = RetryPolicy(backoff_initial=0.5, backoff_max=3.0)
    assert [policy.backoff(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_jitter_stays_within_its_bound():
    policy = RetryPolicy(backoff_initial=1.0, backoff_max=1.0, jitter=0.5)
    rng = random.Random(3)
    waits = [policy.backoff(4, rng) for _ in range(200)]
    assert all(1.0 <= w <= 1.5 for w in waits)
    assert max(waits) - min(waits) > 0.1  # jitter does spread the waits


def test_retrying_retries_transient_errors_then_returns():
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=4, backoff_initial=1.0, transient=(LoadTransientError,))
    call, calls = _failing([LoadTransientError("a"), LoadTransientError("b")])
    assert policy.retrying(sleep=clock.sleep, clock=clock)(call) == "ok"
    assert len(calls) == 3
    assert clock.sleeps == [1.0, 2.0]


def test_retrying_gives_up_after_max_attempts_with_the_last_error():
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=3, backoff_initial=0.1, transient=(LoadTransientError,))
    call, calls = _failing([LoadTransientError(str(i)) for i in range(5)])
    with pytest.raises(LoadTransientError, match="^2$"):
        policy.retrying(sleep=clock.sleep, clock=clock)(call)
    assert len(calls) == 3
    assert len(clock.sleeps) == 2


def test_retrying_raises_a_non_transient_error_at_once():
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=5, transient=(LoadTransientError,))
    call, calls = _failing([LoadTerminalError("no")])
    with pytest.raises(LoadTerminalError):
        policy.retrying(sleep=clock.sleep, clock=clock)(call)
    assert len(calls) == 1 and clock.sleeps == []


def test_retrying_stops_before_a_wait_that_would_pass_the_time_cap():
    clock = FakeClock()
    policy = RetryPolicy(
        max_attempts=10, backoff_initial=1.0, max_total_seconds=5.0, transient=(LoadTransientError,)
    )
    call, calls = _failing([LoadTransientError(str(i)) for i in range(10)])
    with pytest.raises(LoadTransientError):
        policy.retrying(sleep=clock.sleep, clock=clock)(call)
    assert clock.sleeps == [1.0, 2.0]  # a third wait (4 s) would end at 7 s > 5 s
    assert len(calls) == 3


def test_retrying_uses_a_callers_wait_and_extra_stop():
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=10, transient=(LoadTransientError,))
    call, calls = _failing([LoadTransientError(str(i)) for i in range(10)])
    retrying = policy.retrying(
        sleep=clock.sleep,
        clock=clock,
        wait=lambda state: 0.25,
        stop=lambda state: state.attempt_number >= 2,
    )
    with pytest.raises(LoadTransientError):
        retrying(call)
    assert clock.sleeps == [0.25] and len(calls) == 2


def test_a_policy_retries_nothing_it_does_not_name():
    clock = FakeClock()
    call, calls = _failing([LoadTransientError("x")])
    with pytest.raises(LoadTransientError):
        RetryPolicy(max_attempts=5).retrying(sleep=clock.sleep, clock=clock)(call)
    assert len(calls) == 1


def test_policy_classifies_errors_and_statuses():
    policy = RetryPolicy(transient=(LoadTransientError,), retry_statuses=frozenset({429, 503}))
    assert policy.is_transient(LoadTransientError("x"))
    assert not policy.is_transient(LoadTerminalError("x"))
    assert policy.is_retry_status(429) and not policy.is_retry_status(404)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"max_attempts": 0}, "max_attempts must be >= 1, got 0"),
        ({"jitter": -1.0}, "must be >= 0"),
        ({"max_total_seconds": 0.0}, "max_total_seconds must be > 0 or None, got 0.0"),
    ],
)
def test_policy_rejects_bad_values(changes, message):
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**changes)


def test_warehouse_connect_retries_mapped_transient_errors_under_its_policy():
    from app.sinks.warehouse.connector import CONNECT_RETRY, _with_retry

    attempts = []

    def connect():
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("reset by peer")  # mapped to LoadTransientError
        return "connection"

    policy = dataclasses.replace(CONNECT_RETRY, backoff_initial=0.0)
    assert _with_retry(connect, policy)() == "connection"
    assert len(attempts) == 3


def test_warehouse_connect_gives_up_after_the_policys_attempts():
    from app.sinks.warehouse.connector import CONNECT_RETRY, _with_retry

    attempts = []

    def down():
        attempts.append(1)
        raise ConnectionError("down")

    policy = dataclasses.replace(CONNECT_RETRY, backoff_initial=0.0)
    with pytest.raises(LoadTransientError, match="warehouse connect failed: ConnectionError: down"):
        _with_retry(down, policy)()
    assert len(attempts) == CONNECT_RETRY.max_attempts == 4
