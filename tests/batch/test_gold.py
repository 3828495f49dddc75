"""Gold aggregates against hand-computed expectations (NULL-heavy rows, single-observation buckets)."""

from __future__ import annotations

import math
import statistics
from datetime import date, datetime

import pytest
from chispa import assert_approx_df_equality

from app.tables import ANOMALIES_DDL, GOLD_METRICS_DDL, GOLD_OHLC_DDL
from tests.reference.gold_spark import aggregate_coin_ohlc, aggregate_market_metrics, explode_buckets
from tests.sinks.silver_builders import Obs, silver_df


def _t(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2024, 3, day, hour, minute)


def test_aggregate_coin_ohlc_hand_computed(spark):
    versions = [
        Obs("a", _t(1, 10, 5), 100.0, 1000.0),
        Obs("a", _t(1, 10, 20), None, 1100.0),  # NULL price: skipped in O/H/L/C and in returns
        Obs("a", _t(1, 10, 40), 110.0, None),  # NULL volume: not the bucket's last volume
        Obs("a", _t(1, 10, 50), 99.0, 1200.0),
        Obs("a", _t(1, 11, 10), 105.0, None),  # single-observation bucket
        Obs("b", _t(1, 10, 30), None, None),  # a bucket with nothing but NULLs
    ]
    anomalies_df = spark.createDataFrame(
        [
            ("a", "usd", _t(1, 10, 40), "price_return", 0.1, 0.0, 0.01, 10.0, 20, 3.0, 0),
            ("a", "usd", _t(1, 10, 40), "volume", 5.0, 1.0, 1.0, 4.0, 20, 3.0, 0),  # same version
            ("a", "usd", _t(1, 11, 10), "volume", 5.0, 1.0, 1.0, 4.0, 20, 3.0, 0),
            ("a", "eur", _t(1, 10, 5), "volume", 5.0, 1.0, 1.0, 4.0, 20, 3.0, 0),  # other key
        ],
        ANOMALIES_DDL,
    )
    r1, r2, r3 = math.log(110 / 100), math.log(99 / 110), math.log(105 / 99)
    expected_df = spark.createDataFrame(
        [
            (
                "a",
                "usd",
                "1h",
                _t(1, 10),
                100.0,
                110.0,
                99.0,
                99.0,
                1200.0,
                -0.01,
                statistics.stdev([r1, r2]),
                4,
                1,
                7,
            ),
            ("a", "usd", "1h", _t(1, 11), 105.0, 105.0, 105.0, 105.0, None, 0.0, None, 1, 1, 7),
            ("b", "usd", "1h", _t(1, 10), None, None, None, None, None, None, None, 1, 0, 7),
            (
                "a",
                "usd",
                "1d",
                _t(1, 0),
                100.0,
                110.0,
                99.0,
                105.0,
                1200.0,
                0.05,
                statistics.stdev([r1, r2, r3]),
                5,
                2,
                7,
            ),
            ("b", "usd", "1d", _t(1, 0), None, None, None, None, None, None, None, 1, 0, 7),
        ],
        GOLD_OHLC_DDL,
    )

    actual_df = aggregate_coin_ohlc(silver_df(spark, versions), anomalies_df, batch_id=7)

    assert_approx_df_equality(actual_df, expected_df, 1e-12, ignore_nullable=True, ignore_row_order=True)


def test_aggregate_coin_ohlc_realized_volatility_needs_two_returns(spark):
    versions = [Obs("a", _t(1, 9, 0), 10.0, 1.0), Obs("a", _t(1, 9, 30), 11.0, 2.0)]
    empty_anomalies = spark.createDataFrame([], ANOMALIES_DDL)
    row = (
        aggregate_coin_ohlc(silver_df(spark, versions), empty_anomalies, intervals=["1h"])
        .collect()[0]
        .asDict()
    )
    assert row["realized_volatility"] is None
    assert row["return"] == pytest.approx(0.1)
    assert (row["n_obs"], row["n_anomalies"], row["volume"]) == (2, 0, 2.0)


def test_explode_buckets_rejects_unknown_interval(spark):
    with pytest.raises(ValueError, match=r"unknown intervals \['5m'\]"):
        explode_buckets(silver_df(spark, []), intervals=["1h", "5m"])


def test_aggregate_market_metrics_hand_computed(spark):
    def v(coin, ts, cat, price, mc=None, vol=None, pct=None, vola=None, ratio=None, cur="usd"):
        return Obs(coin, ts, price, vol, mc, pct, vola, cat, ratio, vs_currency=cur)

    versions = [
        v("a", _t(1, 9), "LARGE_CAP", 190.0, 2e10, 4e9, 5.0, 9.0, 0.5),  # not the day's last
        v("a", _t(1, 23), "LARGE_CAP", 200.0, 3e10, 5e9, 1.0, 2.0, 0.1),
        v("b", _t(1, 12), "LARGE_CAP", 50.0, 1.5e10, 1e9, -1.0, None, 0.2),
        v("c", _t(1, 10), "MID_CAP", 2.0),  # NULL-heavy: only a price
        v("d", _t(1, 8), None, 1.0),  # no category
        v("a", _t(2, 0, 30), "SMALL_CAP", 1.5, 5e8, 1e7, -50.0, 3.0, 0.02),  # next day, new category
        v("a", _t(1, 11), "LARGE_CAP", 180.0, 2.7e10, 4.5e9, 0.5, 1.0, 0.16, cur="eur"),
    ]
    d1, d2 = date(2024, 3, 1), date(2024, 3, 2)
    expected_df = spark.createDataFrame(
        [
            (d1, "usd", "LARGE_CAP", 2, 4.5e10, 6e9, 125.0, 0.0, 2.0, 0.15, 3e10, 1.5e10, _t(1, 23), 3),
            (d1, "usd", "MID_CAP", 1, None, None, 2.0, None, None, None, None, None, _t(1, 10), 3),
            (d1, "usd", None, 1, None, None, 1.0, None, None, None, None, None, _t(1, 8), 3),
            (d2, "usd", "SMALL_CAP", 1, 5e8, 1e7, 1.5, -50.0, 3.0, 0.02, 5e8, 5e8, _t(2, 0, 30), 3),
            (d1, "eur", "LARGE_CAP", 1, 2.7e10, 4.5e9, 180.0, 0.5, 1.0, 0.16, 2.7e10, 2.7e10, _t(1, 11), 3),
        ],
        GOLD_METRICS_DDL,
    )

    actual_df = aggregate_market_metrics(silver_df(spark, versions), batch_id=3)

    assert_approx_df_equality(actual_df, expected_df, 1e-9, ignore_nullable=True, ignore_row_order=True)
