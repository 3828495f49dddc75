"""Anomaly alerts to an optional webhook: best effort, bounded in time, never fatal.

Each newly flagged anomaly is POSTed as one JSON object. Retries are brief (a few attempts with a
short backoff) and the whole batch of alerts shares one time budget, so a dead endpoint can delay
a micro-batch by a few seconds at most. Failures are counted, not raised. The URL may embed a token,
so it is never logged and exception texts (which quote the URL) are reduced to their type name.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from tenacity import RetryCallState

from app.logs import log_event
from app.retry import RetryPolicy

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class _RetryStatus(Exception):
    """An answer with a status the policy retries (raised only to drive the retry loop)."""


ALERT_RETRY = RetryPolicy(
    max_attempts=3,
    backoff_initial=0.2,
    backoff_max=float("inf"),  # no cap: few attempts, and the batch's time budget bounds the waits
    transient=(requests.RequestException, _RetryStatus),
    retry_statuses=RETRY_STATUSES,
)
"""Attempts and backoff per alert; the batch's time budget is separate (``budget_seconds``)."""


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
    max_attempts: int = ALERT_RETRY.max_attempts,
    backoff_seconds: float = ALERT_RETRY.backoff_initial,
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
    max_attempts: int = ALERT_RETRY.max_attempts,
    backoff_seconds: float = ALERT_RETRY.backoff_initial,
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
    policy = dataclasses.replace(ALERT_RETRY, max_attempts=max_attempts, backoff_initial=backoff)
    attempts = 0

    def attempt() -> bool:
        nonlocal attempts
        attempts += 1
        remaining = deadline - clock()
        if remaining <= 0:
            return False
        try:
            response = http.post(url, json=dict(payload), timeout=min(remaining, 2.0))
        except requests.RequestException as exc:
            reason = type(exc).__name__  # str(exc) would quote the URL
            log_event(logger, "alert.retry", level=logging.DEBUG, attempt=attempts, reason=reason)
            raise
        if 200 <= response.status_code < 300:
            return True
        reason = f"http {response.status_code}"
        if not policy.is_retry_status(response.status_code):
            log_event(logger, "alert.rejected", level=logging.WARNING, reason=reason)
            return False
        log_event(logger, "alert.retry", level=logging.DEBUG, attempt=attempts, reason=reason)
        raise _RetryStatus(reason)

    def wait_within_budget(state: RetryCallState) -> float:
        # A wait that would end past the deadline is skipped: the next attempt uses what is left.
        wait = policy.backoff(state.attempt_number)
        return wait if clock() + wait < deadline else 0.0

    try:
        return bool(policy.retrying(sleep=sleep, clock=clock, wait=wait_within_budget)(attempt))
    except policy.transient:
        return False
