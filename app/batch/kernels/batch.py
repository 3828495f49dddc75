"""One batch end to end over its observations and working set: the rows every table gets.

Two pure steps, so that the I/O between them (reading more of silver once the plan has told how
far back the batch reaches) stays outside:

1. :func:`plan_batch`: the SCD2 plan of the batch's observations against the working set's tail,
   and the touched ranges (per key, from the version before its earliest observation on).
2. :func:`derive_rows`: from the working set before and after the batch (the plan applied), the
   z-scores of both images, and for each derived table the rows of the replaced ranges (*fresh*)
   and their difference to what the ranges held (*staged*, with ``_action``), as
   docs/DESIGN.md section 4 defines the ranges.

Both are per key except the daily metrics, which add up every coin of a (vs_currency, day):
:func:`derive_rows` returns each key's last version of each touched day (``metric_days``) and
:func:`app.batch.kernels.metrics.aggregate_market_metrics` adds them up, so a caller that splits
the keys into buckets (the executor placement) runs the same two functions and gets the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from app.batch.kernels.candles import candle_rows
from app.batch.kernels.diff import silver_rows, stage_replacement
from app.batch.kernels.metrics import aggregate_market_metrics, last_version_of_day
from app.batch.kernels.scd2 import plan_scd2, select_tail, touched_ranges
from app.batch.kernels.scores import anomaly_rows, score_versions
from app.tables import ANOMALIES, GOLD_OHLC, SILVER_DDL, SILVER_KEYS, TABLES, ddl_column_names

# SCD2 bookkeeping: the plan derives these; an observation does not carry them.
BOOKKEEPING = ("valid_to", "is_current", "batch_id", "updated_batch_id", "collapsed_observations")
# What the kernels take of an observation: silver's data columns, and its place in its page.
OBSERVATION_COLUMNS = (
    *(c for c in ddl_column_names(SILVER_DDL) if c not in BOOKKEEPING),
    "record_index",
)
ANOMALY_VALUE_COLUMNS = ("value", "window_mean", "window_stddev", "z_score", "window_size", "threshold")
SCORED_COLUMNS = ("coin_id", "vs_currency", "valid_from", "current_price", "total_volume")
# Outputs of :func:`derive_rows`, by name.
OUTPUTS = (
    "silver_fresh",
    "anomalies_fresh",
    "anomalies_staged",
    "ohlc_fresh",
    "ohlc_staged",
    "metric_days",
)
COUNTS = ("kept", "unchanged", "duplicate", "inserts", "updates", "deletes")


@dataclass(frozen=True)
class KernelParams:
    """What the kernels need besides the frames (from Settings and the stream).

    Attributes:
        batch_id: the micro-batch id (stamped on written rows).
        window: W, the z-score window.
        min_periods: fewest previous values for a score.
        threshold: the anomaly threshold on ``|z|``.
        max_collapsed: collapsed observations a silver version keeps.
    """

    batch_id: int
    window: int
    min_periods: int
    threshold: float
    max_collapsed: int

    @classmethod
    def from_settings(cls, settings: Any, batch_id: int) -> KernelParams:
        """The parameters of batch ``batch_id`` from :class:`app.config.Settings` (its ``zscore_*``
        and ``max_collapsed_observations``)."""
        return cls(
            batch_id=batch_id,
            window=settings.zscore_window,
            min_periods=settings.zscore_min_periods,
            threshold=settings.zscore_threshold,
            max_collapsed=settings.max_collapsed_observations,
        )


def plan_batch(
    obs: pd.DataFrame, before: pd.DataFrame, *, batch_id: int, max_collapsed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The SCD2 plan of ``obs`` against ``before``'s tail, and the touched ranges.

    Args:
        obs: the batch's valid observations (silver data columns, ``valid_from``, ``row_hash``).
        before: the working set before the batch (silver columns).
        batch_id: the micro-batch id.
        max_collapsed: collapsed observations a version keeps.

    Returns:
        ``(plan, touched)``: :func:`~app.batch.kernels.scd2.plan_scd2` rows, and ``coin_id,
        vs_currency, from_ts, to_ts`` per key the batch touched.
    """
    plan = plan_scd2(obs, select_tail(before, obs), batch_id=batch_id, max_collapsed=max_collapsed)
    return plan, touched_ranges(plan)


def plan_counts(plan: pd.DataFrame) -> dict[str, int]:
    """Per plan: observations kept/unchanged/duplicate, and silver rows inserted/updated/deleted."""
    from_batch = plan["_origin"] == "batch"
    outcome = plan.loc[from_batch, "_outcome"]
    action = plan["_action"]
    return {
        "kept": int((outcome == "kept").sum()),
        "unchanged": int((outcome == "unchanged").sum()),
        "duplicate": int((outcome == "duplicate").sum()),
        "inserts": int((action == "insert").sum()),
        "updates": int((action == "update").sum()),
        "deletes": int((action == "delete").sum()),
    }


def first_days(touched: pd.DataFrame) -> dict[str, str]:
    """Per touched vs_currency its first touched UTC day (``YYYY-MM-DD``)."""
    if touched.empty:
        return {}
    firsts = touched.groupby("vs_currency", sort=True)["from_ts"].min()
    return {str(c): pd.Timestamp(ts).strftime("%Y-%m-%d") for c, ts in firsts.items()}


def _scored(image: pd.DataFrame, touched: pd.DataFrame, params: KernelParams) -> pd.DataFrame:
    """The touched keys' versions of ``image`` with both z-scores, and ``from_ts``."""
    versions = image[list(SCORED_COLUMNS)].merge(
        touched[[*SILVER_KEYS, "from_ts"]], on=list(SILVER_KEYS), how="inner"
    )
    return score_versions(versions, window=params.window, min_periods=params.min_periods)


def derive_rows(
    before: pd.DataFrame,
    after: pd.DataFrame,
    touched: pd.DataFrame,
    *,
    first_days: dict[str, str],
    params: KernelParams,
) -> dict[str, pd.DataFrame]:
    """The rows each derived table gets from this batch, computed from both images.

    Args:
        before: the working set before the batch, holding enough history for the touched keys
            (the W + 1 versions before each first touched day, and every touched day whole).
        after: the same rows once the batch's plan is applied
            (:func:`~app.batch.kernels.scd2.after_image`).
        touched: :func:`plan_batch`'s touched ranges (may hold only some keys: a bucket).
        first_days: per vs_currency its first touched day, over ALL keys of the batch.
        params: the kernel parameters.

    Returns:
        By name (:data:`OUTPUTS`): ``silver_fresh`` (silver rows of the replaced ranges, after the
        batch), ``anomalies_fresh``/``anomalies_staged``, ``ohlc_fresh``/``ohlc_staged`` (fresh
        rows, and their difference to the before-image's with ``_action``), and ``metric_days``
        (each key's last version of every day from its currency's first touched day, after).
    """
    scored_after = _scored(after, touched, params)
    scored_before = _scored(before, touched, params)
    threshold, batch_id = params.threshold, params.batch_id
    anomalies_fresh = anomaly_rows(scored_after, touched, threshold=threshold, batch_id=batch_id)
    anomalies_old = anomaly_rows(scored_before, touched, threshold=threshold, batch_id=batch_id)
    ohlc_fresh = candle_rows(after, scored_after, touched, threshold=threshold, batch_id=batch_id)
    # The before-image's candles carry no batch id, so every recomputed candle differs from its old
    # row and is written with this batch's stamp.
    ohlc_old = candle_rows(before, scored_before, touched, threshold=threshold, batch_id=None)
    ohlc_keys = TABLES[GOLD_OHLC].keys
    return {
        "silver_fresh": silver_rows(after, touched),
        "anomalies_fresh": anomalies_fresh,
        "anomalies_staged": stage_replacement(
            anomalies_fresh, anomalies_old, TABLES[ANOMALIES].keys, ANOMALY_VALUE_COLUMNS
        ),
        "ohlc_fresh": ohlc_fresh,
        "ohlc_staged": stage_replacement(
            ohlc_fresh, ohlc_old, ohlc_keys, [c for c in ohlc_fresh.columns if c not in ohlc_keys]
        ),
        "metric_days": metric_days(after, first_days),
    }


def metric_days(image: pd.DataFrame, first_days: dict[str, str]) -> pd.DataFrame:
    """Each key's last version of every day on or after its currency's first touched day."""
    if not first_days:
        return last_version_of_day(image.iloc[0:0])
    starts = image["vs_currency"].map({c: pd.Timestamp(d) for c, d in first_days.items()})
    wanted = starts.notna() & (image["valid_from"] >= starts)
    return last_version_of_day(image.loc[wanted].reset_index(drop=True))


def metric_rows(days: pd.DataFrame, *, batch_id: int | None) -> pd.DataFrame:
    """``gold_crypto_metrics`` rows of the touched days from :func:`metric_days` (of every bucket)."""
    return aggregate_market_metrics(days, batch_id=batch_id)
