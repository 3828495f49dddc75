"""Pure SQL builders and frame preparation of the Snowflake sink (no connection)."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from app.sinks.warehouse.sql import (
    LEDGER_COLUMNS,
    TARGETS,
    build_ddl,
    build_delete_sql,
    build_ledger_check_sql,
    build_ledger_insert_sql,
    build_merge_sql,
    build_stage_sql,
    build_update_insert_sql,
    build_upsert_sql,
    prepare_frame,
    quote_ident,
    spark_ddl_columns,
    staging_name,
)

SILVER, ANOMALIES, GOLD_METRICS, GOLD_OHLC, METADATA = TARGETS


def _norm(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip()


def assert_sql_contains(sql: str, *fragments: str) -> None:
    """Every fragment occurs in ``sql`` (whitespace-insensitive)."""
    normalized = _norm(sql)
    for fragment in fragments:
        assert _norm(fragment) in normalized, f"{fragment!r} not in {normalized!r}"


@pytest.mark.parametrize(
    "bad",
    ['a"; DROP TABLE x; --', "a.b", "1abc", "", "a b", "a'b", "ä", None, "x" * 256],
)
def test_quote_ident_refuses_injection(bad):
    with pytest.raises(ValueError, match="invalid identifier"):
        quote_ident(bad)


def test_quote_ident_quotes_valid_names():
    assert quote_ident("SILVER_CRYPTO_CLEAN") == '"SILVER_CRYPTO_CLEAN"'
    assert quote_ident("interval") == '"interval"'


def test_spark_ddl_columns_maps_types():
    cols = dict(
        spark_ddl_columns("a STRING, `interval` STRING, m MAP<STRING, BIGINT>, t TIMESTAMP, d DATE, n INT")
    )
    assert cols == {
        "A": "VARCHAR",
        "INTERVAL": "VARCHAR",
        "M": "VARCHAR",
        "T": "TIMESTAMP_NTZ",
        "D": "DATE",
        "N": "NUMBER(38,0)",
    }


def test_targets_mirror_delta_columns():
    silver = dict(SILVER.columns)
    assert silver["VALID_FROM"] == "TIMESTAMP_NTZ"
    assert silver["CURRENT_PRICE"] == "FLOAT"
    assert silver["IS_CURRENT"] == "BOOLEAN"
    assert SILVER.key == ("COIN_ID", "VS_CURRENCY", "VALID_FROM")
    assert dict(GOLD_METRICS.columns)["METRIC_DATE"] == "DATE"
    assert "RETURN" in GOLD_OHLC.column_names and "INTERVAL" in GOLD_OHLC.column_names


def test_build_ddl_is_idempotent_and_covers_every_table():
    ddl = build_ddl()
    assert len(ddl) == 6
    assert all(sql.startswith("CREATE TABLE IF NOT EXISTS") for sql in ddl)
    assert_sql_contains(
        ddl[-1], '"LOAD_LEDGER"', '"APP_ID" VARCHAR', '"BATCH_ID" NUMBER(38,0)', '"LOADED_AT" TIMESTAMP_NTZ'
    )
    assert_sql_contains(ddl[0], '"SILVER_CRYPTO_CLEAN"', '"VALID_FROM" TIMESTAMP_NTZ', '"IS_CURRENT" BOOLEAN')


def test_build_stage_sql_transient_on_snowflake_only():
    assert_sql_contains(build_stage_sql("STG_X", SILVER.columns), 'CREATE OR REPLACE TRANSIENT TABLE "STG_X"')
    assert "TRANSIENT" not in build_stage_sql("STG_X", SILVER.columns, dialect="emulator")


def test_build_merge_sql_upserts_silver_by_scd2_key():
    sql = build_merge_sql(SILVER, "STG_S")
    assert_sql_contains(
        sql,
        'MERGE INTO "SILVER_CRYPTO_CLEAN" t USING "STG_S" s',
        'ON t."COIN_ID" = s."COIN_ID" AND t."VS_CURRENCY" = s."VS_CURRENCY" AND t."VALID_FROM" = s."VALID_FROM"',
        'WHEN MATCHED THEN UPDATE SET t."SYMBOL" = s."SYMBOL"',
        'WHEN NOT MATCHED THEN INSERT ("COIN_ID"',
        'VALUES (s."COIN_ID"',
    )
    # keys are never updated
    assert 't."COIN_ID" = s."COIN_ID",' not in sql


def test_build_delete_sql_limits_to_replaced_range_and_keeps_staged_rows():
    sql = build_delete_sql(SILVER, "STG_S", "STG_T")
    assert_sql_contains(
        sql,
        'DELETE FROM "SILVER_CRYPTO_CLEAN" t WHERE EXISTS (SELECT 1 FROM "STG_T" r WHERE',
        't."VALID_FROM" >= r."FROM_TS"',
        'AND NOT EXISTS (SELECT 1 FROM "STG_S" s WHERE t."COIN_ID" = s."COIN_ID"',
    )
    assert_sql_contains(
        build_delete_sql(GOLD_METRICS, "S", "T"), 't."METRIC_DATE" >= CAST(r."FROM_TS" AS DATE)'
    )
    # A candle's range starts at the bucket holding FROM_TS: its hour for 1h, its day for 1d.
    assert_sql_contains(
        build_delete_sql(GOLD_OHLC, "S", "T"),
        't."BUCKET_START" >= CASE WHEN t."INTERVAL" = \'1h\' THEN DATE_TRUNC(\'HOUR\', r."FROM_TS")',
        "ELSE DATE_TRUNC('DAY', r.\"FROM_TS\") END",
    )
    with pytest.raises(ValueError):
        build_delete_sql(METADATA, "S", "T")


def test_build_upsert_sql_per_dialect():
    assert len(build_upsert_sql(ANOMALIES, "S", dialect="snowflake")) == 1
    update, insert = build_update_insert_sql(ANOMALIES, "S")
    assert build_upsert_sql(ANOMALIES, "S", dialect="emulator") == [update, insert]
    assert_sql_contains(update, 'UPDATE "CRYPTO_ANOMALIES" t SET "VALUE" = s."VALUE"', 'FROM "S" s WHERE')
    # The batch that first flagged an anomaly is written on insert only, as Delta's MERGE does.
    assert '"DETECTED_BATCH_ID" = s.' not in update
    assert 't."DETECTED_BATCH_ID" = s.' not in build_merge_sql(ANOMALIES, "S")
    assert '"DETECTED_BATCH_ID"' in insert
    assert_sql_contains(
        insert, 'INSERT INTO "CRYPTO_ANOMALIES"', 'WHERE NOT EXISTS (SELECT 1 FROM "CRYPTO_ANOMALIES" t'
    )


def test_ledger_sql_binds_every_value():
    insert = build_ledger_insert_sql()
    assert insert.count("%s") == len(LEDGER_COLUMNS)
    assert "'" not in insert
    assert_sql_contains(build_ledger_check_sql(), '"APP_ID" = %s AND "BATCH_ID" = %s')


def test_staging_name_is_valid_and_per_app():
    a, b = (
        staging_name("SILVER_CRYPTO_CLEAN", "coinlake-1"),
        staging_name("SILVER_CRYPTO_CLEAN", "coinlake-2"),
    )
    assert a != b and a == staging_name("SILVER_CRYPTO_CLEAN", "coinlake-1")
    quote_ident(a)


def test_prepare_frame_types_nulls_and_duplicates():
    cols = (
        ("K", "VARCHAR"),
        ("TS", "TIMESTAMP_NTZ"),
        ("X", "FLOAT"),
        ("N", "NUMBER(38,0)"),
        ("B", "BOOLEAN"),
    )
    df = pd.DataFrame(
        {
            "k": ["a", "a", None, "b"],
            "ts": pd.to_datetime(
                ["2024-01-01 00:00", "2024-01-01 00:00", "2024-01-02", "2024-01-01T02:00:00+02:00"],
                format="mixed",
                utc=True,
            ),
            "x": [1.0, 2.0, 3.0, float("nan")],
            "n": [1, 2, 3, None],
            "b": [True, False, None, None],
        }
    )
    out, removed = prepare_frame(df, cols, ("K", "TS"))
    assert removed == 2  # one null key, one duplicate key
    assert list(out.columns) == ["K", "TS", "X", "N", "B"]
    assert out["X"].tolist()[0] == 2.0  # the last duplicate wins
    assert out["TS"].dt.tz is None
    assert out["TS"].tolist()[1] == pd.Timestamp("2024-01-01 00:00")  # +02:00 -> UTC
    assert out["X"].isna().tolist() == [False, True]  # NaN became a NULL
    assert str(out["N"].dtype) == "Int64"


def test_prepare_frame_names_missing_columns():
    with pytest.raises(ValueError, match=r"lacks columns \['Y'\]"):
        prepare_frame(pd.DataFrame({"k": [1]}), (("K", "VARCHAR"), ("Y", "FLOAT")), ("K",))


def test_gold_metrics_key_matches_null_category_null_safely():
    from app.sinks.warehouse.sql import build_delete_sql, build_update_insert_sql

    gold = next(t for t in TARGETS if t.name == "GOLD_CRYPTO_METRICS")
    null_safe = 't."MARKET_CAP_CATEGORY" IS NOT DISTINCT FROM s."MARKET_CAP_CATEGORY"'
    assert null_safe in build_merge_sql(gold, "STG")
    assert null_safe in build_delete_sql(gold, "STG", "TOUCHED")
    assert all(null_safe in sql for sql in build_update_insert_sql(gold, "STG"))
    assert 't."METRIC_DATE" = s."METRIC_DATE"' in build_merge_sql(gold, "STG")
