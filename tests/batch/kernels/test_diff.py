"""Pandas range diff: hand-made inserts/updates/deletes with NULL keys and values, and Spark equivalence."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd

from app.batch.kernels.diff import silver_rows, stage_replacement, with_from_ts
from app.tables import GOLD_METRICS, TABLES

KEYS = ["metric_date", "vs_currency", "market_cap_category"]
D1, D2 = date(2024, 3, 1), date(2024, 3, 2)


def _metrics(rows: list[tuple]) -> pd.DataFrame:
    """(date, currency, category, num_coins, total_market_cap, updated_batch_id) rows."""
    frame = pd.DataFrame(rows, columns=[*KEYS, "num_coins", "total_market_cap", "updated_batch_id"])
    return frame.astype({"num_coins": "int64", "total_market_cap": "float64", "updated_batch_id": "Int64"})


def _records(frame: pd.DataFrame) -> list[tuple]:
    return [tuple(None if pd.isna(v) else v for v in row) for row in frame.itertuples(index=False)]


def test_stage_replacement_inserts_updates_deletes_and_leaves_equal_rows_out():
    nan = float("nan")
    fresh = _metrics(
        [
            (D1, "usd", "LARGE_CAP", 2, nan, 5),  # equal (NaN == NaN: NULL in both): left out
            (D1, "usd", None, 1, 3.0, 5),  # NULL key matched null-safely, equal: left out
            (D1, "usd", "MID_CAP", 4, 2.5, 5),  # a value differs: update
            (D1, "eur", None, 1, 7.0, 5),  # NULL before, a value now: update
            (D2, "usd", "LARGE_CAP", 3, 1.0, 5),  # not there before: insert
            (D2, "eur", "LARGE_CAP", 3, 1.0, 5),  # only the batch id differs: update
        ]
    )
    existing = _metrics(
        [
            (D2, "usd", "SMALL_CAP", 9, 9.0, 1),  # no longer produced: delete
            (D1, "usd", "LARGE_CAP", 2, nan, 5),
            (D1, "usd", None, 1, 3.0, 5),
            (D1, "usd", "MID_CAP", 4, 2.0, 5),
            (D1, "eur", None, 1, nan, 5),
            (D2, "eur", "LARGE_CAP", 3, 1.0, None),
            (D2, "usd", None, 1, 1.0, 1),  # a NULL-key row no longer produced: delete
        ]
    )
    out = stage_replacement(fresh, existing, KEYS, ["num_coins", "total_market_cap", "updated_batch_id"])
    assert list(out.columns) == [*fresh.columns, "_action"]
    assert _records(out) == [
        (D1, "usd", "MID_CAP", 4, 2.5, 5, "update"),
        (D1, "eur", None, 1, 7.0, 5, "update"),
        (D2, "usd", "LARGE_CAP", 3, 1.0, 5, "insert"),
        (D2, "eur", "LARGE_CAP", 3, 1.0, 5, "update"),
        (D2, "usd", "SMALL_CAP", None, None, None, "delete"),
        (D2, "usd", None, None, None, None, "delete"),
    ]
    dtypes = out.dtypes.astype(str).to_dict()
    assert (dtypes["num_coins"], dtypes["total_market_cap"], dtypes["updated_batch_id"]) == (
        "Int64",
        "float64",
        "Int64",
    )
    # Idempotent: the diff of equal frames is empty, with the same columns and dtypes.
    again = stage_replacement(fresh, fresh, KEYS, ["num_coins", "total_market_cap", "updated_batch_id"])
    assert again.empty and again.dtypes.astype(str).to_dict() == dtypes


def test_stage_replacement_compares_only_the_compared_columns_and_handles_empty_sides():
    fresh = _metrics([(D1, "usd", "LARGE_CAP", 2, 1.0, 5)])
    existing = _metrics([(D1, "usd", "LARGE_CAP", 2, 1.0, None)])
    assert stage_replacement(fresh, existing, KEYS, ["num_coins", "total_market_cap"]).empty
    assert list(stage_replacement(fresh, existing.iloc[:0], KEYS, ["num_coins"])["_action"]) == ["insert"]
    deletes = stage_replacement(fresh.iloc[:0], existing, KEYS, ["num_coins"])
    assert _records(deletes) == [(D1, "usd", "LARGE_CAP", None, None, None, "delete")]


def test_stage_replacement_compares_timestamps_and_lists_exactly():
    t = pd.Timestamp("2024-03-01 10:00:00")
    fresh = pd.DataFrame(
        {
            "k": ["a", "b", "c"],
            "ts": pd.Series([t, t, pd.NaT], dtype="datetime64[us]"),
            "obs": [[{"x": 1}], None, [{"x": 2}]],
        }
    )
    existing = pd.DataFrame(
        {
            "k": ["a", "b", "c"],
            "ts": pd.Series([t, t + pd.Timedelta(microseconds=1), pd.NaT], dtype="datetime64[ns]"),
            "obs": [[{"x": 1}], None, [{"x": 3}]],
        }
    )
    out = stage_replacement(fresh, existing, ["k"], ["ts", "obs"])
    assert list(zip(out["k"], out["_action"], strict=True)) == [("b", "update"), ("c", "update")]


def test_with_from_ts_and_silver_rows_join_touched_keys_null_safely():
    t0 = datetime(2024, 3, 1)
    image = pd.DataFrame(
        {
            "coin_id": ["a", "a", "a", "b", None],
            "vs_currency": ["usd"] * 5,
            "valid_from": pd.Series(
                [t0 + timedelta(hours=h) for h in (0, 1, 2, 0, 0)], dtype="datetime64[us]"
            ),
            "current_price": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    touched = pd.DataFrame(
        {
            "coin_id": ["a", None],
            "vs_currency": ["usd", "usd"],
            "from_ts": pd.Series([t0 + timedelta(hours=1), t0], dtype="datetime64[us]"),
        }
    )
    joined = with_from_ts(image, touched)
    assert list(joined.columns) == [*image.columns, "from_ts"] and list(joined["coin_id"]) == ["a"] * 3
    rows = silver_rows(image, touched)
    assert list(rows.columns) == list(image.columns) and list(rows["current_price"]) == [2.0, 3.0]


# --------------------------------------------------------------------------------- against Spark


def _random_pair(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fresh and existing gold_crypto_metrics rows: equal, changed, NULLed, new and gone keys."""
    rng = np.random.default_rng(seed)
    keys = [
        (date(2024, 3, 1) + timedelta(days=d), cur, cat)
        for d in range(40)
        for cur in ("usd", "eur")
        for cat in ("LARGE_CAP", "MID_CAP", "SMALL_CAP", None)
    ]
    n = len(keys)
    columns = list(TABLES[GOLD_METRICS].columns)
    frame = pd.DataFrame(keys, columns=KEYS)
    frame["num_coins"] = rng.integers(1, 50, n)
    for column in columns[4:12]:
        frame[column] = np.where(rng.random(n) < 0.15, np.nan, np.round(rng.lognormal(10, 2, n), 3))
    frame["metric_timestamp"] = (
        pd.Timestamp("2024-03-01") + pd.to_timedelta(rng.integers(0, 10**6, n), unit="s")
    ).astype("datetime64[us]")
    frame["updated_batch_id"] = pd.array(np.where(rng.random(n) < 0.2, None, 7), dtype="Int64")
    frame = frame[columns]

    existing = frame.copy()
    changed = rng.random(n) < 0.3
    which = rng.integers(0, 4, n)
    price = existing["avg_price"].to_numpy(copy=True)
    price[changed & (which == 0)] *= 1.5
    price[changed & (which == 1)] = np.nan
    existing["avg_price"] = price
    coins = existing["num_coins"].to_numpy(copy=True)
    coins[changed & (which == 2)] += 1
    existing["num_coins"] = coins
    batch = existing["updated_batch_id"].copy()
    batch[changed & (which == 3)] = pd.NA
    existing["updated_batch_id"] = batch
    in_fresh = rng.random(n) < 0.85
    in_existing = rng.random(n) < 0.85
    fresh_rows = frame.loc[in_fresh].sample(frac=1.0, random_state=1).reset_index(drop=True)
    return fresh_rows, existing.loc[in_existing].reset_index(drop=True)


def _spark_value(value):
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.integer):
        return int(value)
    return value


def test_stage_replacement_matches_spark(spark):
    from app.batch.frames import collect
    from app.sinks.delta import range_merge
    from app.tables import GOLD_METRICS_DDL

    fresh, existing = _random_pair(29)
    compared = [c for c in fresh.columns if c not in KEYS]

    def to_spark(frame: pd.DataFrame):
        rows = [tuple(_spark_value(v) for v in row) for row in frame.astype(object).itertuples(index=False)]
        return spark.createDataFrame(rows, GOLD_METRICS_DDL)

    expected = collect(range_merge.stage_replacement(to_spark(fresh), to_spark(existing), KEYS, compared))
    actual = stage_replacement(fresh, existing, KEYS, compared)
    assert set(actual["_action"]) == {"insert", "update", "delete"}
    assert len(actual) < len(fresh)  # equal rows are left out

    assert list(actual.columns) == list(expected.columns)
    order = [*KEYS, "_action"]
    actual = actual.sort_values(order, na_position="last", kind="stable").reset_index(drop=True)
    expected = expected.sort_values(order, na_position="last", kind="stable").reset_index(drop=True)
    assert len(actual) == len(expected)
    for column in expected.columns:
        got, want = actual[column], expected[column]
        if pd.api.types.is_float_dtype(want.dtype):
            a, b = got.to_numpy(dtype=float), want.to_numpy(dtype=float)
            assert np.array_equal(a, b, equal_nan=True), column
        else:
            assert (
                got.astype(object).where(got.notna(), None).tolist()
                == want.astype(object).where(want.notna(), None).tolist()
            ), column
