"""Alert delivery: retries on transient failures, counts terminal ones, keeps to its time budget."""

from __future__ import annotations

import requests

from app.alerts.webhook import post_alerts


class _FakeSession:
    def __init__(self, outcomes):
        self.outcomes = list(outcomes)
        self.calls = 0

    def post(self, url, json, timeout):
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else 200
        if isinstance(outcome, Exception):
            raise outcome
        return type("R", (), {"status_code": outcome})()


def test_post_alerts_retries_transient_failures_and_counts_terminal_ones():
    session = _FakeSession([requests.ConnectionError("http://x/secret"), 503, 200, 400])
    outcome = post_alerts("http://x/secret", [{"a": 1}, {"a": 2}], session=session, sleep=lambda s: None)
    assert (outcome.sent, outcome.failed) == (1, 1)
    assert session.calls == 4


def test_post_alerts_stays_within_its_time_budget():
    now = [0.0]

    def clock():
        return now[0]

    def sleep(seconds):
        now[0] += seconds

    class Slow(_FakeSession):
        def post(self, url, json, timeout):
            now[0] += timeout  # every call times out after using its whole timeout
            raise requests.Timeout()

    session = Slow([])
    outcome = post_alerts(
        "http://x",
        [{"a": i} for i in range(10)],
        session=session,
        budget_seconds=3.0,
        clock=clock,
        sleep=sleep,
    )
    assert outcome.failed == 10 and outcome.sent == 0
    assert now[0] <= 3.0 + 1e-9
    assert session.calls <= 3
