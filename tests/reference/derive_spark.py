"""Spark reference of the per-key rows a batch derives (the pipeline's are :mod:`app.batch.kernels`).

Kept only as an oracle for tests. Originally: per-key computations over a batch's working set.

Each function is pure (DataFrame in, DataFrame out) and runs on the executors. Applied to the
after-image of the working set (:mod:`app.sinks.delta.working_set`) they give the rows the derived tables
must hold in the batch's replaced ranges; applied to the before-image, the rows those ranges held
before the batch. The difference of the two (:func:`app.sinks.delta.range_merge.stage_replacement`) is
what a stage writes, so no stage reads its own table to find what changed.

The replaced ranges, per touched key with ``from_ts`` (docs/DESIGN.md, section 4):

* anomalies: ``observed_at >= from_ts`` (a late observation re-scores the ``W`` after it);
* candles: buckets from the one holding ``from_ts`` (``1h``: its hour, ``1d``: its day);
* daily metrics: per touched vs_currency every day from its first touched day, over every coin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from app.tables import SILVER_KEYS
from tests.reference.anomalies_spark import explode_anomalies, score_versions
from tests.reference.gold_spark import aggregate_coin_ohlc, aggregate_market_metrics

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

SCORED_COLUMNS = ("coin_id", "vs_currency", "valid_from", "current_price", "total_volume")
CANDLE_COLUMNS = ("coin_id", "vs_currency", "valid_from", "current_price", "total_volume")


def first_bucket(interval_col: str = "interval", ts: str = "from_ts") -> Column:
    """The first bucket a key's range replaces: the hour (``1h``) or day (``1d``) holding ``from_ts``."""
    return F.when(F.col(interval_col) == "1h", F.date_trunc("hour", ts)).otherwise(F.date_trunc("day", ts))


def scored_versions(
    image_df: DataFrame, touched_df: DataFrame, *, window: int, min_periods: int
) -> DataFrame:
    """The touched keys' versions of an image with both z-scores, and ``from_ts``.

    Scores are exact for versions with ``W + 1`` versions (or the key's whole history) before them
    in the image: the working set guarantees that from each key's first touched day on.
    """
    return (
        image_df.select(*SCORED_COLUMNS)
        .join(touched_df.select(*SILVER_KEYS, "from_ts"), list(SILVER_KEYS))
        .transform(score_versions, window=window, min_periods=min_periods)
    )


def score_images(
    image_after: DataFrame, image_before: DataFrame, touched_df: DataFrame, *, window: int, min_periods: int
) -> tuple[DataFrame, DataFrame]:
    """:func:`scored_versions` of both images in one pass, each held by the executors.

    The image is part of the window key, so one plan scores both. The result is checkpointed:
    every later frame of the batch (anomaly rows, candles, their differences) starts from it, and
    building those on the scoring plan itself made Spark re-analyse it for every step (seconds
    per step, measured: docs/BENCHMARKS.md).

    Returns:
        ``(after_df, before_df)``.
    """
    from app.sinks.delta.io import stable_source

    both_df = (
        image_after.select(*SCORED_COLUMNS, F.lit(True).alias("_after"))
        .unionByName(image_before.select(*SCORED_COLUMNS, F.lit(False).alias("_after")))
        .join(touched_df.select(*SILVER_KEYS, "from_ts"), list(SILVER_KEYS))
        .transform(score_versions, window=window, min_periods=min_periods, keys=(*SILVER_KEYS, "_after"))
    )
    scored_df = stable_source(both_df)
    return (
        scored_df.filter(F.col("_after")).drop("_after"),
        scored_df.filter(~F.col("_after")).drop("_after"),
    )


def anomaly_rows(scored_df: DataFrame, *, threshold: float, batch_id: int | None) -> DataFrame:
    """``crypto_anomalies`` rows of the replaced ranges (``observed_at >= from_ts`` per key)."""
    return scored_df.filter(F.col("valid_from") >= F.col("from_ts")).transform(
        explode_anomalies, threshold=threshold, batch_id=batch_id
    )


def candle_rows(
    image_df: DataFrame,
    scored_df: DataFrame,
    touched_df: DataFrame,
    *,
    threshold: float,
    batch_id: int | None,
) -> DataFrame:
    """``gold_coin_ohlc`` rows of the replaced buckets, with ``n_anomalies`` from the image's scores.

    Args:
        image_df: the before- or after-image.
        scored_df: :func:`scored_versions` of the same image.
        touched_df: the touched keys with ``from_ts``.
        threshold: the anomaly threshold.
        batch_id: ``updated_batch_id`` of the rows.

    Returns:
        Rows in the column order of ``app.tables.GOLD_OHLC_DDL``.
    """
    ranges = touched_df.select(*SILVER_KEYS, "from_ts")
    day_start = F.date_trunc("day", "from_ts")
    versions_df = (
        image_df.select(*CANDLE_COLUMNS)
        .join(ranges, list(SILVER_KEYS))
        .filter(F.col("valid_from") >= day_start)
        .drop("from_ts")
    )
    flagged_df = scored_df.filter(F.col("valid_from") >= day_start).transform(
        explode_anomalies, threshold=threshold
    )
    return (
        aggregate_coin_ohlc(versions_df, flagged_df, batch_id=batch_id)
        .join(ranges, list(SILVER_KEYS))
        .filter(F.col("bucket_start") >= first_bucket())
        .drop("from_ts")
    )


IMAGE_COL = "_after"


def candle_images(
    images: dict[bool, DataFrame],
    scored: dict[bool, DataFrame],
    touched_df: DataFrame,
    *,
    threshold: float,
    batch_id: int,
) -> DataFrame:
    """:func:`candle_rows` of both images in ONE plan, keyed by ``_after`` (True: the after-image).

    One aggregation over the union instead of one per image: half the plans to analyse and one
    checkpoint instead of two (docs/BENCHMARKS.md). The after-image's rows carry ``batch_id`` as
    ``updated_batch_id``, the before-image's NULL, so every recomputed candle differs from its old
    row and is written with this batch's stamp, as one image at a time did.

    Args:
        images: ``{True: after_df, False: before_df}``.
        scored: :func:`scored_versions` of the same images, same keys.
        touched_df: the touched keys with ``from_ts``.
        threshold: the anomaly threshold.
        batch_id: the batch.

    Returns:
        ``_after`` then the columns of ``app.tables.GOLD_OHLC_DDL``.
    """
    ranges = touched_df.select(*SILVER_KEYS, "from_ts")
    day_start = F.date_trunc("day", "from_ts")
    versions_df = (
        images[True]
        .select(*CANDLE_COLUMNS, F.lit(True).alias(IMAGE_COL))
        .unionByName(images[False].select(*CANDLE_COLUMNS, F.lit(False).alias(IMAGE_COL)))
        .join(ranges, list(SILVER_KEYS))
        .filter(F.col("valid_from") >= day_start)
        .drop("from_ts")
    )
    flagged = [
        scored[after]
        .filter(F.col("valid_from") >= day_start)
        .transform(explode_anomalies, threshold=threshold)
        .withColumn(IMAGE_COL, F.lit(after))
        for after in (True, False)
    ]
    stamp = F.when(F.col(IMAGE_COL), F.lit(batch_id)).cast("bigint")
    return (
        aggregate_coin_ohlc(versions_df, flagged[0].unionByName(flagged[1]), extra_keys=(IMAGE_COL,))
        .withColumn("updated_batch_id", stamp)
        .join(ranges, list(SILVER_KEYS))
        .filter(F.col("bucket_start") >= first_bucket())
        .drop("from_ts")
    )


def image_rows(images_df: DataFrame, after: bool) -> DataFrame:
    """One image's rows of a frame keyed by ``_after`` (:func:`candle_images`), without the key."""
    return images_df.filter(F.col(IMAGE_COL) == after).drop(IMAGE_COL)


def metric_rows(image_df: DataFrame, first_days: dict[str, str], *, batch_id: int | None) -> DataFrame:
    """``gold_crypto_metrics`` rows of every touched (vs_currency, day on or after its first touched day)."""
    wanted = F.lit(False)
    for currency, day in sorted(first_days.items()):
        wanted = wanted | (
            (F.col("vs_currency") == currency) & (F.col("valid_from") >= F.to_timestamp(F.lit(day)))
        )
    return aggregate_market_metrics(image_df.filter(wanted), batch_id=batch_id)


def silver_rows(image_df: DataFrame, touched_df: DataFrame) -> DataFrame:
    """Silver rows of the replaced ranges (``valid_from >= from_ts`` per touched key)."""
    return (
        image_df.join(touched_df.select(*SILVER_KEYS, "from_ts"), list(SILVER_KEYS))
        .filter(F.col("valid_from") >= F.col("from_ts"))
        .drop("from_ts")
    )
