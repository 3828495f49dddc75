from __future__ import annotations

from app.sinks.delta.touched import sql_str, sql_ts


def test_sql_str_escapes_quotes_and_backslashes(spark):
    value = "it's a \\ test"
    assert spark.sql(f"SELECT {sql_str(value)} AS v").first()["v"] == value


def test_sql_ts_round_trips_microseconds_in_utc(spark):
    row = spark.sql(
        f"SELECT date_format({sql_ts('2024-03-01 10:00:00.123456')}, 'yyyy-MM-dd HH:mm:ss.SSSSSS') AS v"
    )
    assert row.first()["v"] == "2024-03-01 10:00:00.123456"
