"""A client-side rate limiter shared by every CoinGecko call of the process.

The limiter is a sliding-window log: at most ``calls`` acquisitions in any ``period`` seconds.
A server that counts calls per fixed minute or per sliding minute never sees more than its
limit from us when our limit is at or below it, which is how the ingester avoids causing 429s.
A small ``margin`` widens our window to absorb the gap between our clock and the server's.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

Clock = Callable[[], float]
Sleep = Callable[[float], None]

_registry: dict[tuple[int, float], RateLimiter] = {}
_registry_lock = threading.Lock()


class RateLimiter:
    """Thread-safe sliding-window limiter with an injectable clock and sleep.

    Args:
        calls: most acquisitions allowed in any window.
        period: window length in seconds (60 for a per-minute limit).
        margin: extra seconds added to the window, to stay clear of the server's own clock.
        clock: monotonic time source in seconds (tests pass a fake).
        sleep: how to wait (tests pass a fake that advances the fake clock).
    """

    def __init__(
        self,
        calls: int,
        period: float = 60.0,
        *,
        margin: float = 0.25,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        if calls < 1:
            raise ValueError(f"calls must be >= 1, got {calls}")
        if period <= 0:
            raise ValueError(f"period must be > 0, got {period}")
        self.calls = calls
        self.period = period
        self.margin = margin
        self._clock = clock
        self._sleep = sleep
        self._stamps: deque[float] = deque()
        self._lock = threading.Lock()
        self.waited_seconds = 0.0
        """Total time callers spent waiting in :meth:`acquire`."""

    def _delay(self, now: float) -> float:
        """Seconds until one more call fits; 0 when it fits now. Caller holds the lock."""
        window = self.period + self.margin
        while self._stamps and self._stamps[0] <= now - window:
            self._stamps.popleft()
        if len(self._stamps) < self.calls:
            return 0.0
        return self._stamps[0] + window - now

    def acquire(self) -> float:
        """Block until a call is allowed, then record it.

        Returns:
            The seconds this call waited.
        """
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                delay = self._delay(now)
                if delay <= 0:
                    self._stamps.append(now)
                    self.waited_seconds += waited
                    return waited
            # Sleep outside the lock so other threads can compute their own delay.
            self._sleep(delay)
            waited += delay

    def try_acquire(self) -> bool:
        """Record a call if one is allowed right now, without waiting."""
        with self._lock:
            now = self._clock()
            if self._delay(now) > 0:
                return False
            self._stamps.append(now)
            return True

    def in_window(self) -> int:
        """Calls recorded in the current window."""
        with self._lock:
            self._delay(self._clock())
            return len(self._stamps)


def process_limiter(calls_per_minute: int) -> RateLimiter:
    """The limiter every client of this process shares for a given per-minute limit.

    A registry (not a module-level client) so that two clients built from the same settings,
    for example the ingester's and the ``--check`` ping, draw from one budget.
    """
    key = (calls_per_minute, 60.0)
    with _registry_lock:
        limiter = _registry.get(key)
        if limiter is None:
            limiter = RateLimiter(calls_per_minute, 60.0)
            _registry[key] = limiter
        return limiter
