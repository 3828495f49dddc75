"""Derived columns and the SCD2 row hash (app/quality/derived.py): null-safe by construction."""

from __future__ import annotations

import pytest

from app.quality.derived import with_derived_columns, with_row_hash


def test_derived_columns_are_null_safe(spark):
    df = spark.createDataFrame(
        [
            (10.0, 2e10, 1e9, 12.0, 8.0, 50.0, 100.0, 20.0, 5.0),
            (10.0, 0.0, 1.0, 12.0, 0.0, 50.0, None, 0.0, 0.0),
            (None, None, None, None, None, None, None, None, None),
            (10.0, 5e9, 1e9, 12.0, 8.0, 50.0, 100.0, 20.0, 5.0),
        ],
        "current_price double, market_cap double, total_volume double, high_24h double, low_24h double, "
        "circulating_supply double, max_supply double, ath double, atl double",
    )
    rows = df.transform(with_derived_columns).collect()

    assert rows[0]["price_volatility_24h"] == pytest.approx(50.0)
    assert rows[0]["market_cap_category"] == "LARGE_CAP"
    assert rows[0]["volume_to_market_cap_ratio"] == pytest.approx(0.05)
    assert rows[0]["supply_percentage"] == pytest.approx(50.0)
    assert rows[0]["distance_from_ath_pct"] == pytest.approx(50.0)
    assert rows[0]["distance_from_atl_pct"] == pytest.approx(100.0)
    assert rows[1]["price_volatility_24h"] is None
    assert rows[1]["market_cap_category"] == "SMALL_CAP"
    assert rows[1]["volume_to_market_cap_ratio"] is None
    assert rows[1]["supply_percentage"] is None
    assert rows[1]["distance_from_ath_pct"] is None
    assert all(
        rows[2][c] is None for c in ("price_volatility_24h", "market_cap_category", "supply_percentage")
    )
    assert rows[3]["market_cap_category"] == "MID_CAP"


def test_row_hash_is_null_safe(spark):
    df = spark.createDataFrame([(1.0, None), (1.0, 2.0), (None, 1.0), (1.0, None)], "a double, b double")
    hashes = [r["row_hash"] for r in df.transform(with_row_hash, tracked_cols=("a", "b")).collect()]

    assert len(set(hashes[:3])) == 3
    assert hashes[0] == hashes[3]
