"""Pandas z-score kernels: hand-computed cases, the slice property, and equivalence with Spark."""

from __future__ import annotations

import math
import statistics
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from app.batch.kernels.scores import (
    PRICE_RETURN_METRIC,
    VOLUME_METRIC,
    anomaly_rows,
    detect_anomalies,
    explode_anomalies,
    score_versions,
    scored_versions,
)
from app.tables import ANOMALIES, TABLES
from tests.batch.kernels.checks import assert_close

T0 = datetime(2024, 1, 1)
VERSIONS_DDL = (
    "coin_id string, vs_currency string, valid_from timestamp, current_price double, total_volume double"
)
SCORE_COLUMNS = [
    f"{p}_{s}"
    for p in (PRICE_RETURN_METRIC, "total_volume")
    for s in ("window_mean", "window_stddev", "window_count", "zscore")
]


def _versions(rows: list[tuple]) -> pd.DataFrame:
    """(coin_id, minute, price, volume[, vs_currency]) tuples as a versions frame (microsecond times)."""
    return pd.DataFrame(
        {
            "coin_id": [r[0] for r in rows],
            "vs_currency": [r[4] if len(r) > 4 else "usd" for r in rows],
            "valid_from": pd.Series([T0 + timedelta(minutes=r[1]) for r in rows], dtype="datetime64[us]"),
            "current_price": np.array([np.nan if r[2] is None else r[2] for r in rows], dtype=float),
            "total_volume": np.array([np.nan if r[3] is None else r[3] for r in rows], dtype=float),
        }
    )


def _nan_list(values) -> list:
    return [None if isinstance(v, float) and math.isnan(v) else v for v in values]


# --------------------------------------------------------------------------------- hand-computed


def test_price_return_null_zero_and_negative_prices_give_null_and_are_not_skipped():
    prices = [100.0, None, 110.0, 121.0, 0.0, 133.1, -5.0, 10.0]
    rows = [("c", i, p, None) for i, p in enumerate(prices)] + [("d", 0, 50.0, None)]
    out = score_versions(_versions(rows), window=3, min_periods=2)
    assert list(out["coin_id"]) == ["c"] * 8 + ["d"]
    returns = _nan_list(out["price_return"])
    assert returns[:4] == [None, None, None, pytest.approx(math.log(1.1))]
    assert returns[4:] == [None] * 5  # zero/negative price: no return either side; a new key
    assert out["price_return"].dtype == np.float64


def test_score_versions_sorts_by_key_and_time_and_keeps_extra_columns():
    rows = [("b", 2, 2.0, 1.0), ("a", 1, 1.0, 1.0), ("b", 1, 1.0, 1.0), ("a", 0, 1.0, 1.0)]
    frame = _versions(rows).assign(from_ts=pd.Timestamp("2024-01-01"))
    out = score_versions(frame, window=2, min_periods=2)
    assert list(zip(out["coin_id"], out["valid_from"].dt.minute, strict=True)) == [
        ("a", 0),
        ("a", 1),
        ("b", 1),
        ("b", 2),
    ]
    assert list(out.columns) == [*frame.columns, PRICE_RETURN_METRIC, *SCORE_COLUMNS]
    assert out["price_return"].iloc[3] == pytest.approx(math.log(2.0))
    for column in SCORE_COLUMNS:
        assert out[column].dtype == (np.int32 if column.endswith("_count") else np.float64)


def test_rolling_window_ignores_nulls_and_counts_non_null_values():
    values = [1.0, 2.0, None, 3.0, None, 10.0]
    out = score_versions(_versions([("c", i, 1.0, v) for i, v in enumerate(values)]), window=3, min_periods=2)
    assert list(out["total_volume_window_count"]) == [0, 1, 2, 2, 2, 1]
    assert _nan_list(out["total_volume_window_mean"]) == [None, 1.0, 1.5, 1.5, 2.5, 3.0]
    sd12 = statistics.stdev([1.0, 2.0])
    assert _nan_list(out["total_volume_window_stddev"])[:5] == [
        None,
        None,
        sd12,
        sd12,
        statistics.stdev([2.0, 3.0]),
    ]
    assert math.isnan(out["total_volume_window_stddev"].iloc[5])  # one value: no sample stddev
    z = _nan_list(out["total_volume_zscore"])
    assert z[3] == pytest.approx((3.0 - 1.5) / sd12, rel=1e-15)
    assert z[:3] == [None, None, None]  # empty window, one value, NULL value
    assert z[4:] == [None, None]  # NULL value; a window with one value (< min_periods)


def test_rolling_window_is_capped_at_w_rows():
    out = score_versions(
        _versions([("c", i, 1.0, v) for i, v in enumerate([1.0, 2.0, 3.0, 10.0])]), window=2, min_periods=2
    )
    assert list(out["total_volume_window_count"]) == [0, 1, 2, 2]
    assert out["total_volume_window_mean"].iloc[3] == 2.5
    assert out["total_volume_zscore"].iloc[3] == pytest.approx(7.5 / statistics.stdev([2.0, 3.0]), rel=1e-15)


def test_min_periods_boundary():
    out = score_versions(
        _versions([("c", i, 1.0, float(v)) for i, v in enumerate([1, 2, 4, 8, 100])]),
        window=10,
        min_periods=4,
    )
    assert list(out["total_volume_window_count"]) == [0, 1, 2, 3, 4]
    assert [math.isnan(z) for z in out["total_volume_zscore"]] == [True, True, True, True, False]
    expected = (100 - 3.75) / statistics.stdev([1.0, 2.0, 4.0, 8.0])
    assert out["total_volume_zscore"].iloc[4] == pytest.approx(expected, rel=1e-14)


def test_constant_window_has_stddev_exactly_zero_and_no_score():
    # 0.1 is not a binary fraction: a sum-based variance would leave a tiny non-zero stddev.
    rows = [("c", i, 5.0, 0.1) for i in range(30)]
    out = score_versions(_versions(rows), window=10, min_periods=3)
    assert set(out["total_volume_window_stddev"].iloc[2:]) == {0.0}
    assert set(out["price_return_window_stddev"].iloc[3:]) == {0.0}  # returns of a flat price are 0
    assert out["total_volume_zscore"].isna().all() and out["price_return_zscore"].isna().all()


def test_score_versions_rejects_bad_parameters():
    frame = _versions([])
    with pytest.raises(ValueError, match="min_periods must be between 2 and window=5, got 6"):
        score_versions(frame, window=5, min_periods=6)
    with pytest.raises(ValueError, match="min_periods must be between 2 and window=5, got 1"):
        score_versions(frame, window=5, min_periods=1)
    with pytest.raises(ValueError, match="window must be >= 1, got 0"):
        score_versions(frame, window=0, min_periods=2)


def _scored_by_hand(z_price: list[float], z_volume: list[float]) -> pd.DataFrame:
    n = len(z_price)
    return pd.DataFrame(
        {
            "coin_id": ["c"] * n,
            "vs_currency": ["usd"] * n,
            "valid_from": pd.Series([T0 + timedelta(minutes=i) for i in range(n)], dtype="datetime64[us]"),
            "total_volume": np.arange(n, dtype=float) + 100.0,
            PRICE_RETURN_METRIC: np.arange(n, dtype=float) / 100,
            "price_return_window_mean": np.zeros(n),
            "price_return_window_stddev": np.ones(n),
            "price_return_window_count": np.full(n, 7, dtype=np.int32),
            "price_return_zscore": z_price,
            "total_volume_window_mean": np.full(n, 50.0),
            "total_volume_window_stddev": np.full(n, 2.0),
            "total_volume_window_count": np.full(n, 9, dtype=np.int32),
            "total_volume_zscore": z_volume,
        }
    )


def test_explode_anomalies_threshold_is_inclusive_and_null_safe():
    nan = float("nan")
    scored = _scored_by_hand([3.0, -3.0, 2.999, nan], [nan, nan, nan, -4.0])
    out = explode_anomalies(scored, threshold=3.0, batch_id=12)
    assert list(out.columns) == list(TABLES[ANOMALIES].columns)
    assert out.to_dict("records") == [
        {
            "coin_id": "c",
            "vs_currency": "usd",
            "observed_at": pd.Timestamp(T0),
            "metric": "price_return",
            "value": 0.0,
            "window_mean": 0.0,
            "window_stddev": 1.0,
            "z_score": 3.0,
            "window_size": 7,
            "threshold": 3.0,
            "detected_batch_id": 12,
        },
        {
            "coin_id": "c",
            "vs_currency": "usd",
            "observed_at": pd.Timestamp(T0 + timedelta(minutes=1)),
            "metric": "price_return",
            "value": 0.01,
            "window_mean": 0.0,
            "window_stddev": 1.0,
            "z_score": -3.0,
            "window_size": 7,
            "threshold": 3.0,
            "detected_batch_id": 12,
        },
        {
            "coin_id": "c",
            "vs_currency": "usd",
            "observed_at": pd.Timestamp(T0 + timedelta(minutes=3)),
            "metric": "volume",
            "value": 103.0,
            "window_mean": 50.0,
            "window_stddev": 2.0,
            "z_score": -4.0,
            "window_size": 9,
            "threshold": 3.0,
            "detected_batch_id": 12,
        },
    ]
    dtypes = out.dtypes.astype(str).to_dict()
    assert dtypes["observed_at"] == "datetime64[us]"
    assert (dtypes["window_size"], dtypes["detected_batch_id"]) == ("int32", "Int64")
    assert explode_anomalies(scored, threshold=3.0, batch_id=None)["detected_batch_id"].isna().all()


def test_explode_anomalies_of_no_rows_has_the_table_schema():
    out = explode_anomalies(_scored_by_hand([], []), threshold=3.0, batch_id=1)
    assert out.empty and list(out.columns) == list(TABLES[ANOMALIES].columns)
    assert str(out["detected_batch_id"].dtype) == "Int64"


def test_anomaly_rows_keep_touched_keys_from_their_from_ts():
    nan = float("nan")
    scored = pd.concat(
        [
            _scored_by_hand([5.0, 5.0, 5.0], [nan] * 3),
            _scored_by_hand([5.0], [nan]).assign(coin_id="untouched"),
            _scored_by_hand([5.0], [nan]).assign(coin_id=None),
        ],
        ignore_index=True,
    )
    touched = pd.DataFrame(
        {
            "coin_id": ["c", None],
            "vs_currency": ["usd", "usd"],
            "from_ts": pd.Series([T0 + timedelta(minutes=1), T0], dtype="datetime64[us]"),
        }
    )
    out = anomaly_rows(scored, touched, threshold=3.0, batch_id=4)
    assert list(out["coin_id"]) == ["c", "c"]  # a NULL key matches nothing, as in a Spark join
    assert list(out["observed_at"].dt.minute) == [1, 2]
    # Without touched: the scored frame's own from_ts.
    own = scored.assign(from_ts=pd.Timestamp(T0 + timedelta(minutes=2)))
    assert list(anomaly_rows(own, None, threshold=3.0, batch_id=4)["observed_at"].dt.minute) == [2]


def test_scored_versions_joins_touched_and_scores():
    image = _versions([("c", i, 1.0 + i, 1.0) for i in range(5)] + [("x", 0, 1.0, 1.0)])
    image["market_cap"] = 3.0  # not a scored column
    touched = pd.DataFrame({"coin_id": ["c"], "vs_currency": ["usd"], "from_ts": [pd.Timestamp(T0)]})
    out = scored_versions(image, touched, window=3, min_periods=2)
    assert set(out["coin_id"]) == {"c"} and "market_cap" not in out.columns
    assert (out["from_ts"] == pd.Timestamp(T0)).all()
    assert out["price_return"].iloc[1] == pytest.approx(math.log(2.0))


# --------------------------------------------------------------------------------- slice property


def _random_versions(seed: int, n_per_key: int, keys: list[tuple[str, str]]) -> pd.DataFrame:
    """Random-walk prices and log-normal volumes, with NULLs, runs of equal prices and zero prices."""
    rng = np.random.default_rng(seed)
    frames = []
    for coin, currency in keys:
        returns = rng.normal(0.0, 0.01, n_per_key)
        returns[rng.random(n_per_key) < 0.2] = 0.0  # duplicated prices
        returns[rng.choice(n_per_key, 3, replace=False)] = 0.3  # jumps
        prices = 100.0 * np.exp(np.cumsum(returns))
        prices[rng.random(n_per_key) < 0.05] = np.nan
        prices[rng.choice(n_per_key, 2, replace=False)] = 0.0
        volumes = np.round(np.exp(rng.normal(20.0, 0.3, n_per_key)), 1)
        volumes[rng.random(n_per_key) < 0.05] = np.nan
        volumes[rng.choice(n_per_key, 2, replace=False)] *= 8.0
        minutes = np.cumsum(rng.integers(1, 30, n_per_key))
        frames.append(
            pd.DataFrame(
                {
                    "coin_id": coin,
                    "vs_currency": currency,
                    "valid_from": (pd.Timestamp(T0) + pd.to_timedelta(minutes, unit="min")).astype(
                        "datetime64[us]"
                    ),
                    "current_price": prices,
                    "total_volume": volumes,
                }
            )
        )
    rows = pd.concat(frames, ignore_index=True)
    return rows.iloc[rng.permutation(len(rows))].reset_index(drop=True)


KEYS = [("bitcoin", "usd"), ("bitcoin", "eur"), ("ethereum", "usd"), ("solana", "usd")]


def test_scoring_a_trailing_slice_is_bit_identical_to_the_whole_history():
    window, min_periods = 20, 5
    history = _random_versions(3, 300, KEYS)
    whole = score_versions(history, window=window, min_periods=min_periods)
    for point in (window + 1, 57, 150, 299):
        # Per key: from W + 1 versions before the point on.
        ranked = (
            history.groupby(["coin_id", "vs_currency"])["valid_from"].rank(method="first").astype(int) - 1
        )
        sliced = score_versions(
            history.loc[ranked >= point - window - 1], window=window, min_periods=min_periods
        )
        whole_rank = whole.groupby(["coin_id", "vs_currency"]).cumcount()
        sliced_rank = sliced.groupby(["coin_id", "vs_currency"]).cumcount() + (point - window - 1)
        expected = whole.loc[whole_rank >= point].reset_index(drop=True)
        actual = sliced.loc[sliced_rank >= point].reset_index(drop=True)
        assert len(actual) == len(KEYS) * (300 - point)
        pd.testing.assert_frame_equal(actual, expected, check_exact=True)


def test_scores_do_not_depend_on_the_input_row_order():
    history = _random_versions(5, 120, KEYS)
    first = score_versions(history, window=15, min_periods=4)
    again = score_versions(history.iloc[::-1], window=15, min_periods=4)
    pd.testing.assert_frame_equal(first, again, check_exact=True)


# --------------------------------------------------------------------------------- against Spark


def _spark_rows(frame: pd.DataFrame) -> list[tuple]:
    return [
        (
            r.coin_id,
            r.vs_currency,
            r.valid_from.to_pydatetime(),
            None if math.isnan(r.current_price) else float(r.current_price),
            None if math.isnan(r.total_volume) else float(r.total_volume),
        )
        for r in frame.itertuples()
    ]


def test_score_versions_and_detect_anomalies_match_spark(spark):
    from app.batch.frames import collect
    from tests.reference import anomalies_spark as spark_anomalies

    window, min_periods, threshold = 20, 5, 2.5
    history = _random_versions(11, 250, KEYS)
    source_df = spark.createDataFrame(_spark_rows(history), VERSIONS_DDL)

    expected = collect(spark_anomalies.score_versions(source_df, window=window, min_periods=min_periods))
    actual = score_versions(history, window=window, min_periods=min_periods)
    keys = ["coin_id", "vs_currency", "valid_from"]
    expected = expected.astype({c: "int32" for c in expected.columns if c.endswith("_count")})
    assert_close(actual, expected, keys)
    assert actual["price_return_zscore"].notna().sum() > 800

    expected_rows = collect(
        spark_anomalies.detect_anomalies(
            source_df, window=window, min_periods=min_periods, threshold=threshold, batch_id=9
        )
    )
    actual_rows = detect_anomalies(
        history, window=window, min_periods=min_periods, threshold=threshold, batch_id=9
    )
    assert len(actual_rows) > 20 and set(actual_rows["metric"]) == {PRICE_RETURN_METRIC, VOLUME_METRIC}
    assert_close(
        actual_rows,
        expected_rows.astype({"window_size": "int32"}),
        ["coin_id", "vs_currency", "observed_at", "metric"],
    )
