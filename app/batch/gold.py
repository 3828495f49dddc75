"""The gold stage: write market metrics by day and market-cap category, and per-coin candles.

The rows come from the kernels (:mod:`app.batch.kernels.metrics`, :mod:`app.batch.kernels.candles`);
this module writes them.

Both aggregates are functions of silver *versions* (every SCD2 version, not only ``is_current``):

* ``gold_crypto_metrics`` (:func:`app.batch.kernels.metrics.aggregate_market_metrics`): per (metric_date, vs_currency,
  market_cap_category), from each coin's last version of the day (``metric_date =
  date(valid_from)``, UTC). ``metric_timestamp`` is the latest ``valid_from`` used, never load time.
* ``gold_coin_ohlc`` (:func:`app.batch.kernels.candles.aggregate_coin_ohlc`): per (coin_id, vs_currency, interval,
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
touched vs_currency the days from ``date(from_ts)`` onwards (docs/DESIGN.md, section 4). The kernels
(:mod:`app.batch.kernels.candles`, :mod:`app.batch.kernels.metrics`) compute the candles of both
images and their difference, which is applied with ONE MERGE. A touched (currency, day) counts every coin, so the after-image alone
gives the whole metrics range, written with ONE ``replaceWhere`` overwrite. Open-ended like the
anomalies range: late data re-scores later anomalies, which changes later buckets' ``n_anomalies``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from app.batch.context import Stage
from app.faults import crash_point
from app.logs import log_event
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
