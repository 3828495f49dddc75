"""Replace a bounded range of a Delta table with recomputed rows, in ONE source-driven MERGE.

The anomalies and gold stages recompute the rows of the touched ranges (docs/DESIGN.md, section 4)
and must make the table's ranges equal them: insert new rows, update changed ones, delete rows that
are no longer produced. Doing the deletes with ``whenNotMatchedBySource`` would need a condition
naming every touched range (one OR term per key: thousands of terms to analyse and generate code
for) and a full outer join over every target file. Instead the diff is computed first, by a full
outer join of the fresh rows with the range's current rows (read with a broadcast join on the
touched keys), and the MERGE only applies it:

* ``_action = 'insert'``: in fresh, not in the table;
* ``_action = 'update'``: in both, some compared column differs;
* ``_action = 'delete'``: in the table's range, no longer in fresh.

Rows equal on every compared column are left out, so an idempotent re-run stages nothing. The
MERGE's ON clause adds a target-only predicate (``target_filter``) that bounds the files Delta
scans to the touched time range, so a batch's cost does not grow with the table's history.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from app.sinks.delta.io import delta_txn, source_not_rematerialized, stable_source

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

ACTIONS = ("insert", "update", "delete")


def stage_replacement(
    fresh_df: DataFrame,
    existing_df: DataFrame,
    keys: Sequence[str],
    compared: Sequence[str],
) -> DataFrame:
    """The diff that makes ``existing_df`` equal ``fresh_df``: ``fresh_df``'s columns + ``_action``.

    Args:
        fresh_df: the rows the range must hold (unique on ``keys``).
        existing_df: the range's current rows (at least ``keys`` and ``compared``).
        keys: the table's key columns.
        compared: the columns whose difference makes an update.

    Returns:
        Only rows to insert, update or delete. A delete row carries its keys; its other columns are
        NULL. Keys are matched null-safely.
    """
    old_df = existing_df.select(
        *[F.col(k).alias(f"_old_key_{k}") for k in keys],
        *[F.col(c).alias(f"_old_{c}") for c in compared],
        F.lit(True).alias("_old"),
    )
    new_df = fresh_df.withColumn("_new", F.lit(True))
    # Keys may be NULL (e.g. a market-cap category): match them null-safely, as the MERGE does.
    on = F.lit(True)
    for k in keys:
        on = on & F.col(k).eqNullSafe(F.col(f"_old_key_{k}"))
    same = F.lit(True)
    for c in compared:
        same = same & F.col(c).eqNullSafe(F.col(f"_old_{c}"))
    action = (
        F.when(F.col("_old").isNull(), F.lit("insert"))
        .when(F.col("_new").isNull(), F.lit("delete"))
        .when(~same, F.lit("update"))
    )
    joined_df = new_df.join(old_df, on, "full_outer")
    # A delete row has only the old side: it carries the old keys.
    key_cols = [
        F.when(F.col("_new").isNull(), F.col(f"_old_key_{k}")).otherwise(F.col(k)).alias(k) for k in keys
    ]
    rest = [c for c in fresh_df.columns if c not in keys]
    return (
        joined_df.withColumn("_action", action)
        .filter(F.col("_action").isNotNull())
        .select(*key_cols, *rest, "_action")
        .select(*fresh_df.columns, "_action")
    )


def merge_staged(
    spark: SparkSession,
    path: str,
    staged_df: DataFrame,
    keys: Sequence[str],
    *,
    columns: Sequence[str],
    update_columns: Sequence[str],
    target_filter: str,
    app_id: str,
    batch_id: int,
    marked: bool = False,
    source_ready: bool = False,
) -> dict[str, int]:
    """Apply a staged diff to the Delta table at ``path`` in one MERGE, idempotent per batch.

    Args:
        spark: the session.
        path: the target table.
        staged_df: :func:`stage_replacement` output.
        keys: key columns (matched null-safely).
        columns: the columns an insert writes.
        update_columns: the columns an update sets.
        target_filter: SQL over the target alias ``t`` holding every staged row's target (file
            skipping); ``TRUE`` when there is no bound.
        app_id: the stream's idempotence id.
        batch_id: the micro-batch id.
        marked: tag the commit with the batch marker (``delta_io.batch_marker``).
        source_ready: ``staged_df`` cannot change between Delta's passes over it (a local
            relation, or a checkpoint): it is used as it is, not checkpointed again.

    Returns:
        ``{'insert': n, 'update': n, 'delete': n}``: the rows the MERGE changed, from its own
        metrics (all 0 when Delta skipped it because this batch had committed it already).
    """
    source_df = staged_df if source_ready else stable_source(staged_df)
    with delta_txn(spark, app_id, batch_id, marked=marked), source_not_rematerialized(spark):
        return apply_staged(
            spark,
            path,
            source_df,
            keys,
            columns=columns,
            update_columns=update_columns,
            target_filter=target_filter,
        )


def apply_staged(
    spark: SparkSession,
    path: str,
    staged_df: DataFrame,
    keys: Sequence[str],
    *,
    columns: Sequence[str],
    update_columns: Sequence[str],
    target_filter: str = "TRUE",
) -> dict[str, int]:
    """Apply a staged diff to the Delta table at ``path`` in one plain MERGE (no batch idempotence).

    :func:`merge_staged` runs this inside the stream's ``txnAppId``/``txnVersion``; an offline
    caller with no batch id (``coinlake verify --repair``) calls it directly and gets its
    idempotence from the diff instead: an empty diff must not be merged at all.

    Args:
        spark: the session.
        path: the target table.
        staged_df: :func:`stage_replacement` output.
        keys: key columns (matched null-safely).
        columns: the columns an insert writes.
        update_columns: the columns an update sets.
        target_filter: SQL over the target alias ``t`` holding every staged row's target.

    Returns:
        ``{'insert': n, 'update': n, 'delete': n}`` from the MERGE's own metrics.
    """
    from delta.tables import DeltaTable

    on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    result_df = (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(staged_df.alias("s"), f"({target_filter}) AND {on}")
        .whenMatchedDelete(condition="s._action = 'delete'")
        .whenMatchedUpdate(condition="s._action = 'update'", set={c: f"s.`{c}`" for c in update_columns})
        .whenNotMatchedInsert(condition="s._action = 'insert'", values={c: f"s.`{c}`" for c in columns})
        .execute()
    )
    row = result_df.first()
    if row is None:
        return dict.fromkeys(ACTIONS, 0)
    return {
        "insert": int(row["num_inserted_rows"]),
        "update": int(row["num_updated_rows"]),
        "delete": int(row["num_deleted_rows"]),
    }
