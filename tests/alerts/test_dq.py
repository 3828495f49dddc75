"""Data-quality alerts: payload, once per batch across re-runs, at least once to the webhook."""

from __future__ import annotations

import json
import logging

import pytest

from app.alerts.dq import dq_alert_id, dq_alert_payload, example_records, raise_dq_alert
from app.alerts.outbox import AlertOutbox, alert_key
from app.quality.score import quality_breaches, quality_score


def _payload(batch_id: int = 4) -> dict:
    score = quality_score(10, 6, {"current_price_not_positive": 3, "name_is_null": 1, "unparseable": 1})
    reasons = quality_breaches(score, min_score=0.9, max_rule_failures=2)
    examples = {"current_price_not_positive": [{"source_file": "f.json", "record_index": 2, "coin_id": "x"}]}
    return dq_alert_payload(
        score,
        reasons,
        examples,
        app_id="app",
        batch_id=batch_id,
        run_id="r",
        min_score=0.9,
        max_rule_failures=2,
    )


def test_dq_alert_payload_carries_batch_score_top_rules_and_examples():
    payload = _payload()

    assert payload["alert_id"] == dq_alert_id("app", 4) == "dq|app|4" == alert_key(payload)
    assert (payload["batch_id"], payload["score"], payload["records"], payload["passed"]) == (4, 0.6, 10, 6)
    assert [(r["rule"], r["failures"]) for r in payload["top_rules"]] == [
        ("current_price_not_positive", 3),
        ("name_is_null", 1),
        ("unparseable", 1),
    ]
    assert payload["top_rules"][0]["score"] == pytest.approx(0.7)
    assert payload["top_rules"][0]["examples"] == [
        {"source_file": "f.json", "record_index": 2, "coin_id": "x"}
    ]
    assert payload["top_rules"][1]["examples"] == []
    assert payload["reasons"][0].startswith("score 0.6000 is below the minimum 0.9")
    assert "rule current_price_not_positive failed 3 records" in payload["reasons"][1]
    json.dumps(payload)  # JSON-able as it is


def test_raise_dq_alert_without_webhook_logs_once_per_batch(tmp_path, caplog):
    outbox = AlertOutbox(str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="app.alerts.dq"):
        first = raise_dq_alert(outbox, _payload(), send=None)
        again = raise_dq_alert(AlertOutbox(str(tmp_path)), _payload(), send=None)  # the batch re-run
        other = raise_dq_alert(outbox, _payload(batch_id=5), send=None)

    assert (
        first["dq_alerts_raised"] == 1 and again["dq_alerts_raised"] == 0 and other["dq_alerts_raised"] == 1
    )
    alerts = [r for r in caplog.records if r.getMessage() == "dq.alert"]
    assert [(r.fields["batch_id"], r.fields["score"]) for r in alerts] == [(4, 0.6), (5, 0.6)]
    assert alerts[0].levelno == logging.WARNING
    assert alerts[0].fields["top_rules"][0]["examples"][0]["record_index"] == 2
    assert outbox.pending() == {}
    assert outbox.delivered() == {"dq|app|4", "dq|app|5"}


def test_raise_dq_alert_with_a_failing_webhook_stays_pending_and_the_rerun_delivers(tmp_path):
    posted: list[dict] = []

    def down(payloads):
        return [False] * len(payloads)

    def up(payloads):
        posted.extend(payloads)
        return [True] * len(payloads)

    first = raise_dq_alert(AlertOutbox(str(tmp_path)), _payload(), send=down)
    assert (first["dq_alerts_sent"], first["dq_alerts_pending"]) == (0, 1)
    rerun = raise_dq_alert(AlertOutbox(str(tmp_path)), _payload(), send=up)
    assert (rerun["dq_alerts_raised"], rerun["dq_alerts_sent"], rerun["dq_alerts_pending"]) == (1, 1, 0)
    third = raise_dq_alert(AlertOutbox(str(tmp_path)), _payload(), send=up)
    assert third["dq_alerts_raised"] == 0
    assert [p["alert_id"] for p in posted] == ["dq|app|4"]


def test_example_records_lists_a_few_failing_records_per_rule_in_file_order(spark):
    checked_df = spark.createDataFrame(
        [
            ("b.json", 0, "x", "usd", "bad price", None),
            ("a.json", 3, "y", "usd", "bad price", "no name"),
            ("a.json", 1, None, None, "bad price", None),
            ("a.json", 2, "z", "usd", None, None),
        ],
        "source_file string, record_index int, coin_id string, vs_currency string, "
        "dq_current_price_not_positive string, dq_name_is_null string",
    )

    got = example_records(checked_df, ["current_price_not_positive", "name_is_null"], per_rule=2)

    assert got == {
        "current_price_not_positive": [
            {"source_file": "a.json", "record_index": 1, "coin_id": None, "vs_currency": None},
            {"source_file": "a.json", "record_index": 3, "coin_id": "y", "vs_currency": "usd"},
        ],
        "name_is_null": [{"source_file": "a.json", "record_index": 3, "coin_id": "y", "vs_currency": "usd"}],
    }
    assert example_records(checked_df, []) == {}
