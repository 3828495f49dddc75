"""Pandas candle kernels: hand-computed candles and replaced buckets, and equivalence with Spark."""

from __future__ import annotations

import math
import statistics
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from app.batch.kernels.candles import aggregate_coin_ohlc, candle_rows, explode_buckets
from app.batch.kernels.scores import score_versions, scored_versions
from app.tables import ANOMALIES, GOLD_OHLC, TABLES
from tests.batch.kernels.checks import assert_close

OHLC_COLUMNS = list(TABLES[GOLD_OHLC].columns)
VERSIONS_DDL = (
    "coin_id string, vs_currency string, valid_from timestamp, current_price double, total_volume double"
)
TOUCHED_DDL = "coin_id string, vs_currency string, from_ts timestamp"


def _t(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2024, 3, day, hour, minute)


def _versions(rows: list[tuple]) -> pd.DataFrame:
    """(coin_id, time, price, volume[, vs_currency]) tuples as a versions frame (microsecond times)."""
    return pd.DataFrame(
        {
            "coin_id": [r[0] for r in rows],
            "vs_currency": [r[4] if len(r) > 4 else "usd" for r in rows],
            "valid_from": pd.Series([r[1] for r in rows], dtype="datetime64[us]"),
            "current_price": np.array([np.nan if r[2] is None else r[2] for r in rows], dtype=float),
            "total_volume": np.array([np.nan if r[3] is None else r[3] for r in rows], dtype=float),
        }
    )


def _flagged(rows: list[tuple]) -> pd.DataFrame:
    """(coin_id, vs_currency, observed_at, metric) tuples as anomaly rows (other columns constant)."""
    n = len(rows)
    return pd.DataFrame(
        {
            "coin_id": [r[0] for r in rows],
            "vs_currency": [r[1] for r in rows],
            "observed_at": pd.Series([r[2] for r in rows], dtype="datetime64[us]"),
            "metric": [r[3] for r in rows],
            "value": np.full(n, 5.0),
            "window_mean": np.ones(n),
            "window_stddev": np.ones(n),
            "z_score": np.full(n, 4.0),
            "window_size": np.full(n, 20, dtype=np.int32),
            "threshold": np.full(n, 3.0),
            "detected_batch_id": pd.array([0] * n, dtype="Int64"),
        }
    )[list(TABLES[ANOMALIES].columns)]


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as dicts with NULLs as None (NaN/NA/NaT), for exact comparison with hand-made rows."""
    return [
        {k: (None if (not isinstance(v, list) and pd.isna(v)) else v) for k, v in row.items()}
        for row in frame.to_dict("records")
    ]


def test_aggregate_coin_ohlc_hand_computed():
    versions = _versions(
        [
            ("a", _t(1, 10, 5), 100.0, 1000.0),
            ("a", _t(1, 10, 20), None, 1100.0),  # NULL price: skipped in O/H/L/C and in returns
            ("a", _t(1, 10, 40), 110.0, None),  # NULL volume: not the bucket's last volume
            ("a", _t(1, 10, 50), 99.0, 1200.0),
            ("a", _t(1, 11, 10), 105.0, None),  # single-observation bucket
            ("b", _t(1, 10, 30), None, None),  # a bucket with nothing but NULLs
            ("c", _t(1, 12, 0), 0.0, 5.0),  # zero open: no return; not priced for log returns
            ("c", _t(1, 12, 10), 10.0, None),
            ("c", _t(1, 12, 20), -1.0, None),  # negative price: the low, skipped in the returns chain
            ("c", _t(1, 12, 30), 11.0, None),
            ("c", _t(1, 12, 40), 13.2, None),
        ]
    ).iloc[::-1]  # any input order
    flagged = _flagged(
        [
            ("a", "usd", _t(1, 10, 40), "price_return"),
            ("a", "usd", _t(1, 10, 40), "volume"),  # same version: counted once
            ("a", "usd", _t(1, 11, 10), "volume"),
            ("a", "eur", _t(1, 10, 5), "volume"),  # other key
            (None, "usd", _t(1, 10, 30), "volume"),  # NULL key: matches nothing
        ]
    )
    r1, r2, r3 = math.log(110 / 100), math.log(99 / 110), math.log(105 / 99)
    c1, c2 = math.log(11 / 10), math.log(13.2 / 11)
    h10, h11, h12, d1 = _t(1, 10), _t(1, 11), _t(1, 12), _t(1, 0)
    vol = statistics.stdev
    # Sorted by key: coin, currency, interval (as text: 1d before 1h), bucket_start.
    expected = [
        ("a", "1d", d1, 100.0, 110.0, 99.0, 105.0, 1200.0, 105 / 100 - 1, vol([r1, r2, r3]), 5, 2),
        ("a", "1h", h10, 100.0, 110.0, 99.0, 99.0, 1200.0, 99 / 100 - 1, vol([r1, r2]), 4, 1),
        ("a", "1h", h11, 105.0, 105.0, 105.0, 105.0, None, 0.0, None, 1, 1),
        ("b", "1d", d1, None, None, None, None, None, None, None, 1, 0),
        ("b", "1h", h10, None, None, None, None, None, None, None, 1, 0),
        ("c", "1d", d1, 0.0, 13.2, -1.0, 13.2, 5.0, None, vol([c1, c2]), 5, 0),
        ("c", "1h", h12, 0.0, 13.2, -1.0, 13.2, 5.0, None, vol([c1, c2]), 5, 0),
    ]
    out = aggregate_coin_ohlc(versions, flagged, batch_id=7)
    assert list(out.columns) == OHLC_COLUMNS
    got = _records(out)
    assert len(got) == len(expected)
    for row, want in zip(got, expected, strict=True):
        coin, interval, start, *values, n_obs, n_anomalies = want
        assert (row["coin_id"], row["vs_currency"], row["interval"], row["bucket_start"]) == (
            coin,
            "usd",
            interval,
            pd.Timestamp(start),
        )
        names = ["open", "high", "low", "close", "volume", "return", "realized_volatility"]
        assert [row[k] for k in names] == [None if v is None else pytest.approx(v, rel=1e-12) for v in values]
        assert (row["n_obs"], row["n_anomalies"], row["updated_batch_id"]) == (n_obs, n_anomalies, 7)
    dtypes = out.dtypes.astype(str).to_dict()
    assert dtypes["bucket_start"] == "datetime64[us]" and dtypes["open"] == "float64"
    assert (dtypes["n_obs"], dtypes["n_anomalies"], dtypes["updated_batch_id"]) == ("int64", "int64", "Int64")


def test_realized_volatility_needs_two_returns_and_equal_returns_give_zero():
    versions = _versions([("a", _t(1, 9, 0), 10.0, 1.0), ("a", _t(1, 9, 30), 11.0, 2.0)])
    row = aggregate_coin_ohlc(versions, _flagged([]), batch_id=None, intervals=["1h"]).iloc[0]
    assert math.isnan(row["realized_volatility"]) and row["return"] == pytest.approx(0.1)
    assert (row["n_obs"], row["n_anomalies"], row["volume"]) == (2, 0, 2.0)
    assert row["updated_batch_id"] is pd.NA
    # 110/100 and 121/110 are the same double: two equal returns, a stddev of exactly 0.
    flat = _versions([("a", _t(1, 9, m), p, None) for m, p in ((0, 100.0), (10, 110.0), (20, 121.0))])
    assert (
        aggregate_coin_ohlc(flat, _flagged([]), batch_id=1, intervals=["1h"])["realized_volatility"][0] == 0.0
    )


def test_aggregate_coin_ohlc_of_no_versions_and_unknown_intervals():
    out = aggregate_coin_ohlc(_versions([]), _flagged([]), batch_id=1)
    assert out.empty and list(out.columns) == OHLC_COLUMNS
    assert str(out["updated_batch_id"].dtype) == "Int64"
    with pytest.raises(ValueError, match=r"unknown intervals \['5m'\]"):
        explode_buckets(_versions([]), intervals=["1h", "5m"])


def test_aggregate_coin_ohlc_extra_keys_split_candles_and_flags():
    versions = _versions([("a", _t(1, 10, 5), 100.0, 1.0), ("a", _t(1, 10, 6), 101.0, 2.0)])
    both = pd.concat(
        [versions.assign(_after=True), versions.iloc[:1].assign(_after=False)], ignore_index=True
    )
    flagged = _flagged([("a", "usd", _t(1, 10, 6), "volume")]).assign(_after=True)
    out = aggregate_coin_ohlc(both, flagged, batch_id=2, intervals=["1h"], extra_keys=["_after"])
    assert list(out.columns) == ["_after", *OHLC_COLUMNS]
    assert list(zip(out["_after"], out["n_obs"], out["n_anomalies"], out["close"], strict=True)) == [
        (False, 1, 0, 100.0),
        (True, 2, 1, 101.0),
    ]


def test_candle_rows_replace_buckets_from_the_hour_and_day_of_from_ts():
    image = _versions(
        [
            ("a", _t(1, 23), 50.0, 1.0),  # the day before from_ts: in no replaced bucket
            ("a", _t(2, 9), 100.0, 2.0),  # before from_ts's hour: only in the 1d bucket
            ("a", _t(2, 10, 30), 110.0, 3.0),
            ("a", _t(2, 11, 15), 121.0, 4.0),
            ("x", _t(2, 11), 1.0, 1.0),  # untouched key
        ]
    )
    touched = pd.DataFrame(
        {"coin_id": ["a"], "vs_currency": ["usd"], "from_ts": [pd.Timestamp(_t(2, 10, 40))]}
    )
    scored = score_versions(image.iloc[:4], window=2, min_periods=2)
    # Threshold 0 flags every scored value: volume at 10:30 and 11:15, price return at 11:15.
    out = candle_rows(image, scored, touched, threshold=0.0, batch_id=5)
    assert list(out.columns) == OHLC_COLUMNS
    got = [
        (r["interval"], r["bucket_start"], r["open"], r["close"], r["n_obs"], r["n_anomalies"])
        for r in _records(out)
    ]
    assert got == [
        ("1d", pd.Timestamp(_t(2, 0)), 100.0, 121.0, 3, 2),
        ("1h", pd.Timestamp(_t(2, 10)), 110.0, 110.0, 1, 1),
        ("1h", pd.Timestamp(_t(2, 11)), 121.0, 121.0, 1, 1),
    ]
    assert out["realized_volatility"][0] == 0.0  # two equal returns (x1.1 twice)
    assert set(out["updated_batch_id"]) == {5}


# --------------------------------------------------------------------------------- against Spark


def _random_image(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Versions over ~3 days per key (NULLs, equal, zero and negative prices) and touched keys."""
    rng = np.random.default_rng(seed)
    frames, touched = [], []
    for coin, currency in [("bitcoin", "usd"), ("bitcoin", "eur"), ("ethereum", "usd"), ("solana", "usd")]:
        n = 220
        returns = rng.normal(0.0, 0.01, n)
        returns[rng.random(n) < 0.2] = 0.0
        prices = 100.0 * np.exp(np.cumsum(returns))
        prices[rng.random(n) < 0.08] = np.nan
        prices[rng.choice(n, 3, replace=False)] = 0.0
        prices[rng.choice(n, 2, replace=False)] = -1.0
        prices[205:212] = np.nan  # whole buckets without a price
        volumes = np.exp(rng.normal(20.0, 0.4, n))
        volumes[rng.random(n) < 0.1] = np.nan
        minutes = np.cumsum(rng.integers(1, 40, n))
        times = (pd.Timestamp("2024-03-01") + pd.to_timedelta(minutes, unit="min")).astype("datetime64[us]")
        frames.append(
            pd.DataFrame(
                {
                    "coin_id": coin,
                    "vs_currency": currency,
                    "valid_from": times,
                    "current_price": prices,
                    "total_volume": volumes,
                }
            )
        )
        touched.append((coin, currency, times[int(rng.integers(60, 200))] + pd.Timedelta(seconds=1)))
    image = pd.concat(frames, ignore_index=True)
    ranges = pd.DataFrame(touched[:3], columns=["coin_id", "vs_currency", "from_ts"])  # one key untouched
    return image.iloc[rng.permutation(len(image))].reset_index(drop=True), ranges


def _none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def test_candle_rows_match_spark(spark):
    from app.batch.frames import collect
    from tests.reference import derive_spark as derive

    window, min_periods, threshold = 20, 5, 2.0
    image, touched = _random_image(17)
    image_df = spark.createDataFrame(
        [
            (
                r.coin_id,
                r.vs_currency,
                r.valid_from.to_pydatetime(),
                _none(r.current_price),
                _none(r.total_volume),
            )
            for r in image.itertuples()
        ],
        VERSIONS_DDL,
    )
    touched_df = spark.createDataFrame(
        [(r.coin_id, r.vs_currency, r.from_ts.to_pydatetime()) for r in touched.itertuples()], TOUCHED_DDL
    )
    scored_df = derive.scored_versions(image_df, touched_df, window=window, min_periods=min_periods)
    expected = collect(derive.candle_rows(image_df, scored_df, touched_df, threshold=threshold, batch_id=3))

    scored = scored_versions(image, touched, window=window, min_periods=min_periods)
    actual = candle_rows(image, scored, touched, threshold=threshold, batch_id=3)
    assert len(actual) > 100 and actual["n_anomalies"].sum() > 5
    assert actual["open"].isna().any() and (actual["realized_volatility"].notna()).sum() > 50
    expected = expected.astype({"n_obs": "int64", "n_anomalies": "int64"})
    assert_close(actual, expected, ["coin_id", "vs_currency", "interval", "bucket_start"])
