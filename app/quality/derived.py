"""Derived silver columns (ARCHITECTURE.md): null-safe, NULL where a value is undefined."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.sql import Column
from pyspark.sql import functions as F

from app.quality.parsing import finite_or_null
from app.tables import TRACKED_COLUMNS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

LARGE_CAP_MIN = 1e10
MID_CAP_MIN = 1e9


def safe_ratio(numerator: Column, denominator: Column, *, scale: float = 1.0) -> Column:
    """``numerator / denominator * scale``, NULL when either is NULL, the denominator is 0 or the
    result is not finite (finite inputs near 1e308 or 5e-324 can overflow to ±Infinity)."""
    return finite_or_null(F.when(denominator != 0, F.try_divide(numerator, denominator)) * F.lit(scale))


def with_price_volatility_24h(df: DataFrame, *, col_name: str = "price_volatility_24h") -> DataFrame:
    """``(high_24h - low_24h) / low_24h * 100``."""
    return df.withColumn(
        col_name, safe_ratio(F.col("high_24h") - F.col("low_24h"), F.col("low_24h"), scale=100.0)
    )


def with_market_cap_category(
    df: DataFrame,
    *,
    col_name: str = "market_cap_category",
    large_min: float = LARGE_CAP_MIN,
    mid_min: float = MID_CAP_MIN,
) -> DataFrame:
    """``LARGE_CAP`` (market_cap >= 1e10), ``MID_CAP`` (>= 1e9), ``SMALL_CAP``; NULL without a market cap."""
    cap = F.col("market_cap")
    category = (
        F.when(cap.isNull(), F.lit(None).cast("string"))
        .when(cap >= large_min, F.lit("LARGE_CAP"))
        .when(cap >= mid_min, F.lit("MID_CAP"))
        .otherwise(F.lit("SMALL_CAP"))
    )
    return df.withColumn(col_name, category)


def with_volume_to_market_cap_ratio(
    df: DataFrame, *, col_name: str = "volume_to_market_cap_ratio"
) -> DataFrame:
    """``total_volume / market_cap``."""
    return df.withColumn(col_name, safe_ratio(F.col("total_volume"), F.col("market_cap")))


def with_supply_percentage(df: DataFrame, *, col_name: str = "supply_percentage") -> DataFrame:
    """``circulating_supply / max_supply * 100`` (NULL for coins without a max supply)."""
    return df.withColumn(col_name, safe_ratio(F.col("circulating_supply"), F.col("max_supply"), scale=100.0))


def with_distance_from_ath_pct(df: DataFrame, *, col_name: str = "distance_from_ath_pct") -> DataFrame:
    """``(ath - current_price) / ath * 100``."""
    return df.withColumn(
        col_name, safe_ratio(F.col("ath") - F.col("current_price"), F.col("ath"), scale=100.0)
    )


def with_distance_from_atl_pct(df: DataFrame, *, col_name: str = "distance_from_atl_pct") -> DataFrame:
    """``(current_price - atl) / atl * 100``."""
    return df.withColumn(
        col_name, safe_ratio(F.col("current_price") - F.col("atl"), F.col("atl"), scale=100.0)
    )


def with_derived_columns(df: DataFrame) -> DataFrame:
    """All six derived columns of silver."""
    return (
        df.transform(with_price_volatility_24h)
        .transform(with_market_cap_category)
        .transform(with_volume_to_market_cap_ratio)
        .transform(with_supply_percentage)
        .transform(with_distance_from_ath_pct)
        .transform(with_distance_from_atl_pct)
    )


def without_negative_zero(col: Column) -> Column:
    """``col`` with −0.0 replaced by 0.0 (they are equal, but their JSON text and hash differ)."""
    return F.when(col == 0, F.lit(0.0)).otherwise(col)


def row_hash(
    tracked_cols: tuple[str, ...] = TRACKED_COLUMNS, *, float_cols: frozenset[str] = frozenset()
) -> Column:
    """SHA-256 of the tracked columns; null-safe (a NULL and a value hash differently).

    ``float_cols`` (the DOUBLE/FLOAT ones) are hashed with −0.0 as 0.0, so a sign-only change of
    zero never opens a new SCD2 version.
    """
    cols = [without_negative_zero(F.col(c)).alias(c) if c in float_cols else F.col(c) for c in tracked_cols]
    # to_json drops NULL fields, so {"a":null} and {"a":1} differ; field order is fixed.
    return F.sha2(F.to_json(F.struct(*cols)), 256)


def with_row_hash(
    df: DataFrame, *, col_name: str = "row_hash", tracked_cols: tuple[str, ...] = TRACKED_COLUMNS
) -> DataFrame:
    """Add the SCD2 change-detection hash of ``tracked_cols``."""
    floats = frozenset(f.name for f in df.schema.fields if f.dataType.typeName() in ("double", "float"))
    return df.withColumn(col_name, row_hash(tracked_cols, float_cols=floats))
