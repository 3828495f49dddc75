"""Windowed z-score detection against an independent pandas computation, and its edge cases."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from tests.reference.anomalies_spark import (
    detect_anomalies,
    score_versions,
    with_is_anomaly,
    with_price_return,
    with_rolling_zscore,
)

VERSIONS_DDL = (
    "coin_id string, vs_currency string, valid_from timestamp, current_price double, total_volume double"
)
T0 = datetime(2024, 1, 1)


def _simulate(n_per_coin: int, seed: int = 7) -> tuple[pd.DataFrame, set[tuple[str, int, str]]]:
    """Random-walk prices and log-normal volumes per coin, with injected jumps and NULL prices."""
    rng = np.random.default_rng(seed)
    frames, injected = [], set()
    for coin in ("bitcoin", "ethereum", "solana"):
        returns = rng.normal(0.0, 0.001, n_per_coin)
        volumes = np.exp(rng.normal(20.0, 0.05, n_per_coin))
        for i in rng.choice(np.arange(200, n_per_coin - 5), size=4, replace=False):
            returns[i] = 0.05 * (1 if i % 2 else -1)  # 50 sigma: must be found
            volumes[i + 2] *= 3.0
            injected.add((coin, int(i), "price_return"))
            injected.add((coin, int(i) + 2, "volume"))
        prices = 100.0 * np.exp(np.cumsum(returns))
        null_at = rng.choice(np.arange(50, 150), size=3, replace=False)
        prices[null_at] = np.nan
        frames.append(
            pd.DataFrame(
                {
                    "coin_id": coin,
                    "vs_currency": "usd",
                    "idx": np.arange(n_per_coin),
                    "valid_from": [T0 + timedelta(minutes=int(m)) for m in range(n_per_coin)],
                    "current_price": prices,
                    "total_volume": volumes,
                }
            )
        )
    return pd.concat(frames, ignore_index=True), injected


def _pandas_zscores(pdf: pd.DataFrame, window: int, min_periods: int) -> pd.DataFrame:
    """The reference: shift(1).rolling(W, min_periods) mean and std(ddof=1) per coin."""
    out = []
    for _, g in pdf.sort_values(["coin_id", "valid_from"]).groupby("coin_id"):
        g = g.copy()
        g["price_return"] = np.log(g["current_price"] / g["current_price"].shift(1))
        for col in ("price_return", "total_volume"):
            prev = g[col].shift(1).rolling(window, min_periods=min_periods)
            mean, std = prev.mean(), prev.std(ddof=1)
            z = (g[col] - mean) / std
            g[f"{col}_zscore_ref"] = z.where(std > 0)
        out.append(g)
    return pd.concat(out, ignore_index=True)


def test_with_rolling_zscore_matches_pandas_and_finds_injected_jumps(spark):
    window, min_periods, threshold = 60, 20, 3.0
    pdf, injected = _simulate(1000)
    rows = [
        (
            r.coin_id,
            r.vs_currency,
            r.valid_from.to_pydatetime(),
            None if np.isnan(r.current_price) else float(r.current_price),
            float(r.total_volume),
        )
        for r in pdf.itertuples()
    ]
    source_df = spark.createDataFrame(rows, VERSIONS_DDL)

    actual = (
        source_df.transform(score_versions, window=window, min_periods=min_periods)
        .select("coin_id", "valid_from", "price_return_zscore", "total_volume_zscore")
        .toPandas()
    )
    expected = _pandas_zscores(pdf, window, min_periods)
    merged = expected.merge(actual, on=["coin_id", "valid_from"], validate="one_to_one")
    assert len(merged) == 3000
    for col in ("price_return", "total_volume"):
        ref, got = merged[f"{col}_zscore_ref"], merged[f"{col}_zscore"]
        assert (ref.isna() == got.isna()).all(), f"{col}: scored rows differ"
        diff = (ref - got).abs().dropna()
        assert (diff <= 1e-9 * np.maximum(1.0, ref.abs().dropna())).all(), diff.max()
        assert ref.notna().sum() > 2800  # almost everything is scored

    anomalies = detect_anomalies(
        source_df, window=window, min_periods=min_periods, threshold=threshold
    ).toPandas()
    by_time = dict(zip(pdf["valid_from"], pdf["idx"], strict=False))
    found = {(r.coin_id, by_time[pd.Timestamp(r.observed_at)], r.metric) for r in anomalies.itertuples()}
    assert injected <= found
    # The flagged set is exactly |z| >= threshold of the reference.
    ref_flags = {
        (r.coin_id, r.idx, metric)
        for r in expected.itertuples()
        for metric, col in (
            ("price_return", "price_return_zscore_ref"),
            ("volume", "total_volume_zscore_ref"),
        )
        if abs(getattr(r, col)) >= threshold
    }
    assert found == ref_flags


def test_with_rolling_zscore_constant_series_has_no_score(spark):
    rows = [("c", "usd", T0 + timedelta(minutes=i), 5.0, 1000.0) for i in range(30)]
    df = spark.createDataFrame(rows, VERSIONS_DDL).transform(
        with_rolling_zscore, value_col="total_volume", window=10, min_periods=3
    )
    out = df.select("total_volume_window_stddev", "total_volume_zscore").collect()
    assert all(r.total_volume_zscore is None for r in out)
    assert {r.total_volume_window_stddev for r in out[3:]} == {0.0}


def test_with_rolling_zscore_needs_min_periods_previous_values(spark):
    rows = [("c", "usd", T0 + timedelta(minutes=i), 1.0, float(v)) for i, v in enumerate([1, 2, 4, 8, 100])]
    out = (
        spark.createDataFrame(rows, VERSIONS_DDL)
        .transform(with_rolling_zscore, value_col="total_volume", window=10, min_periods=4)
        .orderBy("valid_from")
        .collect()
    )
    assert [r.total_volume_window_count for r in out] == [0, 1, 2, 3, 4]
    assert [r.total_volume_zscore is None for r in out] == [True, True, True, True, False]
    prev = np.array([1.0, 2.0, 4.0, 8.0])
    assert out[4].total_volume_zscore == pytest.approx((100 - prev.mean()) / prev.std(ddof=1), rel=1e-12)


def test_with_price_return_null_prices_give_null_returns_and_are_skipped_in_window(spark):
    prices = [100.0, None, 110.0, 121.0, 0.0, 133.1]
    rows = [("c", "usd", T0 + timedelta(minutes=i), p, None) for i, p in enumerate(prices)]
    rows.append(("d", "usd", T0, 50.0, None))  # another key: its own first version
    out = (
        spark.createDataFrame(rows, VERSIONS_DDL)
        .transform(with_price_return)
        .orderBy("coin_id", "valid_from")
        .collect()
    )
    returns = [r.price_return for r in out]
    assert returns[:4] == [None, None, None, pytest.approx(np.log(1.1))]
    assert returns[4:] == [None, None, None]  # zero price: no log return either side; new key


def test_with_rolling_zscore_null_value_is_not_scored_and_not_counted(spark):
    values = [1.0, 2.0, None, 3.0, None, 10.0]
    rows = [("c", "usd", T0 + timedelta(minutes=i), 1.0, v) for i, v in enumerate(values)]
    out = (
        spark.createDataFrame(rows, VERSIONS_DDL)
        .transform(with_rolling_zscore, value_col="total_volume", window=3, min_periods=2)
        .orderBy("valid_from")
        .collect()
    )
    assert out[4].total_volume_zscore is None  # NULL value
    assert out[5].total_volume_window_count == 1  # window rows 2..4 hold one non-NULL value
    assert out[5].total_volume_zscore is None
    assert out[3].total_volume_window_count == 2
    assert out[3].total_volume_zscore == pytest.approx((3.0 - 1.5) / np.std([1.0, 2.0], ddof=1))


def test_with_is_anomaly_threshold_is_inclusive_and_null_safe(spark):
    df = spark.createDataFrame([(3.0,), (-3.0,), (2.999,), (None,)], "z double")
    out = [r.is_anomaly for r in df.transform(with_is_anomaly, zscore_col="z", threshold=3.0).collect()]
    assert out == [True, True, False, False]


def test_with_rolling_zscore_rejects_bad_parameters(spark):
    df = spark.createDataFrame([], VERSIONS_DDL)
    with pytest.raises(ValueError, match="min_periods must be between 2 and window=5, got 6"):
        with_rolling_zscore(df, value_col="total_volume", window=5, min_periods=6)
