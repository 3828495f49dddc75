"""The alert outbox: at least once across crashes, at most once per (key, metric, time)."""

from __future__ import annotations

from app.alerts.outbox import AlertOutbox, alert_key
from app.alerts.webhook import deliver_each

WEBHOOK = "http://hooks.local/secret-token"


def _alert(coin: str, metric: str = "price_return", at: str = "2024-03-01T00:00:00.000000Z") -> dict:
    return {"event": "anomaly", "coin_id": coin, "vs_currency": "usd", "metric": metric, "observed_at": at}


def test_outbox_delivers_after_a_crash_between_commit_and_webhook(tmp_path):
    sent: list[str] = []

    def send(payloads):
        sent.extend(alert_key(p) for p in payloads)
        return [True] * len(payloads)

    # Batch stored its alerts, committed its anomalies, then the process died before the webhook.
    assert AlertOutbox(str(tmp_path)).add([_alert("btc"), _alert("eth")]) == 2
    # The re-run (a new process) has nothing new to add, and delivers what is pending.
    outbox = AlertOutbox(str(tmp_path))
    assert outbox.deliver(send) == (2, 0)
    assert sorted(sent) == sorted([alert_key(_alert("btc")), alert_key(_alert("eth"))])
    # Delivered alerts are never sent again, even if a re-run stores them once more.
    assert outbox.add([_alert("btc")]) == 0
    assert outbox.deliver(send) == (0, 0)
    assert len(sent) == 2


def test_outbox_dedupes_by_key_metric_and_time_and_keeps_failures_pending(tmp_path):
    outbox = AlertOutbox(str(tmp_path))
    outbox.add([_alert("btc"), {**_alert("btc"), "run_id": "other"}, _alert("btc", "total_volume")])
    assert len(outbox.pending()) == 2
    assert outbox.deliver(lambda payloads: [False] * len(payloads)) == (0, 2)
    assert len(outbox.pending()) == 2  # still pending after a failed delivery
    assert outbox.deliver(lambda payloads: [p["metric"] == "price_return" for p in payloads]) == (1, 1)
    assert list(outbox.pending()) == [alert_key(_alert("btc", "total_volume"))]


def test_deliver_each_reports_per_payload(requests_mock):
    requests_mock.post(WEBHOOK, [{"status_code": 204}, {"status_code": 400}])
    assert deliver_each(WEBHOOK, [{"a": 1}, {"a": 2}], sleep=lambda s: None) == [True, False]
