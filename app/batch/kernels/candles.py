"""Per-coin 1h and 1d candles of ``gold_coin_ohlc`` (pandas).

The engine v2 Spark versions are kept as a test oracle (``tests/reference/gold_spark.py``). Per (coin_id, vs_currency, interval, bucket_start) of ``valid_from``:

* ``open``/``close`` are the first/last *non-NULL* ``current_price`` by ``valid_from``; ``high``/
  ``low`` ignore NULLs; a bucket whose prices are all NULL has NULL prices but counts its versions;
* ``volume`` is the last non-NULL ``total_volume`` of the bucket;
* ``return`` is ``close / open - 1`` when ``open > 0``;
* ``realized_volatility`` is the sample stddev of the log returns between consecutive *positively
  priced* versions of the bucket (unpriced ones are skipped, not chain breakers), NULL with fewer
  than 2 returns;
* ``n_obs`` counts the bucket's versions, ``n_anomalies`` those flagged for any metric.

Rows are sorted by key and time before anything is added up, so equal inputs give bit-identical
candles whatever order the rows came in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from app.batch.kernels.diff import with_from_ts
from app.batch.kernels.scores import as_float, explode_anomalies, log_return, time_ints
from app.tables import GOLD_OHLC, SILVER_KEYS, TABLES

# Interval label -> the pandas frequency its bucket starts are floored to (date_trunc unit).
INTERVALS: dict[str, str] = {"1h": "h", "1d": "D"}
OHLC_KEYS = TABLES[GOLD_OHLC].keys
OHLC_COLUMNS = TABLES[GOLD_OHLC].columns
CANDLE_COLUMNS = ("coin_id", "vs_currency", "valid_from", "current_price", "total_volume")


def _anomaly_marks(
    base: pd.DataFrame, key_codes: np.ndarray, flagged: pd.DataFrame, keys: Sequence[str]
) -> np.ndarray:
    """Per row of ``base``: flagged for at least one metric (same key and ``observed_at == valid_from``).

    Args:
        base: versions with ``keys`` and ``valid_from``.
        key_codes: each row's key code (equal codes: equal keys).
        flagged: ``crypto_anomalies`` rows with ``keys``; a NULL key matches nothing (a Spark join).
        keys: the key columns.

    Returns:
        A bool array aligned with ``base``'s rows.
    """
    keys = list(keys)
    marks = flagged[[*keys, "observed_at"]]
    marks = marks.loc[marks.notna().all(axis=1)]
    if marks.empty or base.empty:
        return np.zeros(len(base), dtype=bool)
    codes, first_rows = np.unique(key_codes, return_index=True)
    lookup = base.loc[first_rows, keys].assign(_code=codes)
    lookup = lookup.loc[lookup[keys].notna().all(axis=1)]
    marks = marks.merge(lookup, on=keys, how="inner")
    wanted = pd.DataFrame(
        {
            "_code": marks["_code"].to_numpy(dtype=np.int64),
            "_t": time_ints(marks["observed_at"].astype(base["valid_from"].dtype)),
        }
    ).drop_duplicates()
    rows = pd.DataFrame({"_code": key_codes, "_t": time_ints(base["valid_from"])})
    hit = rows.merge(wanted, on=["_code", "_t"], how="left", indicator=True, sort=False)["_merge"]
    return (hit == "both").to_numpy(dtype=bool)


def _key_codes(frame: pd.DataFrame, keys: Sequence[str]) -> np.ndarray:
    """Each row's key code, in key order (a NULL key is a key of its own, sorted last)."""
    if frame.empty:
        return np.zeros(0, dtype=np.int64)
    return frame.groupby(list(keys), sort=True, dropna=False).ngroup().to_numpy(dtype=np.int64)


def _segment_ids(starts: np.ndarray, n: int) -> np.ndarray:
    """Each row's run number, from the runs' first rows."""
    marks = np.zeros(n, dtype=np.int64)
    marks[starts] = 1
    return np.cumsum(marks) - 1


def _first_last(values: np.ndarray, seg: np.ndarray, n_seg: int) -> tuple[np.ndarray, np.ndarray]:
    """Per run, its first and last non-NaN value (NaN when it has none); rows are in run order."""
    first, last = np.full(n_seg, np.nan), np.full(n_seg, np.nan)
    idx = np.flatnonzero(~np.isnan(values))
    if len(idx):
        s = seg[idx]
        head = np.r_[True, s[1:] != s[:-1]]
        tail = np.r_[s[1:] != s[:-1], True]
        first[s[head]] = values[idx[head]]
        last[s[tail]] = values[idx[tail]]
    return first, last


def _sample_stddev(values: np.ndarray, seg: np.ndarray, n_seg: int) -> tuple[np.ndarray, np.ndarray]:
    """Per run, the sample stddev of its non-NaN values and how many there are.

    Two passes around the run's first value, so an all-equal run has a stddev of exactly 0:
    the shifted mean ``k + sum(x - k) / n``, then the sum of squared deviations from it.
    """
    ok = ~np.isnan(values)
    idx = np.flatnonzero(ok)
    x, s = values[idx], seg[idx]
    count = np.bincount(s, minlength=n_seg)
    stddev = np.full(n_seg, np.nan)
    if len(idx):
        head = np.r_[True, s[1:] != s[:-1]]
        shift = np.zeros(n_seg)
        shift[s[head]] = x[head]
        run_starts = np.flatnonzero(head)
        present = s[head]
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            d = x - shift[s]
            mean = shift.copy()
            mean[present] += np.add.reduceat(d, run_starts) / count[present]
            dev = x - mean[s]
            m2 = np.zeros(n_seg)
            m2[present] = np.add.reduceat(dev * dev, run_starts)
            stddev = np.where(count >= 2, np.sqrt(m2 / np.maximum(count - 1, 1)), np.nan)
    return stddev, count


def _check_intervals(intervals: Sequence[str]) -> None:
    unknown = sorted(set(intervals) - set(INTERVALS))
    if unknown:
        raise ValueError(f"unknown intervals {unknown}; expected some of {sorted(INTERVALS)}")


def explode_buckets(versions: pd.DataFrame, *, intervals: Sequence[str] = tuple(INTERVALS)) -> pd.DataFrame:
    """One row per (version, interval) with ``interval`` and ``bucket_start`` (floor of ``valid_from``).

    Args:
        versions: silver versions.
        intervals: labels from :data:`INTERVALS`.

    Returns:
        ``versions`` repeated per interval (in ``intervals`` order), with the two new columns.

    Raises:
        ValueError: an unknown interval label.
    """
    _check_intervals(intervals)
    parts = [
        versions.assign(interval=label, bucket_start=versions["valid_from"].dt.floor(INTERVALS[label]))
        for label in intervals
    ]
    if not parts:
        return versions.assign(interval=pd.Series(dtype=object), bucket_start=versions["valid_from"].iloc[:0])
    return pd.concat(parts, ignore_index=True)


def aggregate_coin_ohlc(
    versions: pd.DataFrame,
    flagged: pd.DataFrame,
    *,
    batch_id: int | None,
    intervals: Sequence[str] = tuple(INTERVALS),
    extra_keys: Sequence[str] = (),
) -> pd.DataFrame:
    """Per-coin candles for each interval from silver versions and the anomaly rows.

    Args:
        versions: silver versions (``coin_id, vs_currency, valid_from, current_price,
            total_volume``); whole buckets give exact candles.
        flagged: ``crypto_anomalies`` rows of the same keys and period (only the keys and
            ``observed_at`` are read).
        batch_id: stored as ``updated_batch_id``.
        intervals: labels from :data:`INTERVALS`.
        extra_keys: columns of both inputs that split the candles further and are kept first in
            the output (e.g. which image of a working set the versions come from).

    Returns:
        ``extra_keys`` then the columns of ``app.tables.GOLD_OHLC_DDL``, one row per bucket,
        sorted by key (``interval`` as text, then ``bucket_start``), with a fresh index:
        ``bucket_start`` keeps ``valid_from``'s dtype; ``open`` to ``realized_volatility`` are
        float64; ``n_obs`` and ``n_anomalies`` int64; ``updated_batch_id`` Int64.

    Raises:
        ValueError: an unknown interval label.
    """
    _check_intervals(intervals)
    key_columns = [*extra_keys, *SILVER_KEYS]
    base = versions[[*extra_keys, *CANDLE_COLUMNS]].reset_index(drop=True)
    key_codes = _key_codes(base, key_columns)
    has_anomaly = _anomaly_marks(base, key_codes, flagged, key_columns)
    ticks = time_ints(base["valid_from"])
    # One (version, interval) row per interval: the version's row, the interval's rank in text order
    # (the output's order) and the bucket start, all as integers.
    rank = {label: i for i, label in enumerate(sorted(set(intervals)))}
    buckets = {label: time_ints(base["valid_from"].dt.floor(INTERVALS[label])) for label in set(intervals)}
    source = np.tile(np.arange(len(base)), len(intervals))
    interval_rank = np.repeat(np.array([rank[label] for label in intervals], dtype=np.int64), len(base))
    bucket = np.concatenate([buckets[label] for label in intervals]) if intervals else np.zeros(0, np.int64)
    n = len(source)
    order = np.lexsort((ticks[source], bucket, interval_rank, key_codes[source]))
    source, interval_rank, bucket = source[order], interval_rank[order], bucket[order]
    new_run = np.r_[
        True, (np.diff(key_codes[source]) != 0) | (np.diff(interval_rank) != 0) | (np.diff(bucket) != 0)
    ]
    starts = np.flatnonzero(new_run[:n])
    n_seg = len(starts)
    seg = _segment_ids(starts, n)

    out = base.loc[source[starts], key_columns].reset_index(drop=True)
    labels = np.array(sorted(set(intervals)), dtype=object)
    out["interval"] = labels[interval_rank[starts]] if n_seg else np.zeros(0, dtype=object)
    out["bucket_start"] = bucket[starts].view(base["valid_from"].to_numpy().dtype)
    if n == 0:
        for column in ("open", "high", "low", "close", "volume", "return", "realized_volatility"):
            out[column] = np.zeros(0)
        out["n_obs"] = np.zeros(0, dtype=np.int64)
        out["n_anomalies"] = np.zeros(0, dtype=np.int64)
        out["updated_batch_id"] = pd.array([], dtype="Int64")
        return out

    price = as_float(base["current_price"])[source]
    volume = as_float(base["total_volume"])[source]
    open_, close = _first_last(price, seg, n_seg)
    _, last_volume = _first_last(volume, seg, n_seg)
    with np.errstate(invalid="ignore"):
        high = np.fmax.reduceat(price, starts)
        low = np.fmin.reduceat(price, starts)

    # Log returns between consecutive positively priced versions of a bucket.
    priced = np.flatnonzero(price > 0)
    returns = np.full(n, np.nan)
    if len(priced):
        p, s = price[priced], seg[priced]
        previous = np.where(np.r_[False, s[1:] == s[:-1]], np.r_[np.nan, p[:-1]], np.nan)
        returns[priced] = log_return(p, previous)
    volatility, n_returns = _sample_stddev(returns, seg, n_seg)

    out["open"] = open_
    out["high"] = high
    out["low"] = low
    out["close"] = close
    out["volume"] = last_volume
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        out["return"] = np.where(open_ > 0, close / np.where(open_ > 0, open_, 1.0) - 1, np.nan)
    out["realized_volatility"] = np.where(n_returns >= 2, volatility, np.nan)
    out["n_obs"] = np.diff(np.r_[starts, n]).astype(np.int64)
    out["n_anomalies"] = np.add.reduceat(has_anomaly[source].astype(np.int64), starts)
    out["updated_batch_id"] = pd.array([batch_id] * n_seg, dtype="Int64")
    return out


def first_bucket(interval: pd.Series, from_ts: pd.Series) -> pd.Series:
    """The first bucket a key's range replaces: the hour (``1h``) or day (``1d``) holding ``from_ts``."""
    return from_ts.dt.floor("h").where(interval == "1h", from_ts.dt.floor("D"))


def candle_rows(
    image: pd.DataFrame,
    scored: pd.DataFrame,
    touched: pd.DataFrame,
    *,
    threshold: float,
    batch_id: int | None,
) -> pd.DataFrame:
    """``gold_coin_ohlc`` rows of the replaced buckets, with ``n_anomalies`` from the image's scores.

    Versions from the day start of each touched key's ``from_ts`` make the candles; the flagged
    rows are the scores' from that day start on; the rows kept are the buckets from the first
    replaced one (the hour of ``from_ts`` for ``1h``, its day for ``1d``).

    Args:
        image: the before- or after-image.
        scored: :func:`app.batch.kernels.scores.score_versions` of the same image (its touched
            keys); its ``from_ts``, if any, is replaced by ``touched``'s.
        touched: the touched keys with ``from_ts``.
        threshold: the anomaly threshold.
        batch_id: ``updated_batch_id`` of the rows.

    Returns:
        :func:`aggregate_coin_ohlc` rows of the replaced buckets (columns of ``GOLD_OHLC_DDL``).
    """
    versions = with_from_ts(image[list(CANDLE_COLUMNS)], touched)
    in_days = (versions["valid_from"] >= versions["from_ts"].dt.floor("D")).to_numpy(dtype=bool)
    versions = versions.loc[in_days, list(CANDLE_COLUMNS)]
    ranged = with_from_ts(scored, touched)
    in_days = (ranged["valid_from"] >= ranged["from_ts"].dt.floor("D")).to_numpy(dtype=bool)
    flagged = explode_anomalies(ranged.loc[in_days], threshold=threshold, batch_id=None)
    candles = with_from_ts(aggregate_coin_ohlc(versions, flagged, batch_id=batch_id), touched)
    keep = (candles["bucket_start"] >= first_bucket(candles["interval"], candles["from_ts"])).to_numpy(
        dtype=bool
    )
    return candles.loc[keep, list(OHLC_COLUMNS)].reset_index(drop=True)
