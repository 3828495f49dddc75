"""Price returns, rolling z-scores of both metrics, and the ``crypto_anomalies`` rows (pandas).

The engine v2 Spark versions are kept as a test oracle (``tests/reference/anomalies_spark.py``). Per business key, over the versions ordered by ``valid_from``:

* ``price_return`` is ``ln(p_t / p_{t-1})`` between consecutive versions, NULL unless both prices
  are positive, and NULL when not finite (no skipping over a missing price);
* for ``price_return`` and ``total_volume``, the window is the ``W`` previous *rows* (the current
  one excluded); NULLs inside it are ignored, ``{p}_window_count`` counts its non-NULL values,
  ``{p}_window_mean`` is their mean and ``{p}_window_stddev`` their sample stddev, and
  ``{p}_zscore = (x - mean) / stddev`` is NULL when ``x`` is NULL, when the count is below
  ``min_periods``, when the stddev is NULL or 0, or when the result is not finite;
* a version is flagged for a metric when ``|z| >= threshold``.

Each window is computed from its own ``W`` cells only, never carried over from earlier rows: the
window is walked cell by cell from its oldest to its newest (vectorised over every row of every
key at once, so the Python loop is over the ``W`` offsets, not over keys), with the same updates
Spark's ``avg`` (a running sum, then ``sum / count``) and ``stddev_samp`` (Welford's update)
make over a frame. So a score depends only on the values in its window: scoring a trailing slice
of a key's history (from ``W + 1`` versions before a point) gives bit-identical numbers to
scoring the whole history from that point on, and an all-equal window has a stddev of exactly 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from app.batch.kernels.diff import with_from_ts
from app.tables import ANOMALIES, SILVER_KEYS, TABLES

PRICE_RETURN_METRIC = "price_return"
VOLUME_METRIC = "volume"
# Metric name -> the scored column it reads (the z-score columns are prefixed with the column).
METRIC_COLUMNS: dict[str, str] = {PRICE_RETURN_METRIC: PRICE_RETURN_METRIC, VOLUME_METRIC: "total_volume"}
SCORED_COLUMNS = ("coin_id", "vs_currency", "valid_from", "current_price", "total_volume")
ANOMALY_COLUMNS = TABLES[ANOMALIES].columns
ORDER_COLUMN = "valid_from"


def as_float(values: pd.Series) -> np.ndarray:
    """A numeric column as float64 with NaN for NULL (any of float, masked or object dtypes)."""
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def finite_or_nan(values: np.ndarray) -> np.ndarray:
    """``values`` with NaN and ±Infinity replaced by NaN (``finite_or_null``)."""
    return np.where(np.isfinite(values), values, np.nan)


def time_ints(values: pd.Series) -> np.ndarray:
    """A timestamp column as int64 ticks of its own unit (NaT is the smallest: sorts first)."""
    if not pd.api.types.is_datetime64_dtype(values.dtype):
        values = pd.to_datetime(values)
    return values.to_numpy().view(np.int64)


def key_order(
    frame: pd.DataFrame, keys: Sequence[str], order_col: str = ORDER_COLUMN
) -> tuple[np.ndarray, np.ndarray]:
    """The row order by key then ``order_col``, and each sorted row's position within its key.

    Args:
        frame: rows with ``keys`` and ``order_col``.
        keys: partition columns (a NULL key is a key of its own, as in a Spark window partition).
        order_col: the ordering timestamp column.

    Returns:
        ``(order, position)``: ``frame.iloc[order]`` is sorted by key then ``order_col``; ``position``
        is 0 for each key's first sorted row, 1 for the next, and so on.
    """
    n = len(frame)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    codes = frame.groupby(list(keys), sort=True, dropna=False).ngroup().to_numpy(dtype=np.int64)
    order = np.lexsort((time_ints(frame[order_col]), codes))
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    group = np.cumsum(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]) - 1
    position = np.arange(n) - starts[group]
    return order, position


def log_return(price: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """``ln(price / previous)``; NaN unless both prices are positive or when not finite."""
    ok = (price > 0) & (previous > 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = np.where(ok, price / np.where(ok, previous, 1.0), np.nan)
        out = np.where(ok & (ratio > 0), np.log(np.where(ratio > 0, ratio, 1.0)), np.nan)
    return finite_or_nan(out)


def rolling_window(
    values: np.ndarray, position: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, sample stddev and non-NULL count of the ``window`` previous rows of the same key.

    Args:
        values: float64 values sorted by key then time, NaN for NULL.
        position: each row's position within its key (:func:`key_order`).
        window: W, previous rows in the window (the current row excluded).

    Returns:
        ``(mean, stddev, count)``: mean NaN when the count is 0, stddev NaN when it is below 2,
        count int32. Each row's numbers come from its own window's cells only, oldest first.
    """
    n = len(values)
    padded = np.concatenate([np.full(window, np.nan), values])
    count = np.zeros(n, dtype=np.int64)
    total = np.zeros(n)
    avg = np.zeros(n)
    m2 = np.zeros(n)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for j in range(window):
            # Cell j of row i's window is row i - (window - j): the oldest cell first.
            back = window - j
            cell = padded[j : j + n]
            valid = (position >= back) & ~np.isnan(cell)
            x = np.where(valid, cell, 0.0)
            count += valid
            total = np.where(valid, total + x, total)
            # Welford's update, as Spark's CentralMomentAgg makes it.
            delta = x - avg
            delta_n = delta / np.where(valid, count, 1)
            avg = np.where(valid, avg + delta_n, avg)
            m2 = np.where(valid, m2 + delta * (delta - delta_n), m2)
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        stddev = np.where(count >= 2, np.sqrt(m2 / np.maximum(count - 1, 1)), np.nan)
    return mean, stddev, count.astype(np.int32)


def _validate(window: int, min_periods: int) -> None:
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not 2 <= min_periods <= window:
        raise ValueError(f"min_periods must be between 2 and window={window}, got {min_periods}")


def score_versions(
    versions: pd.DataFrame,
    *,
    window: int,
    min_periods: int,
    keys: Sequence[str] = SILVER_KEYS,
) -> pd.DataFrame:
    """Add price returns and the z-score columns of both metrics to silver versions.

    Args:
        versions: versions with ``keys``, ``valid_from``, ``current_price`` and ``total_volume``
            (other columns, e.g. ``from_ts``, are kept); one row per (keys, valid_from).
        window: W, previous rows in the window.
        min_periods: fewest non-NULL previous values for a score.
        keys: partition columns (the business key, possibly with an image column).

    Returns:
        ``versions`` sorted by key then ``valid_from`` (fresh index) with ``price_return`` (float64)
        and, for ``price_return`` and ``total_volume``, ``{p}_window_mean``, ``{p}_window_stddev``,
        ``{p}_zscore`` (float64) and ``{p}_window_count`` (int32). An existing column of one of
        these names is replaced in place, others are appended in that order.

    Raises:
        ValueError: ``window`` or ``min_periods`` is out of range.
    """
    _validate(window, min_periods)
    order, position = key_order(versions, keys)
    out = versions.iloc[order].reset_index(drop=True)
    price = as_float(out["current_price"])
    previous = np.r_[np.nan, price[:-1]] if len(price) else price
    previous = np.where(position > 0, previous, np.nan)
    out[PRICE_RETURN_METRIC] = log_return(price, previous)
    for prefix in (PRICE_RETURN_METRIC, "total_volume"):
        value = as_float(out[prefix])
        mean, stddev, count = rolling_window(value, position, window)
        scorable = ~np.isnan(value) & (count >= min_periods) & (stddev > 0)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            z = np.where(scorable, (value - mean) / np.where(scorable, stddev, 1.0), np.nan)
        out[f"{prefix}_window_mean"] = mean
        out[f"{prefix}_window_stddev"] = stddev
        out[f"{prefix}_window_count"] = count
        out[f"{prefix}_zscore"] = finite_or_nan(z)
    return out


def explode_anomalies(scored: pd.DataFrame, *, threshold: float, batch_id: int | None) -> pd.DataFrame:
    """Turn scored versions into ``crypto_anomalies`` rows: one per flagged (version, metric).

    ``window_size`` is the number of values the window actually held (between ``min_periods`` and
    W), not the configured W.

    Args:
        scored: :func:`score_versions` output.
        threshold: flag threshold on the absolute z-score (inclusive).
        batch_id: stored as ``detected_batch_id``.

    Returns:
        The columns of ``app.tables.ANOMALIES_DDL`` in order: the ``price_return`` rows then the
        ``volume`` rows, each in ``scored``'s row order, with a fresh index. ``observed_at`` keeps
        ``valid_from``'s dtype; ``value``, ``window_mean``, ``window_stddev``, ``z_score`` and
        ``threshold`` are float64, ``window_size`` int32, ``detected_batch_id`` Int64.
    """
    parts = []
    for metric, column in METRIC_COLUMNS.items():
        z = as_float(scored[f"{column}_zscore"])
        with np.errstate(invalid="ignore"):
            flagged = np.abs(z) >= threshold
        rows = scored.loc[flagged]
        parts.append(
            pd.DataFrame(
                {
                    "coin_id": rows["coin_id"].to_numpy(),
                    "vs_currency": rows["vs_currency"].to_numpy(),
                    "observed_at": rows["valid_from"].to_numpy(),
                    "metric": np.full(len(rows), metric, dtype=object),
                    "value": as_float(rows[column]),
                    "window_mean": as_float(rows[f"{column}_window_mean"]),
                    "window_stddev": as_float(rows[f"{column}_window_stddev"]),
                    "z_score": z[flagged],
                    "window_size": rows[f"{column}_window_count"].to_numpy(dtype=np.int32),
                    "threshold": np.full(len(rows), float(threshold)),
                }
            )
        )
    out = pd.concat(parts, ignore_index=True)
    out["detected_batch_id"] = pd.array([batch_id] * len(out), dtype="Int64")
    return out[list(ANOMALY_COLUMNS)]


def scored_versions(
    image: pd.DataFrame,
    touched: pd.DataFrame,
    *,
    window: int,
    min_periods: int,
    keys: Sequence[str] = SILVER_KEYS,
) -> pd.DataFrame:
    """The touched keys' versions of an image with both z-scores, and ``from_ts``.

    Scores are exact for versions with ``W + 1`` versions (or the key's whole history) before them
    in the image.

    Args:
        image: the before- or after-image (at least :data:`SCORED_COLUMNS` and ``keys``).
        touched: the touched keys (``coin_id, vs_currency``) with ``from_ts``.
        window: W, previous rows in the window.
        min_periods: fewest previous values for a score.
        keys: partition columns of the window (:data:`SILVER_KEYS` plus, e.g., an image column).

    Returns:
        :func:`score_versions` of the touched keys' :data:`SCORED_COLUMNS` (plus any extra
        ``keys``) with ``from_ts``.
    """
    columns = list(dict.fromkeys([*SCORED_COLUMNS, *keys]))
    return score_versions(
        with_from_ts(image[columns], touched), window=window, min_periods=min_periods, keys=keys
    )


def anomaly_rows(
    scored: pd.DataFrame, touched: pd.DataFrame | None, *, threshold: float, batch_id: int | None
) -> pd.DataFrame:
    """``crypto_anomalies`` rows of the replaced ranges (``observed_at >= from_ts`` per key).

    Args:
        scored: :func:`score_versions` of an image's touched keys.
        touched: the touched keys with ``from_ts``: inner-joined on the key (so only touched
            keys' rows count), its ``from_ts`` replacing any ``scored`` carries. None: ``scored``
            must carry ``from_ts`` itself (as :func:`scored_versions` gives it).
        threshold: flag threshold on the absolute z-score.
        batch_id: stored as ``detected_batch_id``.

    Returns:
        :func:`explode_anomalies` of the rows with ``valid_from >= from_ts``.
    """
    ranged = scored if touched is None else with_from_ts(scored, touched)
    in_range = (ranged["valid_from"] >= ranged["from_ts"]).to_numpy(dtype=bool)
    return explode_anomalies(ranged.loc[in_range], threshold=threshold, batch_id=batch_id)


def detect_anomalies(
    versions: pd.DataFrame,
    *,
    window: int,
    min_periods: int,
    threshold: float,
    batch_id: int | None = None,
) -> pd.DataFrame:
    """From-scratch detection: all anomaly rows of a set of silver versions.

    Args:
        versions: silver versions (all history of the keys of interest).
        window: W, previous rows in the window.
        min_periods: fewest previous values for a score.
        threshold: flag threshold on the absolute z-score.
        batch_id: stored as ``detected_batch_id``.

    Returns:
        ``crypto_anomalies`` rows (:func:`explode_anomalies`).
    """
    scored = score_versions(versions, window=window, min_periods=min_periods)
    return explode_anomalies(scored, threshold=threshold, batch_id=batch_id)
