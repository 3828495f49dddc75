"""Total parsing: no value in a record raises; each value a sink cannot hold is a named rule.

Hostile values (issue 19): ranks beyond INT, NaN and ±Infinity, nested values and huge strings where
text belongs, dates outside pandas' nanosecond range. ``warn`` rules leave the field NULL and keep the
record; ``quarantine`` rules send it to ``bronze_quarantine`` with the reason.
"""

from __future__ import annotations

import json
import math

from app.quality.derived import with_derived_columns
from app.quality.expectations import (
    counts_by_action,
    default_rules,
    rule_count_exprs,
    split_valid_invalid,
)
from app.quality.parsing import parse_bronze
from app.tables import MAX_KEY_CHARS, MAX_NAME_CHARS
from tests.helpers import T0, coin_record, iso

FILES_DDL = "value string, source_file string"


def _checked(spark, records):
    page = json.dumps({"request": {"vs_currency": "usd"}, "fetched_at": iso(T0), "data": records})
    rules = default_rules()
    valid_df, quarantine_df = split_valid_invalid(
        parse_bronze(spark.createDataFrame([(page, "p.json")], FILES_DDL)), rules
    )
    return rules, valid_df, quarantine_df


def test_hostile_values_never_raise_and_each_has_a_named_rule(spark):
    records = [
        coin_record("rank-huge", 1.0, T0, market_cap_rank=3e9),
        coin_record("rank-nan", 1.0, T0, market_cap_rank="NaN"),
        coin_record("rank-bigint", 1.0, T0, market_cap_rank=10**30),
        coin_record("ath-year1", 1.0, T0, ath_date="0001-01-01T00:00:00Z"),
        coin_record("atl-9999", 1.0, T0, atl_date="9999-12-31T23:59:59+05:00"),
        coin_record("high-inf", 1.0, T0, high_24h=float("inf")),
        coin_record("ath-nan", 1.0, T0, ath=float("nan"), atl="-Infinity"),
        coin_record("name-obj", 1.0, T0, name={"en": "x"}),
        coin_record("name-huge", 1.0, T0, name="n" * (MAX_NAME_CHARS + 1)),
        coin_record(
            "tiny",
            1.0,
            T0,
            current_price=1e308,
            market_cap=1e300,
            total_volume=5e-324,
            low_24h=5e-324,
            high_24h=1e308,
            atl=5e-324,
            ath=1e-300,
        ),
        coin_record("cap-inf", 1.0, T0, market_cap=float("inf")),
        coin_record("vol-nan", 1.0, T0, total_volume="NaN"),
        {**coin_record("lu-9999", 1.0, T0), "last_updated": "9999-01-01T00:00:00Z"},
        {**coin_record("lu-year1", 1.0, T0), "last_updated": "0001-01-01T00:00:00Z"},
        coin_record("k" * (MAX_KEY_CHARS + 1), 1.0, T0),
        coin_record("price-big-int", 1.0, T0, current_price=10**400),
    ]
    rules, valid_df, quarantine_df = _checked(spark, records)
    valid = {r["coin_id"]: r for r in valid_df.transform(with_derived_columns).collect()}
    bad = {r["coin_id"][:20]: r for r in quarantine_df.collect()}

    kept = {"rank-huge", "rank-nan", "rank-bigint", "ath-year1", "atl-9999", "high-inf", "ath-nan"}
    assert kept | {"name-obj", "name-huge", "tiny"} == set(valid)
    for coin in ("rank-huge", "rank-nan", "rank-bigint"):
        assert valid[coin]["market_cap_rank"] is None
        assert valid[coin]["dq_market_cap_rank_out_of_range"], valid[coin]
    assert valid["ath-year1"]["ath_date"] is None
    assert "found 0001-01-01" in valid["ath-year1"]["dq_ath_date_out_of_range"]
    assert valid["atl-9999"]["atl_date"] is None and valid["atl-9999"]["dq_atl_date_out_of_range"]
    assert valid["high-inf"]["high_24h"] is None and valid["high-inf"]["dq_high_24h_not_finite"]
    assert valid["ath-nan"]["ath"] is None and valid["ath-nan"]["atl"] is None
    assert valid["ath-nan"]["dq_ath_not_finite"] and valid["ath-nan"]["dq_atl_not_finite"]
    assert valid["name-obj"]["name"] is None and valid["name-obj"]["dq_name_not_text"]
    assert valid["name-huge"]["name"] is None and valid["name-huge"]["dq_name_too_long"]
    derived = ("price_volatility_24h", "distance_from_ath_pct", "distance_from_atl_pct")
    for row in valid.values():
        for col in derived + ("volume_to_market_cap_ratio", "supply_percentage"):
            assert row[col] is None or math.isfinite(row[col]), (row["coin_id"], col, row[col])

    assert "market_cap_not_finite" in bad["cap-inf"]["failed_rules"]
    assert "total_volume_not_finite" in bad["vol-nan"]["failed_rules"]
    assert "last_updated_out_of_range" in bad["lu-9999"]["failed_rules"]
    assert "last_updated_out_of_range" in bad["lu-year1"]["failed_rules"]
    assert bad["k" * 20]["failed_rules"] == ["coin_id_too_long"]
    assert "current_price_not_finite" in bad["price-big-int"]["failed_rules"]
    assert all(r["errors"] for r in bad.values())

    stats = valid_df.unionByName(quarantine_df).agg(*rule_count_exprs(rules)).first().asDict()
    by_action = counts_by_action(stats, rules)
    assert by_action["warn"]["market_cap_rank_out_of_range"] == 3
    assert by_action["warn"]["ath_date_out_of_range"] == 1
    assert by_action["quarantine"]["last_updated_out_of_range"] == 2


def test_default_rules_actions_are_warn_or_quarantine_and_names_unique():
    rules = default_rules()
    assert len({r.name for r in rules}) == len(rules)
    assert {r.action for r in rules} <= {"warn", "quarantine"}


def test_rolling_zscore_is_never_nan_or_infinite(spark):
    from pyspark.sql import functions as F

    from tests.reference.anomalies_spark import log_return, with_rolling_zscore

    # Finite values near 1e308 overflow the window's sums: mean/stddev become Infinity or NaN.
    values = [1e308, -1e308] * 3 + [1e308, 5e-324, 0.0]
    rows = [("c", i, v) for i, v in enumerate(values)]
    df = spark.createDataFrame(rows, "coin_id string, t int, x double").withColumn(
        "r", log_return(F.lit(1e308), F.lit(5e-324))
    )
    out = df.transform(
        with_rolling_zscore, value_col="x", keys=("coin_id",), order_col="t", window=4, min_periods=2
    ).collect()
    assert all(r["r"] is None for r in out)
    assert all(r["x_zscore"] is None or math.isfinite(r["x_zscore"]) for r in out), out
