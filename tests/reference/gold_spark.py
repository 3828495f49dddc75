"""Spark reference versions of the gold aggregates (the pipeline's were moved to pandas kernels).

Kept only as an independent oracle for tests: :mod:`app.batch.kernels.candles` and
:mod:`app.batch.kernels.metrics` must give the same rows (tests/batch/kernels).
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from app.batch.gold import INTERVALS, METRICS_KEYS, OHLC_KEYS
from tests.reference.anomalies_spark import log_return


def filter_last_version_of_day(
    df: DataFrame, *, keys: Sequence[str] = ("coin_id", "vs_currency")
) -> DataFrame:
    """Keep each key's last version of each UTC day, with ``metric_date`` added.

    Args:
        df: silver versions.
        keys: business key.

    Returns:
        One row per (keys, metric_date).
    """
    latest_first = Window.partitionBy(*keys, "metric_date").orderBy(F.col("valid_from").desc())
    return (
        df.withColumn("metric_date", F.to_date("valid_from"))
        .withColumn("_rank", F.row_number().over(latest_first))
        .filter(F.col("_rank") == 1)
        .drop("_rank")
    )


def aggregate_market_metrics(silver_df: DataFrame, *, batch_id: int | None = None) -> DataFrame:
    """Market KPIs per (metric_date, vs_currency, market_cap_category) from silver versions.

    Averages, sums, max and min ignore NULLs (a coin without a market cap still counts in
    ``num_coins``); ``avg_price_change_24h`` averages ``price_change_percentage_24h``, as the
    original design did. A NULL category is its own group.

    Args:
        silver_df: silver versions (any subset of whole days per key gives exact days).
        batch_id: stored as ``updated_batch_id``.

    Returns:
        Rows in the column order of ``app.tables.GOLD_METRICS_DDL``.
    """
    return (
        silver_df.transform(filter_last_version_of_day)
        .groupBy(*METRICS_KEYS)
        .agg(
            F.count(F.lit(1)).alias("num_coins"),
            F.sum("market_cap").alias("total_market_cap"),
            F.sum("total_volume").alias("total_volume_24h"),
            F.avg("current_price").alias("avg_price"),
            F.avg("price_change_percentage_24h").alias("avg_price_change_24h"),
            F.avg("price_volatility_24h").alias("avg_volatility"),
            F.avg("volume_to_market_cap_ratio").alias("avg_volume_ratio"),
            F.max("market_cap").alias("max_market_cap"),
            F.min("market_cap").alias("min_market_cap"),
            F.max("valid_from").alias("metric_timestamp"),
        )
        .withColumn("num_coins", F.col("num_coins").cast("bigint"))
        .withColumn("updated_batch_id", F.lit(batch_id).cast("bigint"))
    )


def explode_buckets(df: DataFrame, *, intervals: Sequence[str] = tuple(INTERVALS)) -> DataFrame:
    """One row per (version, interval) with ``interval`` and ``bucket_start`` of ``valid_from``.

    Args:
        df: silver versions.
        intervals: labels from :data:`INTERVALS`.

    Returns:
        ``df`` repeated per interval, with the two new columns.

    Raises:
        ValueError: an unknown interval label.
    """
    unknown = sorted(set(intervals) - set(INTERVALS))
    if unknown:
        raise ValueError(f"unknown intervals {unknown}; expected some of {sorted(INTERVALS)}")
    exploded = [
        df.withColumn("interval", F.lit(label)).withColumn(
            "bucket_start", F.date_trunc(INTERVALS[label], "valid_from")
        )
        for label in intervals
    ]
    out = exploded[0]
    for part in exploded[1:]:
        out = out.unionByName(part)
    return out


def with_bucket_log_return(
    df: DataFrame, *, price_col: str = "current_price", extra_keys: Sequence[str] = ()
) -> DataFrame:
    """Add ``log_return`` between consecutive priced versions of the same bucket.

    Versions without a positive price sit in their own window partition, so they are skipped
    rather than breaking the chain; their own ``log_return`` is NULL.
    """
    priced = F.coalesce(F.col(price_col) > 0, F.lit(False))
    chain = Window.partitionBy(*OHLC_KEYS, *extra_keys, "_priced").orderBy("valid_from")
    return (
        df.withColumn("_priced", priced)
        .withColumn("log_return", log_return(F.col(price_col), F.lag(price_col).over(chain)))
        .drop("_priced")
    )


def with_has_anomaly(df: DataFrame, anomalies_df: DataFrame, *, extra_keys: Sequence[str] = ()) -> DataFrame:
    """Add ``has_anomaly``: the version was flagged for at least one metric."""
    on = ["coin_id", "vs_currency", *extra_keys, "valid_from"]
    flagged_df = (
        anomalies_df.select("coin_id", "vs_currency", *extra_keys, F.col("observed_at").alias("valid_from"))
        .distinct()
        .withColumn("has_anomaly", F.lit(True))
    )
    return df.join(flagged_df, on, "left").withColumn("has_anomaly", F.coalesce("has_anomaly", F.lit(False)))


def aggregate_coin_ohlc(
    silver_df: DataFrame,
    anomalies_df: DataFrame,
    *,
    intervals: Sequence[str] = tuple(INTERVALS),
    batch_id: int | None = None,
    extra_keys: Sequence[str] = (),
) -> DataFrame:
    """Per-coin candles for each interval from silver versions and the anomaly rows.

    See the module docstring for the definition of every column.

    Args:
        silver_df: silver versions (``coin_id, vs_currency, valid_from, current_price,
            total_volume``); whole buckets give exact candles.
        anomalies_df: ``crypto_anomalies`` rows of the same keys and period.
        intervals: labels from :data:`INTERVALS`.
        batch_id: stored as ``updated_batch_id``.
        extra_keys: columns of both inputs that split the candles further and are kept first in
            the output (e.g. which image of a working set the versions come from).

    Returns:
        Rows in the column order of ``app.tables.GOLD_OHLC_DDL`` (after ``extra_keys``).
    """
    price, volume = F.col("current_price"), F.col("total_volume")
    price_time = F.when(price.isNotNull(), F.col("valid_from"))
    volume_time = F.when(volume.isNotNull(), F.col("valid_from"))
    candles_df = (
        silver_df.select(*extra_keys, "coin_id", "vs_currency", "valid_from", "current_price", "total_volume")
        .transform(with_has_anomaly, anomalies_df, extra_keys=extra_keys)
        .transform(explode_buckets, intervals=intervals)
        .transform(with_bucket_log_return, extra_keys=extra_keys)
        .groupBy(*extra_keys, *OHLC_KEYS)
        .agg(
            F.min_by(price, price_time).alias("open"),
            F.max(price).alias("high"),
            F.min(price).alias("low"),
            F.max_by(price, price_time).alias("close"),
            F.max_by(volume, volume_time).alias("volume"),
            F.count("log_return").alias("_n_returns"),
            F.stddev_samp("log_return").alias("_stddev"),
            F.count(F.lit(1)).cast("bigint").alias("n_obs"),
            F.sum(F.col("has_anomaly").cast("bigint")).alias("n_anomalies"),
        )
    )
    return candles_df.select(
        *extra_keys,
        *OHLC_KEYS,
        "open",
        "high",
        "low",
        "close",
        "volume",
        F.when(F.col("open") > 0, F.col("close") / F.col("open") - 1).alias("return"),
        F.when(F.col("_n_returns") >= 2, F.col("_stddev")).alias("realized_volatility"),
        "n_obs",
        "n_anomalies",
        F.lit(batch_id).cast("bigint").alias("updated_batch_id"),
    )
