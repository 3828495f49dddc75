"""``coinlake verify``: recompute the derived tables from silver, report drift, repair it idempotently."""

from __future__ import annotations

import json
import re
import shutil
from datetime import date, datetime, timedelta

import numpy as np
import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from app.batch.verify import recompute_anomalies, verify_lake
from app.cli import main
from app.commands.verify import parse_day
from app.errors import ConfigError
from app.paths import Layout
from app.tables import ensure_table
from tests.reference.anomalies_spark import detect_anomalies
from tests.reference.gold_spark import aggregate_coin_ohlc, aggregate_market_metrics
from tests.sinks.silver_builders import Obs, silver_df, table_version

T0 = datetime(2024, 3, 1)
DAY2 = date(2024, 3, 2)
DETECTOR = {"window": 4, "min_periods": 3, "threshold": 2.0}
STORED_BATCH = 7
DERIVED = ("crypto_anomalies", "gold_coin_ohlc", "gold_crypto_metrics")


def _series(coin: str, currency: str, seed: int, n: int = 32) -> list[Obs]:
    """Versions every 90 minutes over two UTC days, with price spikes and some NULL prices."""
    rng = np.random.default_rng(seed)
    prices = 40.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, n)))
    prices[[6, 18, 25]] *= 1.4
    out = []
    for i in range(n):
        price = None if i % 11 == 3 else float(prices[i])
        market_cap = None if price is None else price * 2.6e8
        category = None if market_cap is None else ("LARGE_CAP" if market_cap >= 1e10 else "MID_CAP")
        out.append(
            Obs(
                coin,
                T0 + timedelta(minutes=90 * i),
                price,
                float(rng.lognormal(18, 0.3)),
                market_cap,
                float(rng.normal(0, 3)),
                float(rng.uniform(1, 5)),
                category,
                float(rng.uniform(0.01, 0.2)),
                vs_currency=currency,
            )
        )
    return out


def _observations() -> list[Obs]:
    return _series("alpha", "usd", 1) + _series("beta", "usd", 2) + _series("alpha", "eur", 3)


@pytest.fixture(scope="module")
def lake_template(spark, tmp_path_factory):
    """A consistent lake: silver, and the derived tables written from the pure functions over it."""
    root = tmp_path_factory.mktemp("verify_lake")
    layout = Layout.from_root(str(root))
    versions_df = silver_df(spark, _observations())
    versions_df.write.format("delta").save(layout.table("silver_crypto_clean"))
    anomalies_df = detect_anomalies(versions_df, **DETECTOR, batch_id=STORED_BATCH).cache()
    derived = {
        "crypto_anomalies": anomalies_df,
        "gold_coin_ohlc": aggregate_coin_ohlc(versions_df, anomalies_df, batch_id=STORED_BATCH),
        "gold_crypto_metrics": aggregate_market_metrics(versions_df, batch_id=STORED_BATCH),
    }
    for name, df in derived.items():
        ensure_table(spark, name, layout.table(name))
        df.write.format("delta").mode("append").save(layout.table(name))
    anomalies_df.unpersist()
    return root


@pytest.fixture
def layout(lake_template, tmp_path):
    """A private copy of the consistent lake (tests change their tables)."""
    root = tmp_path / "lake"
    shutil.copytree(lake_template, root)
    return Layout.from_root(str(root))


@pytest.fixture
def cli_detector(monkeypatch):
    monkeypatch.setenv("COINLAKE_ZSCORE_WINDOW", str(DETECTOR["window"]))
    monkeypatch.setenv("COINLAKE_ZSCORE_MIN_PERIODS", str(DETECTOR["min_periods"]))
    monkeypatch.setenv("COINLAKE_ZSCORE_THRESHOLD", str(DETECTOR["threshold"]))


def _verify(spark, layout, **kwargs):
    return {r.table: r for r in verify_lake(spark, layout, **DETECTOR, **{"from_date": None, **kwargs})}


def _versions(spark, layout):
    return {name: table_version(spark, layout.table(name)) for name in DERIVED}


def _anomaly_key_filter(key: dict):
    return (
        (F.col("coin_id") == key["coin_id"])
        & (F.col("vs_currency") == key["vs_currency"])
        & (F.col("observed_at") == F.lit(key["observed_at"]).cast("timestamp"))
        & (F.col("metric") == key["metric"])
    )


def _drift(spark, layout, *, day: str) -> dict:
    """Delete an anomaly row, change a candle's close, add a metrics row, all on ``day``; their keys."""
    anomalies = DeltaTable.forPath(spark, layout.table("crypto_anomalies"))
    row = (
        anomalies.toDF()
        .filter(F.to_date("observed_at") == F.lit(day).cast("date"))
        .orderBy("observed_at", "coin_id", "vs_currency", "metric")
        .select("coin_id", "vs_currency", F.col("observed_at").cast("string").alias("observed_at"), "metric")
        .first()
    )
    assert row is not None, f"the sample data must flag something on {day}"
    gone = row.asDict()
    anomalies.delete(_anomaly_key_filter(gone))
    candle = f"coin_id = 'beta' AND `interval` = '1h' AND bucket_start = TIMESTAMP '{day} 03:00:00'"
    DeltaTable.forPath(spark, layout.table("gold_coin_ohlc")).update(candle, {"close": "close + 1.0"})
    spurious_df = spark.sql(
        f"SELECT DATE '{day}' AS metric_date, 'gbp' AS vs_currency, 'SMALL_CAP' AS market_cap_category, "
        "3L AS num_coins, 1.0D AS total_market_cap"
    )
    spurious_df.write.format("delta").mode("append").save(layout.table("gold_crypto_metrics"))
    return {
        "anomaly": gone,
        "candle": {
            "coin_id": "beta",
            "vs_currency": "usd",
            "interval": "1h",
            "bucket_start": f"{day} 03:00:00",
        },
        "metrics": {"metric_date": day, "vs_currency": "gbp", "market_cap_category": "SMALL_CAP"},
    }


def test_verify_cli_consistent_lake_is_clean(layout, cli_detector, capsys):
    assert main(["--data-dir", layout.root, "verify"]) == 0
    out = capsys.readouterr().out
    expected = re.findall(r"^(\w+) +(\d+) expected: 0 missing, 0 extra, 0 differing$", out, re.MULTILINE)
    assert [name for name, _ in expected] == list(DERIVED)
    assert all(int(rows) > 0 for _, rows in expected)  # not a vacuous comparison of empty ranges
    assert out.rstrip().endswith("verify: no differences")


def test_recompute_anomalies_from_date_equals_the_full_history_from_that_day(spark):
    versions_df = silver_df(spark, _observations())
    full_df = detect_anomalies(versions_df, **DETECTOR, batch_id=-1).filter(F.to_date("observed_at") >= DAY2)
    ranged_df = recompute_anomalies(versions_df, from_date=DAY2, **DETECTOR)
    assert ranged_df.count() > 0
    assert sorted(map(tuple, ranged_df.collect())) == sorted(map(tuple, full_df.collect()))


def test_verify_cli_reports_drift_without_changing_the_tables(spark, layout, cli_detector, capsys):
    drift = _drift(spark, layout, day="2024-03-02")
    versions = _versions(spark, layout)
    assert main(["--data-dir", layout.root, "verify", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    tables = {t["table"]: t for t in report["tables"]}
    counts = {n: (t["missing"], t["extra"], t["differing"]) for n, t in tables.items()}
    assert counts == {
        "crypto_anomalies": (1, 0, 0),
        "gold_coin_ohlc": (0, 0, 1),
        "gold_crypto_metrics": (0, 1, 0),
    }
    assert tables["crypto_anomalies"]["examples"]["missing"] == [{"key": drift["anomaly"]}]
    [candle] = tables["gold_coin_ohlc"]["examples"]["differing"]
    assert candle["key"] == drift["candle"] and list(candle["columns"]) == ["close"]
    close = candle["columns"]["close"]
    assert close["stored"] == pytest.approx(close["expected"] + 1.0)
    assert tables["gold_crypto_metrics"]["examples"]["extra"] == [{"key": drift["metrics"]}]
    assert report["differences"] == 3 and "not repaired" in report["warehouse"]
    assert _versions(spark, layout) == versions


@pytest.mark.slow
def test_verify_lake_repair_is_idempotent(spark, layout):
    drift = _drift(spark, layout, day="2024-03-02")
    versions = _versions(spark, layout)
    reports = _verify(spark, layout, repair=True)
    assert {n: r.repaired for n, r in reports.items()} == {
        "crypto_anomalies": {"insert": 1, "update": 0, "delete": 0},
        "gold_coin_ohlc": {"insert": 0, "update": 1, "delete": 0},
        "gold_crypto_metrics": {"insert": 0, "update": 0, "delete": 1},
    }
    assert _versions(spark, layout) == {n: v + 1 for n, v in versions.items()}
    restored = (
        spark.read.format("delta")
        .load(layout.table("crypto_anomalies"))
        .filter(_anomaly_key_filter(drift["anomaly"]))
        .collect()
    )
    assert [r["detected_batch_id"] for r in restored] == [-1]  # written by verify --repair
    candle_df = (
        spark.read.format("delta")
        .load(layout.table("gold_coin_ohlc"))
        .filter("coin_id = 'beta' AND `interval` = '1h' AND bucket_start = TIMESTAMP '2024-03-02 03:00:00'")
    )
    assert [r["updated_batch_id"] for r in candle_df.collect()] == [STORED_BATCH]  # bookkeeping kept

    # Verified again (with --repair): clean, so no MERGE runs and no Delta version is added.
    repaired = _versions(spark, layout)
    again = _verify(spark, layout, repair=True)
    assert {n: r.differences for n, r in again.items()} == dict.fromkeys(DERIVED, 0)
    assert {n: r.repaired for n, r in again.items()} == dict.fromkeys(DERIVED)
    assert _versions(spark, layout) == repaired
    history = DeltaTable.forPath(spark, layout.table("gold_coin_ohlc")).history().collect()
    assert [r["operation"] for r in history][:2] == ["MERGE", "UPDATE"]


def test_verify_lake_from_date_ignores_earlier_drift(spark, layout):
    _drift(spark, layout, day="2024-03-01")
    row = (
        spark.read.format("delta")
        .load(layout.table("crypto_anomalies"))
        .filter(F.to_date("observed_at") == F.lit(DAY2))
        .orderBy(F.desc("observed_at"))
        .select("coin_id", "vs_currency", F.col("observed_at").cast("string").alias("observed_at"), "metric")
        .first()
    )
    DeltaTable.forPath(spark, layout.table("crypto_anomalies")).delete(_anomaly_key_filter(row.asDict()))
    reports = _verify(spark, layout, from_date=DAY2, repair=True)
    assert {n: r.differences for n, r in reports.items()} == {
        "crypto_anomalies": 1,
        "gold_coin_ohlc": 0,
        "gold_crypto_metrics": 0,
    }
    assert reports["crypto_anomalies"].examples["missing"] == [{"key": row.asDict()}]
    # The MERGE applied that one row only: the first day's drift is left as it was.
    assert reports["crypto_anomalies"].repaired == {"insert": 1, "update": 0, "delete": 0}
    metrics_df = spark.read.format("delta").load(layout.table("gold_crypto_metrics"))
    assert metrics_df.filter("vs_currency = 'gbp'").count() == 1


@pytest.mark.parametrize("value", ["2024-13-01", "yesterday", "2024-3-1", "2024-03-02T00:00"])
def test_verify_cli_invalid_from_fails_with_one_line(tmp_path, capsys, value):
    assert main(["--data-dir", str(tmp_path), "verify", "--from", value]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"coinlake: error: verify: --from expects a UTC day YYYY-MM-DD, got {value!r}"
    with pytest.raises(ConfigError, match="YYYY-MM-DD"):
        parse_day(value)
    assert parse_day("2024-03-02") == DAY2
