"""The quarantine sink: rejected records with their raw text and every failed rule, one commit per batch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from app.sinks.delta_io import delta_txn

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


# A record is quarantined once, whatever the checkpoint: a file-level row has a NULL record_index.
QUARANTINE_KEY_MATCH = "t.source_file <=> s.source_file AND t.record_index <=> s.record_index"


def write_quarantine(rows_df: DataFrame, path: str, *, app_id: str, batch_id: int) -> None:
    """Insert the batch's quarantine rows that are not there yet, by ``(source_file, record_index)``.

    An insert-only MERGE: a re-run batch, or a new checkpoint (a new app id) over kept tables,
    inserts nothing for a record already quarantined. Within one ``(app_id, batch_id)`` the MERGE
    also carries Delta's transaction id, so a re-run of a committed batch makes no commit at all.
    """
    from delta.tables import DeltaTable

    spark = rows_df.sparkSession
    with delta_txn(spark, app_id, batch_id):
        (
            DeltaTable.forPath(spark, path)
            .alias("t")
            .merge(rows_df.select(*QUARANTINE_COLUMNS).alias("s"), QUARANTINE_KEY_MATCH)
            .whenNotMatchedInsertAll()
            .execute()
        )
