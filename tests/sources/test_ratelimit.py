from __future__ import annotations

import threading

import pytest

from app.sources.ratelimit import RateLimiter, process_limiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def test_acquire_allows_calls_up_to_the_limit_without_waiting():
    clock = FakeClock()
    limiter = RateLimiter(3, 60.0, margin=0.0, clock=clock, sleep=clock.sleep)
    assert [limiter.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert clock.now == 0.0


def test_acquire_waits_until_the_oldest_call_leaves_the_window():
    clock = FakeClock()
    limiter = RateLimiter(2, 60.0, margin=0.5, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    clock.now = 10.0
    limiter.acquire()
    waited = limiter.acquire()
    assert waited == pytest.approx(50.5)
    assert clock.now == pytest.approx(60.5)


def test_acquire_never_exceeds_the_limit_in_any_window():
    clock = FakeClock()
    limiter = RateLimiter(5, 60.0, margin=0.0, clock=clock, sleep=clock.sleep)
    stamps = []
    for i in range(40):
        limiter.acquire()
        stamps.append(clock.now)
        clock.now += 1.7 * (i % 3)
    for t in stamps:
        assert sum(1 for s in stamps if t <= s < t + 60.0) <= 5


def test_acquire_is_thread_safe():
    clock = FakeClock()
    limiter = RateLimiter(10, 60.0, margin=0.0, clock=clock, sleep=clock.sleep)
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        for _ in range(5):
            limiter.try_acquire()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert limiter.in_window() == 10


def test_rate_limiter_rejects_bad_arguments():
    with pytest.raises(ValueError, match="calls must be >= 1"):
        RateLimiter(0)


def test_process_limiter_is_shared_per_limit():
    assert process_limiter(37) is process_limiter(37)
    assert process_limiter(37) is not process_limiter(38)
