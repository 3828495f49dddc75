"""The quarantine sink: rejected records with their raw text and every failed rule, one commit per batch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from app.sinks.delta_io import append_idempotent

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

QUARANTINE_COLUMNS = (
    "batch_id",
    "source_file",
    "record_index",
    "coin_id",
    "vs_currency",
    "raw_record",
    "failed_rules",
    "errors",
    "extracted_at",
)


def to_quarantine_rows(quarantine_df: DataFrame, *, batch_id: int) -> DataFrame:
    """Shape the quarantine side of the split as ``bronze_quarantine`` rows (``QUARANTINE_DDL``)."""
    return quarantine_df.select(
        F.lit(batch_id).cast("bigint").alias("batch_id"),
        F.col("source_file"),
        F.col("record_index").cast("int"),
        F.col("coin_id"),
        F.col("vs_currency"),
        F.col("raw_record"),
        F.col("failed_rules"),
        F.col("errors"),
        F.col("extracted_at"),
    )


def write_quarantine(rows_df: DataFrame, path: str, *, app_id: str, batch_id: int) -> None:
    """Append the batch's quarantine rows once per ``(app_id, batch_id)``."""
    append_idempotent(rows_df.select(*QUARANTINE_COLUMNS), path, app_id, batch_id)
