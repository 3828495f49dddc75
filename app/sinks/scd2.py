"""Silver Type 2 SCD: a pure plan builder and a thin Delta MERGE executor.

Silver is a function of the *set* of valid bronze records (ARCHITECTURE.md, "Silver"):

1. per ``(key, valid_from)`` one observation wins: the earliest ``extracted_at``, then the smallest
   ``source_file`` and ``row_hash`` (the others are *duplicates*);
2. per key, ordered by ``valid_from``, an observation whose ``row_hash`` equals its predecessor's
   is collapsed into it (*unchanged*);
3. ``valid_to`` is the next version's ``valid_from``; the last version is current.

A batch only needs, per touched key, the *tail* of silver from the version just before its earliest
observation (rows whose interval reaches that time: ``valid_to IS NULL OR valid_to >= min_obs``).
:func:`build_scd2_plan` re-applies the three steps to tail ∪ batch and says, per row, whether to
upsert, delete or leave it; :func:`apply_scd2_merge` replaces the tail in ONE MERGE whose target is
pruned to the batch's currencies and to rows whose interval reaches the batch's earliest time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyspark.sql import Window
from pyspark.sql import functions as F

from app.sinks.delta_io import delta_txn
from app.tables import SILVER_DDL, SILVER_KEYS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

SILVER_COLUMNS: tuple[str, ...] = tuple(part.split()[0] for part in SILVER_DDL.split(",") if part.strip())
USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"
_FAR_FUTURE = "9999-12-31 00:00:00"


def select_tail(silver_df: DataFrame, obs_df: DataFrame, *, keys: tuple[str, ...] = SILVER_KEYS) -> DataFrame:
    """The silver rows a batch may change: per observed key, rows whose interval reaches its earliest observation.

    Args:
        silver_df: silver (ideally already filtered by currency and ``valid_to``).
        obs_df: the batch's valid observations with ``valid_from``.
        keys: the business key.

    Returns:
        Silver rows (silver columns only).
    """
    first_obs = obs_df.groupBy(*keys).agg(F.min("valid_from").alias("_min_obs"))
    reach = F.coalesce(F.col("valid_to"), F.lit(_FAR_FUTURE).cast("timestamp"))
    return (
        silver_df.join(F.broadcast(first_obs), list(keys))
        .filter(reach >= F.col("_min_obs"))
        .select(*SILVER_COLUMNS)
    )


def build_scd2_plan(
    obs_df: DataFrame,
    tail_df: DataFrame,
    *,
    batch_id: int,
    keys: tuple[str, ...] = SILVER_KEYS,
) -> DataFrame:
    """Re-derive the tail of each touched key from tail ∪ batch observations.

    Args:
        obs_df: the batch's valid observations: silver columns except the SCD2 bookkeeping
            (``valid_to``, ``is_current``, ``batch_id``, ``updated_batch_id`` are ignored if present),
            with ``valid_from`` and ``row_hash`` set; may carry ``record_index``.
        tail_df: :func:`select_tail` of silver before the batch.
        batch_id: the micro-batch id.
        keys: the business key.

    Returns:
        Silver columns plus ``_origin`` (``existing``/``batch``), ``_outcome``
        (``kept``/``duplicate``/``unchanged``) and ``_action`` (``upsert``/``delete``/``none``).
        Rows with ``_action != 'none'`` are the MERGE source.
    """
    data_cols = [
        c for c in SILVER_COLUMNS if c not in ("valid_to", "is_current", "batch_id", "updated_batch_id")
    ]
    batch = F.lit(batch_id).cast("bigint")
    existing = tail_df.select(
        *data_cols,
        F.col("valid_to").alias("_old_valid_to"),
        F.col("batch_id"),
        F.col("updated_batch_id"),
        F.lit("existing").alias("_origin"),
        F.lit(None).cast("int").alias("_record_index"),
    )
    record_index = (
        F.col("record_index").cast("int") if "record_index" in obs_df.columns else F.lit(None).cast("int")
    )
    new = obs_df.select(
        *data_cols,
        F.lit(None).cast("timestamp").alias("_old_valid_to"),
        batch.alias("batch_id"),
        batch.alias("updated_batch_id"),
        F.lit("batch").alias("_origin"),
        record_index.alias("_record_index"),
    )
    at_instant = Window.partitionBy(*keys, "valid_from").orderBy(
        F.col("extracted_at").asc_nulls_last(),
        F.col("source_file").asc_nulls_last(),
        F.col("row_hash").asc_nulls_last(),
        F.col("_origin").desc(),  # "existing" first: an identical re-seen row is not rewritten
        F.col("_record_index").asc_nulls_last(),
    )
    in_time = Window.partitionBy(*keys).orderBy("valid_from")
    ranked = existing.unionByName(new).withColumn("_rn", F.row_number().over(at_instant))
    prev_hash = F.lag("row_hash").over(in_time)
    winners = ranked.filter(F.col("_rn") == 1).withColumn(
        "_collapsed", F.coalesce(prev_hash == F.col("row_hash"), F.lit(False))
    )
    kept = (
        winners.filter(~F.col("_collapsed"))
        .withColumn("valid_to", F.lead("valid_from").over(in_time))
        .withColumn("_outcome", F.lit("kept"))
    )
    no_end = F.lit(None).cast("timestamp")
    dropped = (
        winners.filter(F.col("_collapsed"))
        .withColumn("valid_to", no_end)
        .withColumn("_outcome", F.lit("unchanged"))
    )
    losers = (
        ranked.filter(F.col("_rn") > 1)
        .withColumn("_collapsed", F.lit(False))
        .withColumn("valid_to", no_end)
        .withColumn("_outcome", F.lit("duplicate"))
    )
    plan = kept.unionByName(dropped).unionByName(losers).drop("_rn", "_collapsed")
    is_kept = F.col("_outcome") == "kept"
    batch_kept_here = F.max((is_kept & (F.col("_origin") == "batch")).cast("int")).over(
        Window.partitionBy(*keys, "valid_from")
    )
    is_existing = F.col("_origin") == "existing"
    moved = ~F.col("valid_to").eqNullSafe(F.col("_old_valid_to"))
    action = (
        F.when(is_kept & ~is_existing, F.lit("upsert"))
        .when(is_kept & is_existing & moved, F.lit("upsert"))
        .when(is_kept, F.lit("none"))
        .when(is_existing & (batch_kept_here == 0), F.lit("delete"))
        .otherwise(F.lit("none"))
    )
    return (
        plan.withColumn("_action", action)
        .withColumn("is_current", is_kept & F.col("valid_to").isNull())
        .withColumn(
            "updated_batch_id",
            F.when(F.col("_action") == "upsert", batch).otherwise(F.col("updated_batch_id")),
        )
        .select(*SILVER_COLUMNS, "_origin", "_outcome", "_action")
    )


def build_touched(plan_df: DataFrame, *, keys: tuple[str, ...] = SILVER_KEYS) -> DataFrame:
    """The touched set (docs/DESIGN.md, section 4) from a plan: ``coin_id, vs_currency, from_ts, to_ts``.

    ``from_ts`` is the earliest ``valid_from`` of tail ∪ batch, i.e. the version just before the
    batch's earliest observation (or that observation); ``to_ts`` the batch's latest observation.
    """
    is_batch = F.col("_origin") == "batch"
    return (
        plan_df.groupBy(*keys)
        .agg(
            F.min("valid_from").alias("from_ts"),
            F.max(F.when(is_batch, F.col("valid_from"))).alias("to_ts"),
            F.max(is_batch.cast("int")).alias("_has_batch"),
        )
        .filter(F.col("_has_batch") == 1)
        .drop("_has_batch")
    )


@dataclass(frozen=True)
class MergeScope:
    """Literal bounds that prune the MERGE target: the batch's currencies and its earliest observation."""

    currencies: tuple[str, ...]
    min_valid_from: str
    """``yyyy-MM-dd HH:mm:ss.SSSSSS`` in UTC (formatted by Spark, so no Python time-zone conversion)."""


def scope_condition(scope: MergeScope, alias: str = "t") -> str:
    """SQL predicate on the target restricting it to rows a batch with this scope can touch."""
    cur = ", ".join("'" + c.replace("'", "''") + "'" for c in scope.currencies)
    ts = scope.min_valid_from
    return f"{alias}.vs_currency IN ({cur}) AND ({alias}.valid_to IS NULL OR {alias}.valid_to >= TIMESTAMP '{ts}')"


def merge_marker(app_id: str, batch_id: int) -> str:
    """The ``userMetadata`` of a batch's silver commit (lets a re-run find what silver was before it)."""
    return f"{app_id}/batch={batch_id}"


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
) -> None:
    """Run the one silver MERGE of a batch, idempotent per ``(app_id, batch_id)``.

    Args:
        spark: the session.
        path: the silver table.
        staged_df: plan rows with ``_action`` in (``upsert``, ``delete``).
        scope: target pruning bounds (every staged existing row is inside them).
        app_id: the stream's idempotence id.
        batch_id: the micro-batch id.
    """
    from delta.tables import DeltaTable

    keys = " AND ".join(f"t.{k} = s.{k}" for k in (*SILVER_KEYS, "valid_from"))
    condition = f"{keys} AND {scope_condition(scope)}"
    values = {c: f"s.{c}" for c in SILVER_COLUMNS}
    merge = (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(staged_df.alias("s"), condition)
        .whenMatchedDelete(condition="s._action = 'delete'")
        .whenMatchedUpdate(condition="s._action = 'upsert'", set=values)
        .whenNotMatchedInsert(condition="s._action = 'upsert'", values=values)
    )
    with delta_txn(spark, app_id, batch_id):
        spark.conf.set(USER_METADATA_CONF, merge_marker(app_id, batch_id))
        try:
            merge.execute()
        finally:
            spark.conf.unset(USER_METADATA_CONF)
