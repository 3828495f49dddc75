"""Pandas daily-metrics kernels: hand-computed days and categories, and equivalence with Spark."""

from __future__ import annotations

import math
from datetime import date, datetime

import numpy as np
import pandas as pd
import pytest

from app.batch.kernels.metrics import aggregate_market_metrics, last_version_of_day, metric_rows
from app.tables import GOLD_METRICS, TABLES
from tests.batch.kernels.checks import assert_close

METRICS_COLUMNS = list(TABLES[GOLD_METRICS].columns)
OBS_COLUMNS = [
    "coin_id",
    "vs_currency",
    "valid_from",
    "current_price",
    "total_volume",
    "market_cap",
    "price_change_percentage_24h",
    "price_volatility_24h",
    "market_cap_category",
    "volume_to_market_cap_ratio",
]
OBS_DDL = (
    "coin_id string, vs_currency string, valid_from timestamp, current_price double, total_volume double, "
    "market_cap double, price_change_percentage_24h double, price_volatility_24h double, "
    "market_cap_category string, volume_to_market_cap_ratio double"
)


def _t(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2024, 3, day, hour, minute)


def _v(coin, ts, cat, price, mc=None, vol=None, pct=None, vola=None, ratio=None, cur="usd") -> tuple:
    return (coin, cur, ts, price, vol, mc, pct, vola, cat, ratio)


def _frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=OBS_COLUMNS)
    frame["valid_from"] = frame["valid_from"].astype("datetime64[us]")
    for column in OBS_COLUMNS:
        if column not in ("coin_id", "vs_currency", "valid_from", "market_cap_category"):
            frame[column] = frame[column].astype(float)
    return frame


def _records(frame: pd.DataFrame) -> list[tuple]:
    """Rows as tuples with NULLs as None (NaN/NA/NaT)."""
    return [tuple(None if pd.isna(v) else v for v in row) for row in frame.itertuples(index=False)]


HAND_ROWS = [
    _v("a", _t(1, 9), "LARGE_CAP", 190.0, 2e10, 4e9, 5.0, 9.0, 0.5),  # not the day's last
    _v("a", _t(1, 23), "LARGE_CAP", 200.0, 3e10, 5e9, 1.0, 2.0, 0.1),
    _v("b", _t(1, 12), "LARGE_CAP", 50.0, 1.5e10, 1e9, -1.0, None, 0.2),
    _v("c", _t(1, 10), "MID_CAP", 2.0),  # NULL-heavy: only a price
    _v("d", _t(1, 8), None, 1.0),  # no category: its own group
    _v("e", _t(1, 7), None, None),  # no category, no price: counts, averages nothing
    _v("a", _t(2, 0, 30), "SMALL_CAP", 1.5, 5e8, 1e7, -50.0, 3.0, 0.02),  # next day, new category
    _v("a", _t(1, 11), "LARGE_CAP", 180.0, 2.7e10, 4.5e9, 0.5, 1.0, 0.16, cur="eur"),
]


def test_last_version_of_day_keeps_each_keys_last_version_per_utc_day():
    out = last_version_of_day(_frame(HAND_ROWS).iloc[::-1])
    assert list(out.columns) == [*OBS_COLUMNS, "metric_date"]
    got = list(zip(out["coin_id"], out["vs_currency"], out["valid_from"], out["metric_date"], strict=True))
    assert got == [
        ("a", "eur", pd.Timestamp(_t(1, 11)), date(2024, 3, 1)),
        ("a", "usd", pd.Timestamp(_t(1, 23)), date(2024, 3, 1)),
        ("a", "usd", pd.Timestamp(_t(2, 0, 30)), date(2024, 3, 2)),
        ("b", "usd", pd.Timestamp(_t(1, 12)), date(2024, 3, 1)),
        ("c", "usd", pd.Timestamp(_t(1, 10)), date(2024, 3, 1)),
        ("d", "usd", pd.Timestamp(_t(1, 8)), date(2024, 3, 1)),
        ("e", "usd", pd.Timestamp(_t(1, 7)), date(2024, 3, 1)),
    ]
    assert isinstance(out["metric_date"][0], date)
    empty = last_version_of_day(_frame([]))
    assert empty.empty and list(empty.columns) == [*OBS_COLUMNS, "metric_date"]


def test_aggregate_market_metrics_hand_computed():
    out = aggregate_market_metrics(_frame(HAND_ROWS).iloc[::-1], batch_id=3)
    assert list(out.columns) == METRICS_COLUMNS
    d1, d2 = date(2024, 3, 1), date(2024, 3, 2)
    ts = pd.Timestamp
    assert _records(out) == [
        (d1, "eur", "LARGE_CAP", 1, 2.7e10, 4.5e9, 180.0, 0.5, 1.0, 0.16, 2.7e10, 2.7e10, ts(_t(1, 11)), 3),
        (
            d1,
            "usd",
            "LARGE_CAP",
            2,
            4.5e10,
            6e9,
            125.0,
            0.0,
            2.0,
            pytest.approx(0.15),
            3e10,
            1.5e10,
            ts(_t(1, 23)),
            3,
        ),
        (d1, "usd", "MID_CAP", 1, None, None, 2.0, None, None, None, None, None, ts(_t(1, 10)), 3),
        (d1, "usd", None, 2, None, None, 1.0, None, None, None, None, None, ts(_t(1, 8)), 3),
        (d2, "usd", "SMALL_CAP", 1, 5e8, 1e7, 1.5, -50.0, 3.0, 0.02, 5e8, 5e8, ts(_t(2, 0, 30)), 3),
    ]
    dtypes = out.dtypes.astype(str).to_dict()
    assert (dtypes["num_coins"], dtypes["updated_batch_id"], dtypes["metric_timestamp"]) == (
        "int64",
        "Int64",
        "datetime64[us]",
    )
    assert aggregate_market_metrics(_frame(HAND_ROWS), batch_id=None)["updated_batch_id"].isna().all()


def test_aggregate_market_metrics_of_last_versions_is_the_same():
    frame = _frame(HAND_ROWS)
    split = pd.concat(
        [last_version_of_day(frame.iloc[:4]), last_version_of_day(frame.iloc[4:])], ignore_index=True
    )
    pd.testing.assert_frame_equal(
        aggregate_market_metrics(split, batch_id=1),
        aggregate_market_metrics(frame, batch_id=1),
        check_exact=True,
    )


def test_aggregate_market_metrics_of_no_rows_has_the_table_schema():
    out = aggregate_market_metrics(_frame([]), batch_id=1)
    assert out.empty and list(out.columns) == METRICS_COLUMNS
    assert str(out["updated_batch_id"].dtype) == "Int64"


def test_metric_rows_keep_each_currencys_days_from_its_first_day():
    out = metric_rows(_frame(HAND_ROWS), {"usd": "2024-03-02", "gbp": "2024-03-01"}, batch_id=8)
    assert _records(out[["metric_date", "vs_currency", "market_cap_category", "num_coins"]]) == [
        (date(2024, 3, 2), "usd", "SMALL_CAP", 1)
    ]
    both = metric_rows(_frame(HAND_ROWS), {"usd": "2024-03-01", "eur": "2024-03-01"}, batch_id=8)
    assert len(both) == 5
    assert metric_rows(_frame(HAND_ROWS), {}, batch_id=8).empty


# --------------------------------------------------------------------------------- against Spark


def _random_image(seed: int) -> pd.DataFrame:
    """Versions of 12 coins in 2 currencies over 4 days, NULL-heavy, with NULL categories."""
    rng = np.random.default_rng(seed)
    n = 1200
    categories = np.array(["LARGE_CAP", "MID_CAP", "SMALL_CAP", None], dtype=object)

    def maybe_null(values: np.ndarray, p: float) -> np.ndarray:
        return np.where(rng.random(n) < p, np.nan, values)

    minutes = rng.choice(4 * 24 * 60, n, replace=False)
    frame = pd.DataFrame(
        {
            "coin_id": rng.choice([f"coin{i}" for i in range(12)], n),
            "vs_currency": rng.choice(["usd", "eur"], n),
            "valid_from": (pd.Timestamp("2024-03-01") + pd.to_timedelta(minutes, unit="min")).astype(
                "datetime64[us]"
            ),
            "current_price": maybe_null(np.round(rng.lognormal(3, 1, n), 2), 0.1),
            "total_volume": maybe_null(rng.lognormal(20, 1, n), 0.1),
            "market_cap": maybe_null(rng.lognormal(22, 1, n), 0.2),
            "price_change_percentage_24h": maybe_null(rng.normal(0, 5, n), 0.1),
            "price_volatility_24h": maybe_null(rng.lognormal(0, 1, n), 0.3),
            "market_cap_category": categories[rng.integers(0, 4, n)],
            "volume_to_market_cap_ratio": maybe_null(rng.random(n), 0.2),
        }
    )
    return frame


def _none(value):
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def test_metric_rows_match_spark(spark):
    from app.batch.frames import collect
    from tests.reference import derive_spark as derive

    image = _random_image(23)
    first_days = {"usd": "2024-03-02", "eur": "2024-03-01"}
    image_df = spark.createDataFrame(
        [tuple(_none(v) for v in row) for row in image.astype(object).itertuples(index=False)], OBS_DDL
    )
    expected = collect(derive.metric_rows(image_df, first_days, batch_id=4))
    actual = metric_rows(image, first_days, batch_id=4)
    assert len(actual) > 20 and actual["market_cap_category"].isna().any()
    assert_close(
        actual,
        expected.astype({"num_coins": "int64"}),
        ["metric_date", "vs_currency", "market_cap_category"],
    )
