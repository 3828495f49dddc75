"""The anomalies stage: incremental, late-data and replay behaviour against a from-scratch run."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import numpy as np
import pytest

from app.batch.anomalies import anomalies_stage
from tests.reference.anomalies_spark import detect_anomalies
from tests.sinks.silver_builders import (
    Obs,
    make_ctx,
    silver_df,
    table_rows,
    table_version,
    touched_rows,
    write_silver,
)

T0 = datetime(2024, 3, 1)
DETECTOR = {"zscore_window": 10, "zscore_min_periods": 5, "zscore_threshold": 3.0}
WEBHOOK = "http://hooks.local/secret-token"


def _series(coin: str, n: int, seed: int, jumps: dict[int, float]) -> list[Obs]:
    rng = np.random.default_rng(seed)
    returns = rng.normal(0.0, 0.002, n)
    volumes = np.exp(rng.normal(18.0, 0.05, n))
    for i, r in jumps.items():
        returns[i] = r
        volumes[i] *= 4.0
    prices = 50.0 * np.exp(np.cumsum(returns))
    return [Obs(coin, T0 + timedelta(minutes=2 * i), float(prices[i]), float(volumes[i])) for i in range(n)]


@pytest.mark.slow
def test_anomalies_stage_incremental_with_late_data_equals_from_scratch(
    spark, tmp_path, caplog, requests_mock
):
    requests_mock.post(WEBHOOK, status_code=204)
    caplog.set_level(logging.INFO)
    a = _series("alpha", 120, 1, {21: 0.06, 70: -0.05})
    b = _series("beta", 120, 2, {40: 0.07, 100: 0.05})
    silver_path = str(tmp_path / "tables" / "silver_crypto_clean")
    anomalies_path = str(tmp_path / "tables" / "crypto_anomalies")

    def step(batch_id, existing, new, removed=(), **extra):
        silver = [o for o in existing if o not in removed] + new
        write_silver(spark, silver_path, silver)
        ctx = make_ctx(
            spark,
            tmp_path,
            batch_id,
            touched_rows(existing, new),
            before=existing,
            after=silver,
            **DETECTOR,
            **extra,
        )
        return ctx, anomalies_stage(ctx), silver

    _, c0, silver = step(0, [], a[:60] + b[:60], alert_webhook_url=WEBHOOK)
    assert c0["anomalies_added"] >= 4 and c0["alerts_sent"] == c0["anomalies_added"]
    assert requests_mock.call_count == c0["anomalies_added"]
    assert WEBHOOK not in caplog.text and "secret-token" not in caplog.text
    assert "anomaly.flagged" in caplog.text

    _, c1, silver = step(1, silver, a[60:100])
    assert c1["anomalies_added"] >= 2 and c1["anomalies_removed"] == 0

    # Late data for alpha: (1) a version landing before a[21] with a[21]'s values, which silver
    # collapses into (a[21] leaves silver), and (2) a volume spike between a[30] and a[31] that
    # re-scores the following W observations.
    moved = a[21].moved(a[20].valid_from + timedelta(seconds=30))
    spike = Obs(
        "alpha", a[30].valid_from + timedelta(seconds=45), a[30].current_price, a[30].total_volume * 6
    )
    _, c2, silver = step(2, silver, [moved, spike] + b[60:100], removed=[a[21]])
    assert c2["anomalies_added"] >= 2  # the moved jump and the spike
    assert c2["anomalies_removed"] >= 2  # the jump at its old time, and its volume row

    ctx3, c3, silver = step(3, silver, a[100:] + b[100:])
    assert c3["anomalies_added"] >= 1

    expected = sorted(
        tuple(r)
        for r in detect_anomalies(silver_df(spark, silver), **_detector_kwargs())
        .drop("detected_batch_id")
        .collect()
    )
    actual = table_rows(spark, anomalies_path, drop=["detected_batch_id"])
    # The reference is Spark's (Java's log and summation); the kernels' numbers agree to rounding.
    assert [r[:4] for r in actual] == [r[:4] for r in expected]
    for got, want in zip(actual, expected, strict=True):
        assert got[4:] == pytest.approx(want[4:], rel=1e-9, abs=1e-12), got[:4]

    # Re-running the last committed batch changes nothing and alerts nothing.
    version = table_version(spark, anomalies_path)
    before = table_rows(spark, anomalies_path)
    again = anomalies_stage(ctx3)
    assert table_version(spark, anomalies_path) == version
    assert table_rows(spark, anomalies_path) == before
    assert again["anomalies_added"] == again["anomalies_removed"] == again["anomalies_updated"] == 0


def _detector_kwargs():
    return {
        "window": DETECTOR["zscore_window"],
        "min_periods": DETECTOR["zscore_min_periods"],
        "threshold": DETECTOR["zscore_threshold"],
    }


def test_anomalies_stage_without_touched_keys_writes_nothing(spark, tmp_path):
    ctx = make_ctx(spark, tmp_path, 0, [], **DETECTOR)
    counts = anomalies_stage(ctx)
    assert counts["anomalies_added"] == 0
    assert table_version(spark, ctx.layout.table("crypto_anomalies")) == 0  # just created


def test_alerts_lost_to_a_failed_webhook_are_delivered_by_the_rerun(spark, tmp_path, requests_mock):
    a = _series("alpha", 60, 1, {30: 0.06})
    silver_path = str(tmp_path / "tables" / "silver_crypto_clean")
    write_silver(spark, silver_path, a)

    def ctx():
        return make_ctx(
            spark, tmp_path, 0, touched_rows([], a), before=[], after=a, alert_webhook_url=WEBHOOK, **DETECTOR
        )

    requests_mock.post(WEBHOOK, status_code=503)  # the commit happens, the webhook is down
    first = anomalies_stage(ctx())
    assert first["anomalies_added"] >= 1 and first["alerts_sent"] == 0
    assert first["alerts_failed"] == first["anomalies_added"]

    requests_mock.post(WEBHOOK, status_code=204)
    calls = requests_mock.call_count
    again = anomalies_stage(ctx())  # the batch re-runs: its anomalies are committed already
    assert again["anomalies_added"] == 0
    assert again["alerts_sent"] == first["anomalies_added"]
    assert requests_mock.call_count - calls == first["anomalies_added"]
    assert anomalies_stage(ctx())["alerts_sent"] == 0  # delivered once, never again
