"""The anomalies stage: re-score the touched silver ranges and replace them in ``crypto_anomalies``.

Per touched key (docs/DESIGN.md, section 4) the stage reads from silver the versions with
``valid_from >= from_ts`` plus the ``W + 1`` versions before (``W`` previous log returns need
``W + 1`` previous prices), scores them (:mod:`app.quality.anomalies`), keeps the observations at
or after ``from_ts`` and replaces the key's anomaly rows in ``[from_ts, +inf)`` with ONE MERGE:
insert new, update changed, delete those no longer flagged. The range is open-ended because a late
observation re-scores the ``W`` observations after it, and silver may drop a version after the
batch's last observation when it collapses into an equal late one. For in-order data the range is
just the new versions, so the work stays bounded.

The MERGE runs inside :func:`app.sinks.delta_io.delta_txn`, so a re-run of a committed batch is
skipped by Delta; the diff computed before it is then empty, hence no duplicate alerts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from app.faults import crash_point
from app.logs import log_event
from app.quality.anomalies import ANOMALY_KEYS, ANOMALY_VALUE_COLUMNS, explode_anomalies, score_versions
from app.sinks.alerts import post_alerts
from app.sinks.range_merge import merge_staged, stage_replacement
from app.sinks.touched import (
    TouchedKey,
    earliest_from,
    keys_column_filter,
    read_key_tails,
    sql_str,
    sql_ts,
    touched_frame,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from app.sinks.context import BatchContext

logger = logging.getLogger(__name__)

ANOMALIES_TABLE = "crypto_anomalies"
SILVER_TABLE = "silver_crypto_clean"
# Alerts (log events and webhook calls) per batch; a backfill may flag thousands at once.
MAX_ALERTS_PER_BATCH = 200


@dataclass(frozen=True)
class AnomalyChanges:
    """What one replacement did to ``crypto_anomalies``.

    Attributes:
        added: rows newly flagged (as dicts, timestamps as UTC ISO text).
        updated: rows still flagged whose numbers changed.
        removed: rows no longer flagged (or whose version left silver).
    """

    added: list[dict[str, Any]] = field(default_factory=list)
    updated: int = 0
    removed: int = 0


def rescore_touched(
    spark: SparkSession,
    silver_path: str,
    keys: list[TouchedKey],
    *,
    window: int,
    min_periods: int,
    threshold: float,
    batch_id: int,
) -> DataFrame:
    """The anomaly rows the touched ranges must hold now (observed_at >= from_ts per key).

    Args:
        spark: the session.
        silver_path: the silver Delta table.
        keys: the touched keys.
        window: W.
        min_periods: fewest previous values for a score.
        threshold: flag threshold.
        batch_id: stored as ``detected_batch_id`` for new rows.

    Returns:
        ``crypto_anomalies`` rows.
    """
    versions_df = read_key_tails(
        spark,
        silver_path,
        keys,
        columns=["current_price", "total_volume"],
        versions_before=window + 1,
    )
    return (
        versions_df.transform(score_versions, window=window, min_periods=min_periods)
        .filter(F.col("valid_from") >= F.col("from_ts"))
        .transform(explode_anomalies, threshold=threshold, batch_id=batch_id)
    )


def existing_range(spark: SparkSession, anomalies_path: str, keys: list[TouchedKey]) -> DataFrame:
    """The rows ``crypto_anomalies`` holds now in the touched ranges (observed_at >= from_ts per key)."""
    return (
        spark.read.format("delta")
        .load(anomalies_path)
        .filter(keys_column_filter(keys))
        .filter(F.col("observed_at") >= F.expr(sql_ts(earliest_from(keys))))
        .join(F.broadcast(touched_frame(spark, keys)), ["coin_id", "vs_currency"])
        .filter(F.col("observed_at") >= F.col("from_ts"))
        .drop("from_ts")
    )


def target_bound(keys: list[TouchedKey]) -> str:
    """A target-only SQL bound holding every touched range (partition and file skipping)."""
    currencies = ", ".join(sql_str(c) for c in sorted({k.vs_currency for k in keys}))
    return f"t.vs_currency IN ({currencies}) AND t.observed_at >= {sql_ts(earliest_from(keys))}"


def replace_anomalies(
    spark: SparkSession,
    anomalies_path: str,
    fresh_df: DataFrame,
    keys: list[TouchedKey],
    *,
    app_id: str,
    batch_id: int,
) -> AnomalyChanges:
    """Make the touched ranges of ``crypto_anomalies`` equal ``fresh_df`` with ONE MERGE.

    Args:
        spark: the session.
        anomalies_path: the ``crypto_anomalies`` Delta table (must exist).
        fresh_df: the rows the ranges must hold (see :func:`rescore_touched`).
        keys: the touched keys (define the replaced ranges).
        app_id: idempotence app id of the stream.
        batch_id: the micro-batch id (Delta transaction version).

    Returns:
        The diff that the MERGE applies (empty when the batch was already committed).
    """
    staged_df = stage_replacement(
        fresh_df, existing_range(spark, anomalies_path, keys), ANOMALY_KEYS, ANOMALY_VALUE_COLUMNS
    ).cache()
    try:
        rows = (
            staged_df.withColumn(
                "observed_at", F.date_format("observed_at", "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'")
            )
            .orderBy("observed_at", "vs_currency", "coin_id", "metric")
            .collect()
        )
        if rows:
            merge_staged(
                spark,
                anomalies_path,
                staged_df,
                ANOMALY_KEYS,
                columns=fresh_df.columns,
                update_columns=ANOMALY_VALUE_COLUMNS,
                target_filter=target_bound(keys),
                app_id=app_id,
                batch_id=batch_id,
            )
    finally:
        staged_df.unpersist()
    return AnomalyChanges(
        added=[_row_dict(r) for r in rows if r["_action"] == "insert"],
        updated=sum(1 for r in rows if r["_action"] == "update"),
        removed=sum(1 for r in rows if r["_action"] == "delete"),
    )


def _row_dict(row: Any) -> dict[str, Any]:
    out = row.asDict()
    out.pop("_action", None)
    return out


def _alert_payload(row: dict[str, Any], ctx: BatchContext) -> dict[str, Any]:
    return {"event": "anomaly", **row, "batch_id": ctx.batch_id, "run_id": ctx.run_id}


def anomalies_stage(ctx: BatchContext) -> dict[str, int]:
    """Stage: re-score the batch's touched ranges, replace them in ``crypto_anomalies``, alert.

    Args:
        ctx: the batch (after the silver MERGE).

    Returns:
        ``anomalies_added``, ``anomalies_updated``, ``anomalies_removed``, ``alerts_sent``,
        ``alerts_failed``, ``alerts_suppressed``.
    """
    settings = ctx.settings
    anomalies_path = ctx.ensure_table(ANOMALIES_TABLE)
    keys = ctx.touched_keys
    counts = dict.fromkeys(
        (
            "anomalies_added",
            "anomalies_updated",
            "anomalies_removed",
            "alerts_sent",
            "alerts_failed",
            "alerts_suppressed",
        ),
        0,
    )
    if keys:
        fresh_df = rescore_touched(
            ctx.spark,
            ctx.layout.table(SILVER_TABLE),
            keys,
            window=settings.zscore_window,
            min_periods=settings.zscore_min_periods,
            threshold=settings.zscore_threshold,
            batch_id=ctx.batch_id,
        )
        changes = replace_anomalies(
            ctx.spark, anomalies_path, fresh_df, keys, app_id=ctx.app_id, batch_id=ctx.batch_id
        )
        counts.update(
            anomalies_added=len(changes.added),
            anomalies_updated=changes.updated,
            anomalies_removed=changes.removed,
        )
        counts.update(_alert(ctx, changes.added))
    log_event(logger, "anomalies.done", batch_id=ctx.batch_id, run_id=ctx.run_id, keys=len(keys), **counts)
    crash_point("after_anomalies")
    return counts


def _alert(ctx: BatchContext, added: list[dict[str, Any]]) -> dict[str, int]:
    """Log each newly flagged anomaly (up to a cap) and POST it to the webhook when one is set."""
    shown = added[:MAX_ALERTS_PER_BATCH]
    for row in shown:
        log_event(logger, "anomaly.flagged", level=logging.WARNING, batch_id=ctx.batch_id, **row)
    suppressed = len(added) - len(shown)
    if suppressed:
        log_event(logger, "anomaly.flagged.suppressed", batch_id=ctx.batch_id, suppressed=suppressed)
    url = ctx.settings.alert_webhook_url
    if url is None or not shown:
        return {"alerts_suppressed": suppressed}
    outcome = post_alerts(url.get_secret_value(), [_alert_payload(r, ctx) for r in shown])
    return {"alerts_sent": outcome.sent, "alerts_failed": outcome.failed, "alerts_suppressed": suppressed}
