"""Daily market metrics of ``gold_crypto_metrics`` (pandas).

The engine v2 Spark versions are kept as a test oracle (``tests/reference/gold_spark.py``);
the semantics: per (metric_date, vs_currency, market_cap_category), from each coin's last version
of the UTC day. Sums, averages, max and min ignore NULLs (a sum or average of no value is NULL, a
coin without a market cap still counts in ``num_coins``); a NULL category is its own group;
``metric_timestamp`` is the latest ``valid_from`` used.

Rows are sorted by group, coin and time before anything is added up, so equal inputs give
bit-identical metrics whatever order the rows came in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from app.batch.kernels.scores import as_float, time_ints
from app.tables import GOLD_METRICS, SILVER_KEYS, TABLES

METRICS_KEYS = TABLES[GOLD_METRICS].keys
METRICS_COLUMNS = TABLES[GOLD_METRICS].columns
# Output column -> (input column, aggregate).
AGGREGATES: dict[str, tuple[str, str]] = {
    "total_market_cap": ("market_cap", "sum"),
    "total_volume_24h": ("total_volume", "sum"),
    "avg_price": ("current_price", "avg"),
    "avg_price_change_24h": ("price_change_percentage_24h", "avg"),
    "avg_volatility": ("price_volatility_24h", "avg"),
    "avg_volume_ratio": ("volume_to_market_cap_ratio", "avg"),
    "max_market_cap": ("market_cap", "max"),
    "min_market_cap": ("market_cap", "min"),
}


def last_version_of_day(versions: pd.DataFrame, *, keys: Sequence[str] = SILVER_KEYS) -> pd.DataFrame:
    """Keep each key's last version of each UTC day, with ``metric_date`` added.

    Args:
        versions: silver versions.
        keys: business key (a NULL key is a key of its own).

    Returns:
        One row per (keys, metric_date): ``versions``' columns then ``metric_date``
        (``datetime.date`` objects; an existing ``metric_date`` is replaced in place), sorted by
        key then day, with a fresh index.
    """
    n = len(versions)
    if n == 0:
        out = versions.iloc[:0].reset_index(drop=True)
        out["metric_date"] = pd.Series([], dtype=object)
        return out
    day = versions["valid_from"].dt.floor("D")
    codes = versions.groupby(list(keys), sort=True, dropna=False).ngroup().to_numpy(dtype=np.int64)
    day_ticks = time_ints(day)
    order = np.lexsort((time_ints(versions["valid_from"]), day_ticks, codes))
    c, d = codes[order], day_ticks[order]
    last = np.r_[(c[1:] != c[:-1]) | (d[1:] != d[:-1]), True]
    picked = order[last]
    out = versions.iloc[picked].reset_index(drop=True)
    out["metric_date"] = np.array(day.iloc[picked].dt.date.to_numpy(), dtype=object)
    return out


def aggregate_market_metrics(versions: pd.DataFrame, *, batch_id: int | None) -> pd.DataFrame:
    """Market KPIs per (metric_date, vs_currency, market_cap_category) from silver versions.

    Args:
        versions: silver versions (any subset of whole days per key gives exact days); each key's
            last version of a day is what counts, so :func:`last_version_of_day` output (of any
            split of the keys, concatenated) gives the same rows.
        batch_id: stored as ``updated_batch_id``.

    Returns:
        The columns of ``app.tables.GOLD_METRICS_DDL`` in order, one row per group, sorted by
        (metric_date, vs_currency, market_cap_category; NULL category last), with a fresh index:
        ``metric_date`` ``datetime.date`` objects, ``num_coins`` int64, the sums/averages/max/min
        float64, ``metric_timestamp`` ``valid_from``'s dtype, ``updated_batch_id`` Int64.
    """
    days = last_version_of_day(versions)
    n = len(days)
    if n == 0:
        empty = pd.DataFrame({c: pd.Series([], dtype=object) for c in METRICS_KEYS})
        empty["num_coins"] = np.zeros(0, dtype=np.int64)
        for column in AGGREGATES:
            empty[column] = np.zeros(0)
        empty["metric_timestamp"] = versions["valid_from"].iloc[:0].to_numpy()
        empty["updated_batch_id"] = pd.array([], dtype="Int64")
        return empty[list(METRICS_COLUMNS)]
    group = days.assign(_day=time_ints(days["valid_from"].dt.floor("D")))
    group_keys = ["_day", "vs_currency", "market_cap_category"]
    codes = group.groupby(group_keys, sort=True, dropna=False).ngroup().to_numpy(dtype=np.int64)
    coin_codes, _ = pd.factorize(days["coin_id"], sort=True)
    order = np.lexsort((time_ints(days["valid_from"]), coin_codes, codes))
    rows = days.iloc[order].reset_index(drop=True)
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])

    out = rows.loc[starts, list(METRICS_KEYS)].reset_index(drop=True)
    out["num_coins"] = np.diff(np.r_[starts, n]).astype(np.int64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for column, (source, how) in AGGREGATES.items():
            values = as_float(rows[source])
            present = ~np.isnan(values)
            count = np.add.reduceat(present.astype(np.int64), starts)
            if how in ("sum", "avg"):
                total = np.add.reduceat(np.where(present, values, 0.0), starts)
                result = total if how == "sum" else total / np.maximum(count, 1)
            else:
                result = (np.fmax if how == "max" else np.fmin).reduceat(values, starts)
            out[column] = np.where(count > 0, result, np.nan)
    ticks = np.maximum.reduceat(time_ints(rows["valid_from"]), starts)
    out["metric_timestamp"] = ticks.view(rows["valid_from"].to_numpy().dtype)
    out["updated_batch_id"] = pd.array([batch_id] * len(starts), dtype="Int64")
    return out[list(METRICS_COLUMNS)]


def metric_rows(image: pd.DataFrame, first_days: dict[str, str], *, batch_id: int | None) -> pd.DataFrame:
    """``gold_crypto_metrics`` rows of every touched (vs_currency, day on or after its first touched day).

    Args:
        image: the after-image (every coin of the touched currencies).
        first_days: per touched vs_currency its first touched UTC day (``YYYY-MM-DD``).
        batch_id: stored as ``updated_batch_id``.

    Returns:
        :func:`aggregate_market_metrics` of the image's rows with ``valid_from`` on or after their
        currency's first touched day (midnight UTC).
    """
    if not first_days:
        return aggregate_market_metrics(image.iloc[:0], batch_id=batch_id)
    starts = image["vs_currency"].map({c: pd.Timestamp(d) for c, d in first_days.items()})
    wanted = (starts.notna() & (image["valid_from"] >= starts)).to_numpy(dtype=bool)
    return aggregate_market_metrics(image.loc[wanted], batch_id=batch_id)
