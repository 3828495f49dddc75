"""Silver Type 2 SCD: a pure plan builder and a thin Delta MERGE executor.

Silver is a function of the *set* of valid bronze records (ARCHITECTURE.md, "Silver"):

1. per ``(key, valid_from)`` one observation wins: the earliest ``extracted_at``, then the smallest
   ``row_hash`` and ``source_file`` (the others are *duplicates*); the winner's ``extracted_at`` is
   thus the earliest fetch of that instant, whichever batch brought it;
2. per key, ordered by ``valid_from``, an observation whose ``row_hash`` equals its predecessor's
   is collapsed into it (*unchanged*); the version keeps the collapsed observations (time, fetch
   time, file) in ``collapsed_observations``, so a late observation with other values landing
   between them splits the version again exactly as processing everything at once would; the
   array keeps only the latest ``max_collapsed`` of them (:data:`DEFAULT_MAX_COLLAPSED`, setting
   ``COINLAKE_MAX_COLLAPSED_OBSERVATIONS``): see "Beyond the bound" below;
3. ``valid_to`` is the next version's ``valid_from``; the last version is current.

A batch only needs, per touched key, the *tail* of silver from the version just before its earliest
observation (rows whose interval reaches that time: ``valid_to IS NULL OR valid_to >= min_obs``).
:func:`build_scd2_plan` explodes the tail back into observations, re-applies the three steps to
them ∪ the batch and says, per row, whether to
insert, update, delete or leave it; :func:`apply_scd2_merge` replaces the tail in ONE MERGE whose target is
pruned to the batch's currencies and to rows whose interval reaches the batch's earliest time.

Beyond the bound. A coin whose values never change while ``last_updated`` moves would otherwise
grow its version's array without end. The *latest* observations are the ones kept, because late
data is rare and recent. Whatever arrives and in whatever order, the current values, and the
values silver reports at every instant from a version's earliest kept collapsed observation on,
stay exactly what processing all records at once gives; so does everything while no version holds
more than ``max_collapsed`` collapsed observations. Only a late observation *with other values*
that falls in the forgotten stretch (between a version's ``valid_from`` and its earliest kept
collapsed observation) is placed less precisely: it still becomes its own version, but the old
values resume at the earliest kept observation instead of at the first forgotten one after it, so
its interval is longer than an all-at-once run would make it, by at most that stretch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.sinks.delta.io import batch_marker, delta_txn, source_not_rematerialized, stable_source
from app.sinks.delta.touched import sql_str
from app.tables import SILVER_DDL, SILVER_KEYS, ddl_column_names

# Plan actions that write the row (the rest: ``delete``, ``none``).
WRITTEN = ("insert", "update")

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

SILVER_COLUMNS: tuple[str, ...] = ddl_column_names(SILVER_DDL)
COLLAPSED = "collapsed_observations"
# Columns the plan derives rather than takes from an observation.
_BOOKKEEPING = ("valid_to", "is_current", "batch_id", "updated_batch_id", COLLAPSED)
_FAR_FUTURE = "9999-12-31 00:00:00"
# Collapsed observations kept per version (the latest ones): four hours of one-minute polling.
DEFAULT_MAX_COLLAPSED = 240


@dataclass(frozen=True)
class MergeScope:
    """Literal bounds that prune the MERGE target: the batch's currencies and its earliest observation."""

    currencies: tuple[str, ...]
    min_valid_from: str
    """``yyyy-MM-dd HH:mm:ss.SSSSSS`` in UTC (formatted by Spark, so no Python time-zone conversion)."""


def scope_condition(scope: MergeScope, alias: str = "t") -> str:
    """SQL predicate on the target restricting it to rows a batch with this scope can touch."""
    cur = ", ".join(sql_str(c) for c in scope.currencies)
    ts = scope.min_valid_from
    return f"{alias}.vs_currency IN ({cur}) AND ({alias}.valid_to IS NULL OR {alias}.valid_to >= TIMESTAMP '{ts}')"


def merge_marker(app_id: str, batch_id: int) -> str:
    """The ``userMetadata`` of a batch's silver commit (lets a re-run find what silver was before it)."""
    return batch_marker(app_id, batch_id)


def silver_version_before(spark: SparkSession, path: str, marker: str) -> tuple[int, bool]:
    """The silver version a batch must read: ``(version, already_committed)``.

    When a recent commit carries ``marker`` (the batch already merged and is being re-run), the
    version just before that commit; otherwise the latest version.
    """
    from delta.tables import DeltaTable

    rows = DeltaTable.forPath(spark, path).history(20).select("version", "userMetadata").collect()
    for row in rows:
        if row["userMetadata"] == marker:
            return int(row["version"]) - 1, True
    return int(max(r["version"] for r in rows)), False


def apply_scd2_merge(
    spark: SparkSession,
    path: str,
    staged_df: DataFrame,
    scope: MergeScope,
    *,
    app_id: str,
    batch_id: int,
    source_ready: bool = False,
) -> None:
    """Run the one silver MERGE of a batch, idempotent per ``(app_id, batch_id)``.

    Args:
        spark: the session.
        path: the silver table.
        staged_df: plan rows with ``_action`` in (``insert``, ``update``, ``delete``).
        scope: target pruning bounds (every staged existing row is inside them).
        app_id: the stream's idempotence id.
        batch_id: the micro-batch id.
        source_ready: ``staged_df`` cannot change between Delta's passes over it (a local
            relation of the kernels' rows, or a checkpoint): it is used as it is.
    """
    from delta.tables import DeltaTable

    keys = " AND ".join(f"t.{k} = s.{k}" for k in (*SILVER_KEYS, "valid_from"))
    condition = f"{keys} AND {scope_condition(scope)}"
    values: dict[str, str | Column] = {c: f"s.{c}" for c in SILVER_COLUMNS}
    merge = (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge((staged_df if source_ready else stable_source(staged_df)).alias("s"), condition)
        .whenMatchedDelete(condition="s._action = 'delete'")
        .whenMatchedUpdate(condition="s._action IN ('insert', 'update')", set=values)
        .whenNotMatchedInsert(condition="s._action IN ('insert', 'update')", values=values)
    )
    with delta_txn(spark, app_id, batch_id, marked=True), source_not_rematerialized(spark):
        merge.execute()
