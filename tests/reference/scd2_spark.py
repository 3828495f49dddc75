"""Spark reference version of the SCD2 plan (the pipeline's is :mod:`app.batch.kernels.scd2`).

Kept only as an independent oracle for tests (tests/batch/kernels/test_scd2.py, tests/sinks/delta).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from app.sinks.delta.scd2 import (
    _BOOKKEEPING,
    _FAR_FUTURE,
    COLLAPSED,
    DEFAULT_MAX_COLLAPSED,
    SILVER_COLUMNS,
    WRITTEN,
)
from app.tables import COLLAPSED_OBSERVATIONS_TYPE, SILVER_KEYS


def keep_latest(array_col: F.Column, n: int) -> F.Column:
    """The last ``n`` elements of an array (all of it when shorter; NULL stays NULL).

    Args:
        array_col: an array Column, sorted so that the latest elements come last.
        n: how many to keep (at least 1).
    """
    size = F.size(array_col)
    return F.when(size > n, F.slice(array_col, size - n + 1, F.lit(n))).otherwise(array_col)


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
    max_collapsed: int = DEFAULT_MAX_COLLAPSED,
) -> DataFrame:
    """Re-derive the tail of each touched key from the observations of tail ∪ batch.

    The tail's versions are exploded back into observations (the version's own, at ``valid_from``,
    and every one in ``collapsed_observations``), the batch's are added, one wins per
    ``(key, valid_from)`` (module docstring, step 1), and runs of consecutive equal ``row_hash``
    collapse into their first observation, gathering the others' times into
    ``collapsed_observations``. So the result is the one all of these observations would give
    at once, whatever the batches they came in.

    Args:
        obs_df: the batch's valid observations: silver columns except the SCD2 bookkeeping
            (``valid_to``, ``is_current``, ``batch_id``, ``updated_batch_id``,
            ``collapsed_observations`` are ignored if present), with ``valid_from`` and
            ``row_hash`` set; may carry ``record_index``.
        tail_df: :func:`select_tail` of silver before the batch.
        batch_id: the micro-batch id.
        keys: the business key.
        max_collapsed: the most ``collapsed_observations`` a version keeps, its latest ones
            (module docstring, "Beyond the bound").

    Returns:
        Silver columns plus ``_origin`` (``existing``/``batch``), ``_outcome``
        (``kept``/``duplicate``/``unchanged``) and ``_action`` (``insert``/``update``/``delete``/
        ``none``, the vocabulary of :mod:`app.sinks.delta.range_merge`),
        one row per observation. Rows with ``_action != 'none'`` are the MERGE source (at most one
        per ``(key, valid_from)``).
    """
    data_cols = [c for c in SILVER_COLUMNS if c not in _BOOKKEEPING]
    batch = F.lit(batch_id).cast("bigint")
    no_ts = F.lit(None).cast("timestamp")
    no_obs = F.lit(None).cast(COLLAPSED_OBSERVATIONS_TYPE)
    versions = tail_df.select(
        *data_cols,
        F.col("valid_to").alias("_old_valid_to"),
        F.col(COLLAPSED).alias("_old_collapsed"),
        F.col("batch_id"),
        F.col("updated_batch_id"),
        F.lit("existing").alias("_origin"),
        F.lit(True).alias("_was_version"),
        F.lit(None).cast("int").alias("_record_index"),
    )
    # explode(NULL) gives no rows: versions written before the column existed have none.
    per_obs = {"valid_from", "last_updated", "extracted_at", "source_file"}
    collapsed = tail_df.select(*data_cols, F.explode(COLLAPSED).alias("_o")).select(
        *[F.col(c) for c in data_cols if c not in per_obs],
        F.col("_o.observed_at").alias("valid_from"),
        F.col("_o.observed_at").alias("last_updated"),
        F.col("_o.extracted_at").alias("extracted_at"),
        F.col("_o.source_file").alias("source_file"),
        no_ts.alias("_old_valid_to"),
        no_obs.alias("_old_collapsed"),
        batch.alias("batch_id"),  # becomes a new row if it starts a version again
        batch.alias("updated_batch_id"),
        F.lit("existing").alias("_origin"),
        F.lit(False).alias("_was_version"),
        F.lit(None).cast("int").alias("_record_index"),
    )
    record_index = (
        F.col("record_index").cast("int") if "record_index" in obs_df.columns else F.lit(None).cast("int")
    )
    new = obs_df.select(
        *data_cols,
        no_ts.alias("_old_valid_to"),
        no_obs.alias("_old_collapsed"),
        batch.alias("batch_id"),
        batch.alias("updated_batch_id"),
        F.lit("batch").alias("_origin"),
        F.lit(False).alias("_was_version"),
        record_index.alias("_record_index"),
    )
    # Step 1: a total order on what the observations carry, so the winner of an instant is the
    # same whichever batch each came in (the earliest fetch; equal fetch times: the smaller hash).
    at_instant = Window.partitionBy(*keys, "valid_from").orderBy(
        F.col("extracted_at").asc_nulls_last(),
        F.col("row_hash").asc_nulls_last(),
        F.col("source_file").asc_nulls_last(),
        F.col("_origin").desc(),  # "existing" first: an identical re-seen row is not rewritten
        F.col("_record_index").asc_nulls_last(),
    )
    in_time = Window.partitionBy(*keys).orderBy("valid_from")
    so_far = in_time.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    ranked = (
        versions.unionByName(collapsed)
        .unionByName(new)
        .repartition(*keys)  # every window below partitions by the key (or a superset): one shuffle
        .withColumn("_rn", F.row_number().over(at_instant))
    )
    # Step 2: runs of equal hashes; each run is one version holding its later observations.
    winners = (
        ranked.filter(F.col("_rn") == 1)
        .withColumn(
            "_collapsed", F.coalesce(F.lag("row_hash").over(in_time) == F.col("row_hash"), F.lit(False))
        )
        .withColumn("_run_start", F.max(F.when(~F.col("_collapsed"), F.col("valid_from"))).over(so_far))
    )
    gathered = F.sort_array(
        F.collect_list(
            F.when(
                F.col("_collapsed"),
                F.struct(
                    F.col("valid_from").alias("observed_at"),
                    F.col("extracted_at").alias("extracted_at"),
                    F.col("source_file").alias("source_file"),
                ),
            )
        ).over(Window.partitionBy(*keys, "_run_start"))
    ).cast(COLLAPSED_OBSERVATIONS_TYPE)
    winners = winners.withColumn(COLLAPSED, keep_latest(gathered, max_collapsed))
    kept = (
        winners.filter(~F.col("_collapsed"))
        .withColumn("valid_to", F.lead("valid_from").over(in_time))
        .withColumn("_outcome", F.lit("kept"))
    )
    dropped = (
        winners.filter(F.col("_collapsed"))
        .withColumn("valid_to", no_ts)
        .withColumn(COLLAPSED, no_obs)
        .withColumn("_outcome", F.lit("unchanged"))
    )
    losers = (
        ranked.filter(F.col("_rn") > 1)
        .withColumn("_collapsed", F.lit(False))
        .withColumn("_run_start", no_ts)
        .withColumn(COLLAPSED, no_obs)
        .withColumn("valid_to", no_ts)
        .withColumn("_outcome", F.lit("duplicate"))
    )
    plan = kept.unionByName(dropped).unionByName(losers).drop("_rn", "_collapsed", "_run_start")
    # Step 3: per instant, the kept row replaces whatever silver had there; a former version
    # start that is no longer one is deleted.
    is_kept = F.col("_outcome") == "kept"
    kept_here = F.max(is_kept.cast("int")).over(Window.partitionBy(*keys, "valid_from"))
    was_version = F.col("_was_version")
    changed = ~F.col("valid_to").eqNullSafe(F.col("_old_valid_to")) | ~F.col(COLLAPSED).eqNullSafe(
        F.col("_old_collapsed")
    )
    action = (
        F.when(is_kept & ~was_version, F.lit("insert"))
        .when(is_kept & changed, F.lit("update"))
        .when(is_kept, F.lit("none"))
        .when(was_version & (kept_here == 0), F.lit("delete"))
        .otherwise(F.lit("none"))
    )
    return (
        plan.withColumn("_action", action)
        .withColumn("is_current", is_kept & F.col("valid_to").isNull())
        .withColumn(
            "updated_batch_id",
            F.when(F.col("_action").isin(*WRITTEN), batch).otherwise(F.col("updated_batch_id")),
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
