"""The anomalies stage: re-score the touched ranges and apply the difference to ``crypto_anomalies``.

Per touched key (docs/DESIGN.md, section 4) the range ``observed_at >= from_ts`` is scored twice from
the batch's working set (:mod:`app.sinks.delta.working_set`): on the after-image (what the range must hold)
and on the before-image (what it held). Their difference is the change: insert new rows, update
changed numbers, delete rows no longer flagged. The range is open-ended because a late observation
re-scores the ``W`` observations after it. For in-order data the change is only inserts, written as
an append; otherwise ONE MERGE. Both are idempotent per ``(app_id, batch_id)``, and the difference
does not depend on the table, so a re-run of a committed batch computes the same change, which
Delta skips. Alerts go through an outbox (:mod:`app.alerts.outbox`): stored as pending before the
commit, delivered after it and marked, so a crash between the two loses none (at least once), and
an alert is sent once per key, metric and time.

The stage does not read ``crypto_anomalies``: a table that drifted from silver stays drifted until
``coinlake verify --repair``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from app.alerts.outbox import AlertOutbox
from app.alerts.webhook import deliver_each
from app.batch.context import Stage
from app.batch.kernels.batch import ANOMALY_VALUE_COLUMNS
from app.faults import crash_point
from app.logs import log_event
from app.sinks.delta.io import append_idempotent, batch_marker, marked_commit
from app.sinks.delta.range_merge import merge_staged
from app.sinks.delta.touched import sql_str, sql_ts
from app.tables import ANOMALIES, TABLES

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from app.batch.context import BatchContext
    from app.batch.frames import Rows

logger = logging.getLogger(__name__)
ANOMALY_KEYS = TABLES[ANOMALIES].keys

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


def replace_anomalies(
    spark: SparkSession,
    anomalies_path: str,
    staged: Rows,
    *,
    currencies: list[str],
    earliest: str,
    app_id: str,
    batch_id: int,
    before_commit: Callable[[list[dict[str, Any]]], object] | None = None,
) -> AnomalyChanges:
    """Apply a staged difference to ``crypto_anomalies``: an append when it only inserts, else ONE MERGE.

    Args:
        spark: the session to write with.
        anomalies_path: the ``crypto_anomalies`` Delta table (must exist).
        staged: the kernels' difference of the fresh rows against the old ones (``_action``).
        currencies: the touched vs currencies (bound the MERGE's target scan).
        earliest: the earliest ``from_ts`` (UTC text; bounds the target scan by time).
        app_id: idempotence app id of the stream.
        batch_id: the micro-batch id (Delta transaction version).
        before_commit: called with the inserted rows before the commit (the alert outbox).

    Returns:
        The difference applied; empty when a commit of this batch is already in the table (a
        re-run after a crash), so its anomalies are not alerted twice.
    """
    if marked_commit(spark, anomalies_path, batch_marker(app_id, batch_id), depth=10) is not None:
        return AnomalyChanges()
    rows = row_dicts(staged.pandas())
    actions = {r["_action"] for r in rows}
    added = [_without_action(r) for r in rows if r["_action"] == "insert"]
    if before_commit is not None:
        before_commit(added)
    staged_df = staged.spark(spark)
    if actions == {"insert"}:
        # Only new rows (in-order data): a blind append commits in one cheap job.
        append_idempotent(staged_df.drop("_action"), anomalies_path, app_id, batch_id, marked=True)
    elif rows:
        listed = ", ".join(sql_str(c) for c in currencies)
        merge_staged(
            spark,
            anomalies_path,
            staged_df,
            ANOMALY_KEYS,
            columns=[c for c in staged_df.columns if c != "_action"],
            update_columns=ANOMALY_VALUE_COLUMNS,
            target_filter=f"t.vs_currency IN ({listed}) AND t.observed_at >= {sql_ts(earliest)}",
            app_id=app_id,
            batch_id=batch_id,
            marked=True,
            source_ready=True,
        )
    return AnomalyChanges(
        added=added,
        updated=sum(1 for r in rows if r["_action"] == "update"),
        removed=sum(1 for r in rows if r["_action"] == "delete"),
    )


def row_dicts(pdf: pd.DataFrame) -> list[dict[str, Any]]:
    """Staged anomaly rows as plain dicts in a stable order, ``observed_at`` as UTC ISO text.

    Values are Python scalars (None for NULL), ready for a log event or a JSON alert.
    """
    if pdf.empty:
        return []
    ordered = pdf.sort_values(["observed_at", "vs_currency", "coin_id", "metric"], kind="stable")
    out = []
    for rec in ordered.to_dict("records"):
        row: dict[str, Any] = {}
        for key, value in rec.items():
            if key == "observed_at":
                row[key] = None if pd.isna(value) else pd.Timestamp(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            elif value is None or (not isinstance(value, str) and pd.isna(value)):
                row[key] = None
            else:
                row[key] = value.item() if hasattr(value, "item") else value
        out.append(row)
    return out


def _without_action(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
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
    anomalies_path = ctx.layout.table(ANOMALIES)
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
    url = ctx.settings.alert_webhook_url
    outbox = AlertOutbox(f"{ctx.layout.root}/alerts") if url is not None else None
    rows = ctx.rows
    if rows is not None:
        ctx.outputs[ANOMALIES] = rows.outputs["anomalies_fresh"]
        changes = replace_anomalies(
            ctx.spark,
            anomalies_path,
            rows.outputs["anomalies_staged"],
            currencies=rows.currencies,
            earliest=rows.earliest,
            app_id=ctx.app_id,
            batch_id=ctx.batch_id,
            before_commit=None if outbox is None else lambda added: _store_alerts(ctx, outbox, added),
        )
        counts.update(
            anomalies_added=len(changes.added),
            anomalies_updated=changes.updated,
            anomalies_removed=changes.removed,
        )
        counts.update(_alert(ctx, changes.added))
    if outbox is not None and url is not None:
        # Every pending alert, this batch's and any a crash left behind (at least once).
        sent, left = outbox.deliver(
            lambda payloads: deliver_each(
                url.get_secret_value(),
                payloads,
                max_attempts=ctx.settings.alert_max_attempts,
                budget_seconds=ctx.settings.alert_budget_seconds,
            )
        )
        counts.update(alerts_sent=sent, alerts_failed=left)
    log_event(logger, "anomalies.done", batch_id=ctx.batch_id, run_id=ctx.run_id, **counts)
    crash_point("after_anomalies")
    return counts


def _alert(ctx: BatchContext, added: list[dict[str, Any]]) -> dict[str, int]:
    """Log each newly flagged anomaly (up to a cap); the outbox delivers them to the webhook."""
    shown = added[:MAX_ALERTS_PER_BATCH]
    for row in shown:
        log_event(logger, "anomaly.flagged", level=logging.WARNING, batch_id=ctx.batch_id, **row)
    suppressed = len(added) - len(shown)
    if suppressed:
        log_event(logger, "anomaly.flagged.suppressed", batch_id=ctx.batch_id, suppressed=suppressed)
    return {"alerts_suppressed": suppressed}


def _store_alerts(ctx: BatchContext, outbox: AlertOutbox, added: list[dict[str, Any]]) -> None:
    """Store the batch's alerts as pending, before its anomalies are committed."""
    outbox.add(_alert_payload(r, ctx) for r in added[:MAX_ALERTS_PER_BATCH])


# Runs with the silver MERGE: it scores the working set itself, it does not read silver.
ANOMALIES_STAGE = Stage("anomalies", anomalies_stage, writes=(ANOMALIES,))
