"""Anomaly alerts to an optional webhook: best effort, bounded in time, never fatal.

Each newly flagged anomaly is POSTed as one JSON object. Retries are brief (a few attempts with a
short backoff) and the whole batch of alerts shares one time budget, so a dead endpoint can delay
a micro-batch by a few seconds at most. Failures are counted, not raised. The URL may embed a token,
so it is never logged and exception texts (which quote the URL) are reduced to their type name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests

from app.logs import log_event

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class AlertOutcome:
    """What happened to a batch of alerts.

    Attributes:
        sent: alerts the endpoint accepted (2xx).
        failed: alerts given up on (error status, exhausted retries or out of time budget).
    """

    sent: int = 0
    failed: int = 0


def post_alerts(
    url: str,
    payloads: Sequence[Mapping[str, Any]],
    *,
    session: requests.Session | None = None,
    budget_seconds: float = 3.0,
    max_attempts: int = 3,
    backoff_seconds: float = 0.2,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> AlertOutcome:
    """POST each payload as JSON to ``url``, retrying transient failures within a time budget.

    Args:
        url: the webhook (secret; never logged).
        payloads: one JSON-serialisable mapping per alert.
        session: HTTP session (tests pass a mocked one).
        budget_seconds: total time allowed for all alerts of the call.
        max_attempts: attempts per alert.
        backoff_seconds: first backoff, doubled after each failed attempt.
        clock: monotonic clock (injectable for tests).
        sleep: sleep function (injectable for tests).

    Returns:
        Counts of sent and failed alerts.
    """
    results = deliver_each(
        url,
        payloads,
        session=session,
        budget_seconds=budget_seconds,
        max_attempts=max_attempts,
        backoff_seconds=backoff_seconds,
        clock=clock,
        sleep=sleep,
    )
    return AlertOutcome(sent=sum(results), failed=len(results) - sum(results))


def deliver_each(
    url: str,
    payloads: Sequence[Mapping[str, Any]],
    *,
    session: requests.Session | None = None,
    budget_seconds: float = 3.0,
    max_attempts: int = 3,
    backoff_seconds: float = 0.2,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[bool]:
    """:func:`post_alerts`, saying per payload whether it was delivered (for the outbox)."""
    if not payloads:
        return []
    http = session or requests.Session()
    deadline = clock() + budget_seconds
    results = [
        _post_one(http, url, payload, deadline, max_attempts, backoff_seconds, clock, sleep)
        for payload in payloads
    ]
    failed = len(results) - sum(results)
    if failed:
        log_event(logger, "alerts.failed", level=logging.WARNING, failed=failed, sent=sum(results))
    return results


def _post_one(
    http: requests.Session,
    url: str,
    payload: Mapping[str, Any],
    deadline: float,
    max_attempts: int,
    backoff: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> bool:
    """One alert with retries; False when it could not be delivered before the deadline."""
    for attempt in range(1, max_attempts + 1):
        remaining = deadline - clock()
        if remaining <= 0:
            return False
        try:
            response = http.post(url, json=dict(payload), timeout=min(remaining, 2.0))
        except requests.RequestException as exc:
            reason = type(exc).__name__  # str(exc) would quote the URL
        else:
            if 200 <= response.status_code < 300:
                return True
            reason = f"http {response.status_code}"
            if response.status_code not in RETRY_STATUSES:
                log_event(logger, "alert.rejected", level=logging.WARNING, reason=reason)
                return False
        log_event(logger, "alert.retry", level=logging.DEBUG, attempt=attempt, reason=reason)
        wait = backoff * (2 ** (attempt - 1))
        if attempt < max_attempts and clock() + wait < deadline:
            sleep(wait)
    return False
