"""Windowed z-score anomaly detection over silver versions (ARCHITECTURE.md, "Anomalies").

Per business key, over the SCD2 versions ordered by ``valid_from``:

* ``price_return``: the log return ``ln(p_t / p_{t-1})`` of ``current_price`` between consecutive
  versions;
* ``volume``: ``total_volume`` itself.

For each metric ``z_t = (x_t - mean) / stddev`` where mean and *sample* stddev are taken over the
``W`` previous rows (``rowsBetween(-W, -1)``: the window excludes ``x_t``). NULL values inside the
window are ignored by the aggregates, exactly like pandas'
``s.shift(1).rolling(W, min_periods).mean()/std()``: the window is W *rows* and
``min_periods`` counts its non-NULL values. No score when fewer than ``min_periods`` values are
available or the stddev is 0. An observation is flagged when ``|z| >= threshold``.

Every function here is pure (DataFrame in, DataFrame out, no I/O). The window frames are
recomputed from their rows in ``valid_from`` order, so a score only depends on the set of
versions in the frame: scoring a trailing slice of history gives bit-identical numbers to
scoring the whole history, which is what lets the sink replace ranges incrementally.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from app.quality.parsing import finite_or_null
from app.tables import ANOMALIES, SILVER_KEYS, TABLES

PRICE_RETURN_METRIC = "price_return"
VOLUME_METRIC = "volume"
ANOMALY_KEYS = TABLES[ANOMALIES].keys
ANOMALY_VALUE_COLUMNS = ("value", "window_mean", "window_stddev", "z_score", "window_size", "threshold")


def log_return(price: Column, previous_price: Column) -> Column:
    """Log return ``ln(price / previous_price)``; NULL unless both prices are positive.

    Args:
        price: the current price.
        previous_price: the price of the previous version.

    Returns:
        A DOUBLE column, NULL when either price is NULL, zero or negative.
    """
    ok = (price > 0) & (previous_price > 0)
    # 1e308 / 5e-324 overflows to Infinity: no return rather than an infinite one.
    return finite_or_null(F.when(ok, F.log(price / previous_price)))


def with_price_return(
    df: DataFrame,
    *,
    price_col: str = "current_price",
    keys: Sequence[str] = SILVER_KEYS,
    order_col: str = "valid_from",
    output_col: str = PRICE_RETURN_METRIC,
) -> DataFrame:
    """Add the log return of ``price_col`` versus the key's previous version.

    The first version of a key (within ``df``) gets NULL, as does any version whose own price or
    predecessor's price is NULL or not positive (no skipping over missing prices: the return
    belongs to a pair of consecutive versions).

    Args:
        df: versions, one row per (keys, order_col).
        price_col: price column.
        keys: partition columns (the business key).
        order_col: event-time ordering column.
        output_col: name of the new column.

    Returns:
        ``df`` with ``output_col`` (DOUBLE).
    """
    window = Window.partitionBy(*keys).orderBy(order_col)
    previous = F.lag(F.col(price_col)).over(window)
    return df.withColumn(output_col, log_return(F.col(price_col), previous))


def with_rolling_zscore(
    df: DataFrame,
    *,
    value_col: str,
    window: int = 60,
    min_periods: int = 20,
    keys: Sequence[str] = SILVER_KEYS,
    order_col: str = "valid_from",
    prefix: str | None = None,
) -> DataFrame:
    """Add the rolling z-score of ``value_col`` against the ``window`` previous rows of its key.

    Adds ``<prefix>_window_mean``, ``<prefix>_window_stddev`` (sample), ``<prefix>_window_count``
    (non-NULL values in the window) and ``<prefix>_zscore``. The z-score is NULL when the current
    value is NULL, when fewer than ``min_periods`` previous values exist, or when the stddev is 0.

    Args:
        df: one row per (keys, order_col).
        value_col: the observed metric.
        window: number of previous rows in the window (W); the current row is excluded.
        min_periods: fewest non-NULL previous values needed for a score.
        keys: partition columns (the business key).
        order_col: event-time ordering column.
        prefix: prefix of the new columns; defaults to ``value_col``.

    Returns:
        ``df`` with the four window columns.

    Raises:
        ValueError: ``window`` or ``min_periods`` is out of range.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not 2 <= min_periods <= window:
        raise ValueError(f"min_periods must be between 2 and window={window}, got {min_periods}")
    prefix = prefix or value_col
    frame = Window.partitionBy(*keys).orderBy(order_col).rowsBetween(-window, -1)
    value = F.col(value_col)
    mean_col, std_col, count_col = (
        f"{prefix}_window_mean",
        f"{prefix}_window_stddev",
        f"{prefix}_window_count",
    )
    scorable = (
        value.isNotNull()
        & (F.col(count_col) >= F.lit(min_periods))
        & F.col(std_col).isNotNull()
        & (F.col(std_col) > 0)
    )
    return (
        df.withColumn(mean_col, F.avg(value).over(frame))
        .withColumn(std_col, F.stddev_samp(value).over(frame))
        .withColumn(count_col, F.count(value).over(frame).cast("int"))
        .withColumn(
            f"{prefix}_zscore",
            # Window sums of values near 1e308 overflow (mean/stddev Infinity or NaN): such a
            # z-score is meaningless and is never stored or alerted.
            finite_or_null(F.when(scorable, (value - F.col(mean_col)) / F.col(std_col))),
        )
    )


def with_is_anomaly(
    df: DataFrame,
    *,
    zscore_col: str,
    threshold: float = 3.0,
    output_col: str = "is_anomaly",
) -> DataFrame:
    """Flag rows whose ``|z| >= threshold``; rows without a score are not anomalies.

    Args:
        df: rows with a z-score column.
        zscore_col: the z-score column.
        threshold: flag threshold on the absolute z-score.
        output_col: name of the boolean column.

    Returns:
        ``df`` with ``output_col`` (never NULL).
    """
    flagged = F.coalesce(F.abs(F.col(zscore_col)) >= F.lit(threshold), F.lit(False))
    return df.withColumn(output_col, flagged)


def _metric_rows(df: DataFrame, *, metric: str, value_col: str, threshold: float) -> DataFrame:
    """The flagged rows of one metric in the ``crypto_anomalies`` shape (without batch id)."""
    return (
        df.transform(with_is_anomaly, zscore_col=f"{value_col}_zscore", threshold=threshold)
        .filter(F.col("is_anomaly"))
        .select(
            "coin_id",
            "vs_currency",
            F.col("valid_from").alias("observed_at"),
            F.lit(metric).alias("metric"),
            F.col(value_col).cast("double").alias("value"),
            F.col(f"{value_col}_window_mean").alias("window_mean"),
            F.col(f"{value_col}_window_stddev").alias("window_stddev"),
            F.col(f"{value_col}_zscore").alias("z_score"),
            F.col(f"{value_col}_window_count").alias("window_size"),
            F.lit(float(threshold)).alias("threshold"),
        )
    )


def explode_anomalies(
    scored_df: DataFrame,
    *,
    threshold: float = 3.0,
    batch_id: int | None = None,
) -> DataFrame:
    """Turn scored versions into ``crypto_anomalies`` rows: one per flagged (version, metric).

    ``scored_df`` must carry the columns added by :func:`with_price_return` followed by
    :func:`with_rolling_zscore` on ``price_return``, and :func:`with_rolling_zscore` on
    ``total_volume``. ``window_size`` is the number of values the window actually held (between
    ``min_periods`` and W), not the configured W.

    Args:
        scored_df: scored versions (see :func:`score_versions`).
        threshold: flag threshold on the absolute z-score.
        batch_id: stored as ``detected_batch_id``.

    Returns:
        Rows in the column order of ``app.tables.ANOMALIES_DDL``.
    """
    price_df = _metric_rows(
        scored_df, metric=PRICE_RETURN_METRIC, value_col=PRICE_RETURN_METRIC, threshold=threshold
    )
    volume_df = _metric_rows(scored_df, metric=VOLUME_METRIC, value_col="total_volume", threshold=threshold)
    batch = F.lit(batch_id).cast("bigint")
    return price_df.unionByName(volume_df).withColumn("detected_batch_id", batch)


def score_versions(
    versions_df: DataFrame,
    *,
    window: int = 60,
    min_periods: int = 20,
    keys: Sequence[str] = SILVER_KEYS,
) -> DataFrame:
    """Add price returns and the z-score columns of both metrics to silver versions.

    Args:
        versions_df: silver versions with ``current_price``, ``total_volume``, ``valid_from``.
        window: W, previous rows in the window.
        min_periods: fewest previous values for a score.
        keys: business key.

    Returns:
        ``versions_df`` with ``price_return`` and the window columns of ``price_return`` and
        ``total_volume``.
    """
    return (
        versions_df.transform(with_price_return, keys=keys)
        .transform(
            with_rolling_zscore,
            value_col=PRICE_RETURN_METRIC,
            window=window,
            min_periods=min_periods,
            keys=keys,
        )
        .transform(
            with_rolling_zscore,
            value_col="total_volume",
            window=window,
            min_periods=min_periods,
            keys=keys,
        )
    )


def detect_anomalies(
    versions_df: DataFrame,
    *,
    window: int = 60,
    min_periods: int = 20,
    threshold: float = 3.0,
    batch_id: int | None = None,
) -> DataFrame:
    """From-scratch detection: all anomaly rows of a set of silver versions.

    The incremental sink must produce exactly this over the whole silver table.

    Args:
        versions_df: silver versions (all history of the keys of interest).
        window: W, previous rows in the window.
        min_periods: fewest previous values for a score.
        threshold: flag threshold on the absolute z-score.
        batch_id: stored as ``detected_batch_id``.

    Returns:
        ``crypto_anomalies`` rows.
    """
    return versions_df.transform(score_versions, window=window, min_periods=min_periods).transform(
        explode_anomalies, threshold=threshold, batch_id=batch_id
    )
