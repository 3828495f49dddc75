"""Periodic compaction of the pipeline's Delta tables (Delta ``OPTIMIZE``, bin-packing).

Every micro-batch commits a few small files to each table: silver's SCD2 MERGE, the range MERGEs
of anomalies and gold, the metadata append. With deletion vectors a superseded row stays in its
file, marked deleted, and the file keeps the statistics it was written with. Left alone, a
long-running stream makes every later scan plan, list and open thousands of small files, and every
silver file that ever held a current row keeps ``valid_to IS NULL`` in its statistics, so the
tail read (``valid_to IS NULL OR valid_to >= t``) cannot skip it.

Every ``optimize_every_batches`` batches the handler bin-packs the small files of each table
(:func:`compact_tables`):

* incremental: only files smaller than :data:`MIN_FILE_BYTES` (or whose deleted rows pass Delta's
  ``optimize.maxDeletedRowsRatio``) are rewritten, into files of at most :data:`MAX_FILE_BYTES`; a
  full file without deletions is not rewritten again, so the cost of a run is bounded by what the
  last period wrote, not by the table's history;
* it purges deletion vectors and writes fresh statistics: a compacted silver file whose rows are
  all closed has no NULL ``valid_to`` any more, so its ``valid_to`` range lets the tail read skip it
  (the file that also holds the current rows is still read);
* it changes no row: ``OPTIMIZE`` is a ``dataChange = false`` commit, so readers, the stream's
  idempotence (``txnAppId``, which it does not touch) and a re-run of the batch are unaffected.

Compaction is an optimisation: a failure is logged and recorded in the batch's metadata, and the
batch still succeeds (its data is committed already).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from app.logs import log_event

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

MAX_FILE_BYTES = 128 * 1024 * 1024
MIN_FILE_BYTES = 64 * 1024 * 1024
_FILE_SIZE_CONFS = {
    "spark.databricks.delta.optimize.maxFileSize": str(MAX_FILE_BYTES),
    "spark.databricks.delta.optimize.minFileSize": str(MIN_FILE_BYTES),
}


def compaction_due(batch_id: int, every: int) -> bool:
    """Whether batch ``batch_id`` ends a compaction period (``every`` = 0: never)."""
    return every > 0 and (batch_id + 1) % every == 0


@contextmanager
def _session_conf(spark: SparkSession, values: dict[str, str]) -> Iterator[None]:
    previous = {key: spark.conf.get(key, None) for key in values}
    for key, value in values.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def compact_table(spark: SparkSession, path: str) -> dict[str, int]:
    """Bin-pack the small files of the Delta table at ``path``; returns the files removed and added.

    Raises:
        Exception: whatever Delta raises (the caller decides whether it is fatal).
    """
    from delta.tables import DeltaTable

    with _session_conf(spark, _FILE_SIZE_CONFS):
        row = DeltaTable.forPath(spark, path).optimize().executeCompaction().first()
    metrics = row["metrics"] if row is not None else None
    if metrics is None:
        return {"files_removed": 0, "files_added": 0}
    return {"files_removed": int(metrics["numFilesRemoved"]), "files_added": int(metrics["numFilesAdded"])}


def compact_tables(spark: SparkSession, paths: Iterable[str], *, batch_id: int | None = None) -> dict:
    """Compact each existing Delta table of ``paths``; never raises.

    Returns:
        ``{"files_removed": n, "files_added": n, "tables": k}`` summed over the tables, plus
        ``"errors"`` (table path -> message) when some table could not be compacted.
    """
    from delta.tables import DeltaTable

    summary: dict = {"files_removed": 0, "files_added": 0, "tables": 0}
    errors: dict[str, str] = {}
    start = time.monotonic()
    for path in paths:
        try:
            if not DeltaTable.isDeltaTable(spark, path):
                continue
            counts = compact_table(spark, path)
        except Exception as exc:  # an optimisation must not fail a committed batch
            message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            errors[path] = message[:500]
            log_event(
                logger,
                "compaction.failed",
                level=logging.WARNING,
                batch_id=batch_id,
                table=path,
                error=message,
            )
            continue
        summary["tables"] += 1
        summary["files_removed"] += counts["files_removed"]
        summary["files_added"] += counts["files_added"]
    if errors:
        summary["errors"] = errors
    log_event(
        logger,
        "compaction.done",
        batch_id=batch_id,
        seconds=round(time.monotonic() - start, 3),
        **{k: v for k, v in summary.items() if k != "errors"},
    )
    return summary
