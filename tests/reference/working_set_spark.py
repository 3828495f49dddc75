"""Spark reference versions of the after-image and the short-history keys (now kernels in
:mod:`app.batch.kernels.scd2`), kept only as an oracle for tests."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from app.sinks.delta.touched import sql_ts
from app.tables import SILVER_KEYS


def with_after_image(
    before_df: DataFrame, plan_df: DataFrame, *, keys: tuple[str, ...] = SILVER_KEYS
) -> DataFrame:
    """The working set as silver holds it after the plan: inserts and updates replace, deletes remove.

    Args:
        before_df: the working set before the batch (silver columns).
        plan_df: :func:`app.sinks.delta.scd2.build_scd2_plan` output.
        keys: the business key.

    Returns:
        Silver columns, one row per ``(key, valid_from)``.
    """
    changed = plan_df.filter(F.col("_action") != "none")
    replaced = changed.select(*keys, "valid_from")
    written = changed.filter(F.col("_action").isin("insert", "update")).select(*before_df.columns)
    return before_df.join(replaced, [*keys, "valid_from"], "left_anti").unionByName(written)


def short_history_keys(
    before_df: DataFrame,
    touched_df: DataFrame,
    *,
    versions_needed: int,
    bound: str,
    keys: tuple[str, ...] = SILVER_KEYS,
) -> DataFrame:
    """Touched keys whose working set lacks versions the z-scores need: ``keys + need_before``.

    A key needs ``versions_needed`` versions before its first touched day. When the working set
    holds fewer, the key's history may still be complete: its earliest row starts at or after
    ``bound`` (an earlier version would end at or after ``bound`` too, so it would be there).

    Returns:
        One row per key to read further back, with ``need_before`` (its first touched day start).
    """
    day_start = F.date_trunc("day", "from_ts")
    return (
        before_df.select(*keys, "valid_from")
        .join(touched_df.select(*keys, day_start.alias("need_before")), list(keys))
        .groupBy(*keys, "need_before")
        .agg(
            F.count(F.when(F.col("valid_from") < F.col("need_before"), 1)).alias("_n"),
            F.min("valid_from").alias("_first"),
        )
        .filter((F.col("_n") < versions_needed) & (F.col("_first") < F.expr(sql_ts(bound))))
        .select(*keys, "need_before")
    )
