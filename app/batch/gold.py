"""Gold: market metrics by day and market-cap category, and per-coin candles (pure + thin writer).

Both aggregates are functions of silver *versions* (every SCD2 version, not only ``is_current``):

* ``gold_crypto_metrics`` (:func:`aggregate_market_metrics`): per (metric_date, vs_currency,
  market_cap_category), from each coin's last version of the day (``metric_date =
  date(valid_from)``, UTC). ``metric_timestamp`` is the latest ``valid_from`` used, never load time.
* ``gold_coin_ohlc`` (:func:`aggregate_coin_ohlc`): per (coin_id, vs_currency, interval,
  bucket_start) for ``1h`` and ``1d`` buckets of ``valid_from``.

Candle choices, stated once:

* open/close are the first/last *non-NULL* ``current_price`` by ``valid_from``; high/low ignore
  NULLs; a bucket whose prices are all NULL has NULL prices but still counts its versions.
* ``volume`` is the last non-NULL ``total_volume`` of the bucket (CoinGecko's rolling 24 h volume
  at the bucket's close; summing rolling 24 h volumes would be meaningless).
* ``return`` is ``close / open - 1`` *within* the bucket, so a bucket depends on its own versions
  only and can be recomputed alone (a close-to-close return would make every bucket depend on its
  predecessor, and a late version would ripple into the next bucket).
* ``realized_volatility`` is the sample stddev of the log returns between consecutive priced
  versions inside the bucket (versions with a NULL or non-positive price are skipped); NULL with
  fewer than 2 returns. It is not annualised.
* ``n_anomalies`` is the number of versions in the bucket flagged by any anomaly metric.

The stage computes, per touched key, the buckets from the one holding ``from_ts`` onwards, and per
touched vs_currency the days from ``date(from_ts)`` onwards (docs/DESIGN.md, section 4). Candles come
from the batch's before- and after-image in one plan (:mod:`app.batch.derive`), and their difference
is applied with ONE MERGE. A touched (currency, day) counts every coin, so the after-image alone
gives the whole metrics range, written with ONE ``replaceWhere`` overwrite. Open-ended like the
anomalies range: late data re-scores later anomalies, which changes later buckets' ``n_anomalies``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from app.batch.context import Stage
from app.faults import crash_point
from app.logs import log_event
from app.quality.anomalies import log_return
from app.sinks.delta.range_merge import merge_staged
from app.sinks.delta.touched import sql_str, sql_ts
from app.tables import GOLD_METRICS, GOLD_OHLC, TABLES

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from app.batch.context import BatchContext

logger = logging.getLogger(__name__)

# Interval label -> date_trunc unit.
INTERVALS: dict[str, str] = {"1h": "hour", "1d": "day"}
OHLC_KEYS = TABLES[GOLD_OHLC].keys
METRICS_KEYS = TABLES[GOLD_METRICS].keys


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


# ---------------------------------------------------------------- the stage (thin I/O)


def _metrics_range(days: dict[str, str], alias: str = "") -> str:
    parts = [
        f"({alias}vs_currency = {sql_str(c)} AND {alias}metric_date >= DATE {sql_str(d)})"
        for c, d in sorted(days.items())
    ]
    return "(" + " OR ".join(parts) + ")"


def gold_stage(ctx: BatchContext) -> dict[str, int]:
    """Stage: write the touched candles (MERGE of the difference) and market days (range overwrite).

    The kernels computed both (:mod:`app.batch.kernels.candles`, :mod:`app.batch.kernels.metrics`);
    the two tables are written at the same time (:func:`app.batch.parallel.run_writes`). Candles
    count anomalies from the images' own z-scores, so the stage does not wait for the anomalies stage.

    Args:
        ctx: the batch, with its kernel outputs.

    Returns:
        ``gold_ohlc_rows`` and ``gold_metrics_rows``: the recomputed rows written.
    """
    from app.batch.parallel import run_writes
    from app.sinks.delta.io import replace_range_idempotent

    counts = {"gold_ohlc_rows": 0, "gold_metrics_rows": 0}
    rows = ctx.rows
    if rows is not None:
        listed = ", ".join(sql_str(c) for c in rows.currencies)
        ohlc_bound = (
            f"t.vs_currency IN ({listed}) AND t.bucket_start >= date_trunc('day', {sql_ts(rows.earliest)})"
        )
        candles, metrics = rows.outputs["ohlc_staged"], rows.outputs["metrics_fresh"]
        ctx.outputs[GOLD_OHLC] = rows.outputs["ohlc_fresh"]
        ctx.outputs[GOLD_METRICS] = metrics

        def write_candles(session: SparkSession) -> int:
            # The before-image's candles carry no batch id, so every recomputed candle is written
            # with this batch's stamp; the count comes from the MERGE's own metrics (0 when Delta
            # skipped an already committed batch).
            if candles.count() == 0:
                return 0
            staged_df = candles.spark(session)
            written = merge_staged(
                session,
                ctx.layout.table(GOLD_OHLC),
                staged_df,
                OHLC_KEYS,
                columns=[c for c in staged_df.columns if c != "_action"],
                update_columns=[c for c in staged_df.columns if c != "_action" and c not in OHLC_KEYS],
                target_filter=ohlc_bound,
                app_id=ctx.app_id,
                batch_id=ctx.batch_id,
                source_ready=True,
            )
            return written["insert"] + written["update"]

        def write_metrics(session: SparkSession) -> int:
            # A touched (currency, day) range is recomputed whole from the after-image, over every
            # coin: replacing the range is the whole change, so no before-image rows and no MERGE.
            replace_range_idempotent(
                metrics.spark(session),
                ctx.layout.table(GOLD_METRICS),
                _metrics_range(rows.first_days),
                app_id=ctx.app_id,
                batch_id=ctx.batch_id,
            )
            return metrics.count()

        results, _ = run_writes(
            ctx.spark, {"gold_ohlc_rows": write_candles, "gold_metrics_rows": write_metrics}
        )
        counts.update(results)
    log_event(logger, "gold.done", batch_id=ctx.batch_id, run_id=ctx.run_id, **counts)
    crash_point("after_gold")
    return counts


# Runs with the silver MERGE and the anomalies stage: candles count anomalies from the working
# set's own z-scores, so it requires neither.
GOLD_STAGE = Stage("gold", gold_stage, writes=(GOLD_OHLC, GOLD_METRICS))
