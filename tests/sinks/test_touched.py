"""Touched-set helpers: exact timestamp round trips and safe SQL literals."""

from __future__ import annotations

from datetime import datetime

from app.sinks.touched import collect_touched, sql_str, touched_frame


def test_collect_touched_round_trips_microseconds_and_keeps_earliest_from_ts(spark):
    ts = datetime(2024, 3, 1, 12, 0, 0, 123456)
    touched_df = spark.createDataFrame(
        [("a", "usd", ts, ts), ("a", "usd", datetime(2024, 3, 2), ts), ("b", "eur", None, None)],
        "coin_id string, vs_currency string, from_ts timestamp, to_ts timestamp",
    )
    keys = collect_touched(touched_df)
    assert [(k.coin_id, k.vs_currency, k.from_ts) for k in keys] == [
        ("a", "usd", "2024-03-01 12:00:00.123456")
    ]
    assert touched_frame(spark, keys).collect()[0].from_ts == ts


def test_sql_str_escapes_quotes_and_backslashes(spark):
    value = "it's a \\ test"
    assert spark.sql(f"SELECT {sql_str(value)} AS v").collect()[0].v == value
