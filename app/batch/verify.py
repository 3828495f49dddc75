"""Reconcile the derived tables with silver: recompute a range, diff it, optionally repair it.

``crypto_anomalies``, ``gold_coin_ohlc`` and ``gold_crypto_metrics`` are maintained incrementally
by the stream; nothing ever re-reads them whole, so a drift (a lost write, a bug, a manual edit)
would never correct itself. :func:`verify_lake` recomputes each table for a range from
``silver_crypto_clean`` with the same pure functions the stream uses, diffs the recomputation with
the stored rows and, when asked, applies the diff with ONE plain MERGE per table.

* Range: rows whose ``observed_at`` / ``bucket_start`` / ``metric_date`` is on or after
  ``from_date`` (a UTC day), or every row. Scoring a version needs the W+1 versions before it,
  so the anomaly recompute ranks every key's versions and starts W+1 versions before the first
  one in range; candles and daily metrics from a day boundary need only the versions in range.
* Comparison: on the value columns only. ``detected_batch_id`` / ``updated_batch_id`` record
  which batch wrote a row and are not drift. Doubles within :data:`REL_TOL` (relative) or
  :data:`ABS_TOL` (absolute, for values near 0) are equal: the stream and a full recomputation
  add the same numbers in a different order.
* Repair: inserts the missing rows (bookkeeping column :data:`REPAIR_BATCH_ID`, "written by
  verify --repair"), updates the value columns of differing rows (their bookkeeping column is
  kept) and deletes the extra rows. An empty diff commits nothing, which makes a repair
  idempotent without the stream's ``txnAppId`` (there is no batch id here). Silver, quarantine,
  metadata and the warehouse are never written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from functools import reduce
from typing import TYPE_CHECKING, Any

import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DateType, DoubleType, FloatType, TimestampType

from app.batch.frames import struct_type
from app.batch.grouped import by_key_bucket
from app.batch.kernels.candles import aggregate_coin_ohlc
from app.batch.kernels.metrics import aggregate_market_metrics, last_version_of_day
from app.batch.kernels.scores import detect_anomalies
from app.errors import PipelineError
from app.sinks.delta.range_merge import apply_staged, stage_replacement
from app.tables import (
    ANOMALIES,
    GOLD_METRICS,
    GOLD_OHLC,
    SILVER,
    SILVER_DDL,
    SILVER_KEYS,
    TABLES,
    ddl_column_names,
    ensure_table,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from app.paths import Layout

SILVER_COLUMNS = ddl_column_names(SILVER_DDL)
ANOMALY_KEYS = TABLES[ANOMALIES].keys
OHLC_KEYS = TABLES[GOLD_OHLC].keys
METRICS_KEYS = TABLES[GOLD_METRICS].keys
# detected_batch_id / updated_batch_id of a row inserted by ``verify --repair``.
REPAIR_BATCH_ID = -1
REL_TOL = 1e-9
ABS_TOL = 1e-9
MAX_EXAMPLES = 5
# Diff action -> what the report calls it.
KINDS = {"insert": "missing", "delete": "extra", "update": "differing"}


@dataclass(frozen=True)
class DerivedTable:
    """A derived table: its key, the column that places a row in a range, its bookkeeping column."""

    name: str
    keys: tuple[str, ...]
    range_column: str
    bookkeeping: str


DERIVED_TABLES = (
    DerivedTable(ANOMALIES, ANOMALY_KEYS, "observed_at", "detected_batch_id"),
    DerivedTable(GOLD_OHLC, OHLC_KEYS, "bucket_start", "updated_batch_id"),
    DerivedTable(GOLD_METRICS, METRICS_KEYS, "metric_date", "updated_batch_id"),
)


@dataclass
class TableReport:
    """What :func:`verify_lake` found in one table; ``repaired``: the MERGE's counts, if it ran."""

    table: str
    expected_rows: int
    counts: dict[str, int]
    examples: dict[str, list[dict[str, Any]]]
    repaired: dict[str, int] | None = None

    @property
    def differences(self) -> int:
        """Rows missing + extra + differing."""
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (dates and timestamps are UTC strings already)."""
        return {
            "table": self.table,
            "expected_rows": self.expected_rows,
            "stored_rows": self.expected_rows - self.counts["missing"] + self.counts["extra"],
            **self.counts,
            "examples": self.examples,
            "repaired": self.repaired,
        }


# ---------------------------------------------------------------- pure recompute and diff


def filter_from(df: DataFrame, *, column: str, from_date: date | None) -> DataFrame:
    """Keep the rows whose ``column`` (DATE or TIMESTAMP) is on or after ``from_date`` (UTC).

    Args:
        df: rows holding ``column``, the range column.
        from_date: the first day in range; None keeps every row.
    """
    if from_date is None:
        return df
    # The string literal cast in the session time zone (UTC) gives the day's midnight.
    start = F.lit(from_date.isoformat()).cast(df.schema[column].dataType)
    return df.filter(F.col(column) >= start)


def filter_scoring_versions(
    silver_df: DataFrame, *, from_date: date | None, versions_before: int
) -> DataFrame:
    """Keep each key's versions from ``versions_before`` versions before its first one in range.

    Keys without a version on or after ``from_date`` are dropped (nothing of theirs to score).

    Args:
        silver_df: silver versions (every version of the keys).
        from_date: the first day in range; None keeps every version.
        versions_before: how many earlier versions a score needs (W+1).
    """
    if from_date is None:
        return silver_df
    start = F.lit(from_date.isoformat()).cast("timestamp")
    ordered = Window.partitionBy(*SILVER_KEYS).orderBy("valid_from")
    per_key = Window.partitionBy(*SILVER_KEYS)
    first_in_range = F.min(F.when(F.col("valid_from") >= start, F.col("_rank"))).over(per_key)
    return (
        silver_df.withColumn("_rank", F.row_number().over(ordered))
        .withColumn("_first_in_range", first_in_range)
        .filter(F.col("_rank") >= F.col("_first_in_range") - versions_before)
        .drop("_rank", "_first_in_range")
    )


def recompute_anomalies(
    silver_df: DataFrame, *, from_date: date | None, window: int, min_periods: int, threshold: float
) -> DataFrame:
    """The ``crypto_anomalies`` rows of the range, scored from silver by the stream's own kernel.

    :func:`app.batch.kernels.scores.detect_anomalies` runs on the executors per hash bucket of the
    key (:func:`app.batch.grouped.by_key_bucket`), so the whole of silver never meets the driver.

    Args:
        silver_df: every silver version (the range's scoring history is picked here).
        from_date: the first day in range; None for everything.
        window, min_periods, threshold: the detector's settings.

    Returns:
        ``crypto_anomalies`` rows with ``detected_batch_id`` = :data:`REPAIR_BATCH_ID`.
    """
    versions_df = silver_df.select(*SILVER_KEYS, "valid_from", "current_price", "total_volume").transform(
        filter_scoring_versions, from_date=from_date, versions_before=window + 1
    )

    def kernel(versions: pd.DataFrame) -> pd.DataFrame:
        return detect_anomalies(
            versions, window=window, min_periods=min_periods, threshold=threshold, batch_id=REPAIR_BATCH_ID
        )

    return by_key_bucket([versions_df], kernel, struct_type(TABLES[ANOMALIES].ddl)).transform(
        filter_from, column="observed_at", from_date=from_date
    )


def recompute_gold(
    silver_df: DataFrame, anomalies_df: DataFrame, *, from_date: date | None
) -> dict[str, DataFrame]:
    """The candles and daily metrics of the range (whole days: the versions in range suffice).

    The stream's kernels (:mod:`app.batch.kernels.candles`, :mod:`app.batch.kernels.metrics`) on
    the executors: candles per hash bucket of the key, each coin's last version of a day likewise,
    then the metrics per (vs_currency, day).

    Args:
        silver_df: silver versions.
        anomalies_df: the recomputed anomaly rows of the range (``n_anomalies`` counts them).
        from_date: the first day in range; None for everything.

    Returns:
        ``{table name: rows}``, ``updated_batch_id`` = :data:`REPAIR_BATCH_ID`.
    """
    in_range_df = silver_df.transform(filter_from, column="valid_from", from_date=from_date)
    versions_df = in_range_df.select(*SILVER_KEYS, "valid_from", "current_price", "total_volume")

    def candles(versions: pd.DataFrame, flagged: pd.DataFrame) -> pd.DataFrame:
        return aggregate_coin_ohlc(versions, flagged, batch_id=REPAIR_BATCH_ID)

    def metrics(days: pd.DataFrame) -> pd.DataFrame:
        return aggregate_market_metrics(days, batch_id=REPAIR_BATCH_ID)

    days_df = by_key_bucket(
        [in_range_df.select(*SILVER_COLUMNS)],
        last_version_of_day,
        struct_type(f"{SILVER_DDL}, metric_date DATE"),
    )
    return {
        GOLD_OHLC: by_key_bucket([versions_df, anomalies_df], candles, struct_type(TABLES[GOLD_OHLC].ddl)),
        GOLD_METRICS: by_key_bucket(
            [days_df], metrics, struct_type(TABLES[GOLD_METRICS].ddl), keys=("vs_currency", "metric_date")
        ),
    }


def _values_equal(left: Column, right: Column, *, tolerant: bool) -> Column:
    """Null-safe equality; with ``tolerant``, doubles within REL_TOL or ABS_TOL are equal too."""
    same = left.eqNullSafe(right)
    if not tolerant:
        return same
    bound = F.greatest(F.lit(REL_TOL) * F.greatest(F.abs(left), F.abs(right)), F.lit(ABS_TOL))
    return same | F.coalesce(F.abs(left - right) <= bound, F.lit(False))


def diff_table(
    fresh_df: DataFrame, existing_df: DataFrame, keys: Sequence[str], compared: Sequence[str]
) -> DataFrame:
    """The rows that make ``existing_df`` equal ``fresh_df``, with what differs.

    :func:`app.sinks.delta.range_merge.stage_replacement` compares exactly; the stored values joined
    back then drop the updates whose doubles differ only within the tolerance, and name the
    differing columns of the others.

    Args:
        fresh_df: the recomputed rows (unique on ``keys``); existing_df: the stored rows.
        keys: the table's key; compared: the value columns.

    Returns:
        ``fresh_df``'s columns, ``_action`` (insert/update/delete), ``_differing`` (column names,
        empty unless update) and ``_old_<c>`` for each compared column (NULL for inserts).
    """
    staged_df = stage_replacement(fresh_df, existing_df, keys, compared)
    old_df = existing_df.select(
        *[F.col(k).alias(f"_old_key_{k}") for k in keys],
        *[F.col(c).alias(f"_old_{c}") for c in compared],
    )
    on = reduce(lambda a, b: a & b, [F.col(k).eqNullSafe(F.col(f"_old_key_{k}")) for k in keys])
    floating = {f.name for f in fresh_df.schema.fields if isinstance(f.dataType, DoubleType | FloatType)}
    differs = [
        F.when(~_values_equal(F.col(c), F.col(f"_old_{c}"), tolerant=c in floating), F.lit(c))
        for c in compared
    ]
    differing = F.when(
        F.col("_action") == "update", F.filter(F.array(*differs), lambda name: name.isNotNull())
    ).otherwise(F.array().cast("array<string>"))
    return (
        staged_df.join(old_df, on, "left")
        .drop(*[f"_old_key_{k}" for k in keys])
        .withColumn("_differing", differing)
        .filter((F.col("_action") != "update") | (F.size("_differing") > 0))
    )


# ---------------------------------------------------------------- I/O: read, report, repair


def _printable(df: DataFrame) -> DataFrame:
    """Dates and timestamps as strings in the session time zone (UTC), not the driver's."""
    return df.select(
        *[
            F.col(f.name).cast("string").alias(f.name)
            if isinstance(f.dataType, DateType | TimestampType)
            else F.col(f.name)
            for f in df.schema.fields
        ]
    )


def _summarize(
    diff_df: DataFrame, keys: Sequence[str], *, limit: int = MAX_EXAMPLES
) -> tuple[dict[str, int], dict[str, list[dict[str, Any]]]]:
    """Counts per kind and up to ``limit`` examples of each by key order: ``{'key': {...}}``, plus
    ``'columns': {name: {'stored': v, 'expected': v}}`` for differing rows."""
    # One Spark job: every action's count and its first rows by key, ranked in a window.
    per_action = Window.partitionBy("_action")
    ranked_df = (
        diff_df.withColumn("_count", F.count(F.lit(1)).over(per_action))
        .withColumn("_rank", F.row_number().over(per_action.orderBy(*keys)))
        .filter(F.col("_rank") <= limit)
    )
    counts = dict.fromkeys(KINDS.values(), 0)
    examples: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS.values()}
    for row in sorted(_printable(ranked_df).collect(), key=lambda r: (r["_action"], r["_rank"])):
        kind = KINDS[row["_action"]]
        counts[kind] = int(row["_count"])
        example: dict[str, Any] = {"key": {k: row[k] for k in keys}}
        if row["_action"] == "update":
            example["columns"] = {
                c: {"stored": row[f"_old_{c}"], "expected": row[c]} for c in row["_differing"]
            }
        examples[kind].append(example)
    return counts, examples


def _target_filter(table: DerivedTable, from_date: date | None) -> str:
    if from_date is None:
        return "TRUE"
    literal = "DATE" if table.range_column == "metric_date" else "TIMESTAMP"
    return f"t.`{table.range_column}` >= {literal} '{from_date.isoformat()}'"


def _check_table(
    spark: SparkSession,
    layout: Layout,
    table: DerivedTable,
    fresh_df: DataFrame,
    *,
    from_date: date | None,
    repair: bool,
) -> TableReport:
    """Diff one table's range with ``fresh_df``; with ``repair``, apply a non-empty diff in one
    MERGE (creating a missing table first). ``repaired`` holds the MERGE's counts when it ran."""
    from delta.tables import DeltaTable

    path = layout.table(table.name)
    exists = DeltaTable.isDeltaTable(spark, path)
    stored_df = (
        spark.read.format("delta").load(path) if exists else spark.createDataFrame([], TABLES[table.name].ddl)
    )
    existing_df = stored_df.transform(filter_from, column=table.range_column, from_date=from_date)
    compared = [c for c in fresh_df.columns if c not in table.keys and c != table.bookkeeping]
    # The recomputed anomalies are cached by the caller: the candles count them too.
    owns_cache = not fresh_df.is_cached
    fresh_df = fresh_df.cache()
    diff_df = diff_table(fresh_df, existing_df, table.keys, compared).cache()
    try:
        counts, examples = _summarize(diff_df, table.keys)
        report = TableReport(table.name, fresh_df.count(), counts, examples)
        if repair and report.differences:
            ensure_table(spark, table.name, path)
            report.repaired = apply_staged(
                spark,
                path,
                diff_df.select(*fresh_df.columns, "_action"),
                table.keys,
                columns=fresh_df.columns,
                update_columns=compared,
                target_filter=_target_filter(table, from_date),
            )
    finally:
        diff_df.unpersist()
        if owns_cache:
            fresh_df.unpersist()
    return report


def verify_lake(
    spark: SparkSession,
    layout: Layout,
    *,
    from_date: date | None,
    window: int,
    min_periods: int,
    threshold: float,
    repair: bool = False,
) -> list[TableReport]:
    """Recompute the three derived tables' range from silver, report the drift, optionally repair it.

    Args:
        spark, layout: the session and the storage layout.
        from_date: the first UTC day in range; None for everything.
        window, min_periods, threshold: the detector's settings (``zscore_*``).
        repair: apply each table's non-empty diff in one MERGE.

    Returns:
        One report per table, in :data:`DERIVED_TABLES` order.

    Raises:
        PipelineError: there is no silver table to verify against.
    """
    from delta.tables import DeltaTable

    silver_path = layout.table(SILVER)
    if not DeltaTable.isDeltaTable(spark, silver_path):
        raise PipelineError(f"verify: no silver table at {silver_path} (run the stream first)")
    silver_df = spark.read.format("delta").load(silver_path)
    anomalies_df = recompute_anomalies(
        silver_df, from_date=from_date, window=window, min_periods=min_periods, threshold=threshold
    ).cache()
    try:
        fresh = {
            ANOMALIES: anomalies_df,
            **recompute_gold(silver_df, anomalies_df, from_date=from_date),
        }
        return [
            _check_table(spark, layout, table, fresh[table.name], from_date=from_date, repair=repair)
            for table in DERIVED_TABLES
        ]
    finally:
        anomalies_df.unpersist()
