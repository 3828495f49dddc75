"""The quarantine sink: rejected records with their raw text and every failed rule, one commit per batch."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from app.sinks.delta.io import delta_txn

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

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


# A file set aside whole by ``coinlake quarantine-file``: record_index -1 (never a record position,
# and distinct from the NULL of a file the parser could not read), batch_id -1.
OPERATOR_RULE = "quarantined_by_operator"
WHOLE_FILE_INDEX = -1


def canonical_path(path: str) -> str:
    """A bronze path in one form for comparisons: ``file:///a``, ``file:/a`` and ``/a`` are ``/a``."""
    if path.startswith("file:"):
        return "/" + path[len("file:") :].lstrip("/")
    return path


def canonical_path_col(col: str = "source_file"):  # noqa: ANN201 - a Column
    """:func:`canonical_path` as a Column expression."""
    return F.regexp_replace(F.col(col), "^file:/+", "/")


def operator_quarantined_files(spark: SparkSession, path: str) -> frozenset[str]:
    """The files set aside with ``coinlake quarantine-file`` (canonical paths); empty without a table."""
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, path):
        return frozenset()
    rows = (
        spark.read.format("delta")
        .load(path)
        .filter(F.array_contains("failed_rules", OPERATOR_RULE))
        .select(canonical_path_col().alias("f"))
        .distinct()
        .collect()
    )
    return frozenset(r["f"] for r in rows)


def without_files(df: DataFrame, files: frozenset[str]) -> DataFrame:
    """``df`` without the rows of ``files`` (canonical paths); ``df`` itself when there are none."""
    if not files:
        return df
    return df.filter(~canonical_path_col().isin(sorted(files)))


def quarantine_file(spark: SparkSession, table_path: str, file_path: str, *, reason: str) -> str:
    """Record ``file_path`` whole in ``bronze_quarantine`` so the stream skips it; bronze is not touched.

    Idempotent: a second call for the same file keeps the first row.

    Returns:
        The ``source_file`` value recorded (the file's URI as Spark lists it).

    Raises:
        ConfigError: the file cannot be read.
    """
    from app.errors import ConfigError
    from app.sources.bronze import read_bronze_files

    try:
        files_df = read_bronze_files(spark, [file_path])
        rows = files_df.collect()
    except Exception as exc:  # noqa: BLE001 - a missing file is an operator error, said in one line
        raise ConfigError(
            f"quarantine-file: cannot read {file_path}: {str(exc).splitlines()[0][:200]}"
        ) from exc
    source = rows[0]["source_file"] if rows else file_path  # a zero-byte file has no row
    text = rows[0]["value"] if rows else ""
    message = f"{OPERATOR_RULE}: {reason}"
    rows_df = spark.createDataFrame(
        [(-1, source, WHOLE_FILE_INDEX, None, None, text, [OPERATOR_RULE], [message], None)],
        "batch_id BIGINT, source_file STRING, record_index INT, coin_id STRING, vs_currency STRING, "
        "raw_record STRING, failed_rules ARRAY<STRING>, errors ARRAY<STRING>, extracted_at TIMESTAMP",
    )
    # One Delta transaction id per file: quarantining another file later is a new transaction.
    digest = hashlib.sha1(canonical_path(source).encode("utf-8")).hexdigest()
    write_quarantine(rows_df, table_path, app_id=f"coinlake-quarantine-file-{digest}", batch_id=0)
    return source
