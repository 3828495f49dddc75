"""The touched set of a batch as plain values, and the bounded silver reads built from it.

The handler hands later stages ``touched_df(coin_id, vs_currency, from_ts, to_ts)`` (docs/DESIGN.md,
section 4). It holds one row per key of the batch, so it is small enough to collect; collecting it
lets the stages put literal key and time predicates into their reads (Delta file skipping and
partition pruning) and into the ``whenNotMatchedBySource`` conditions of their MERGEs, which may
only reference the target.

Timestamps travel as UTC text formatted by Spark itself (the session time zone is UTC), never as
Python ``datetime`` objects, whose conversion depends on the driver's local time zone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyspark.sql import Column, Window
from pyspark.sql import functions as F

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

TS_FORMAT = "yyyy-MM-dd HH:mm:ss.SSSSSS"


@dataclass(frozen=True)
class TouchedKey:
    """One touched business key and the start of its replaced range.

    Attributes:
        coin_id: the coin.
        vs_currency: the quote currency.
        from_ts: UTC ``yyyy-MM-dd HH:mm:ss.SSSSSS``; silver rows at or after it may have changed.
    """

    coin_id: str
    vs_currency: str
    from_ts: str


def collect_touched(touched_df: DataFrame) -> list[TouchedKey]:
    """The touched keys, sorted, one per key (the earliest ``from_ts`` wins if a key repeats)."""
    rows = (
        touched_df.groupBy("coin_id", "vs_currency")
        .agg(F.min("from_ts").alias("from_ts"))
        .select("coin_id", "vs_currency", F.date_format("from_ts", TS_FORMAT).alias("from_ts"))
        .orderBy("vs_currency", "coin_id")
        .collect()
    )
    return [TouchedKey(r.coin_id, r.vs_currency, r.from_ts) for r in rows if r.from_ts is not None]


def sql_str(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_ts(text: str) -> str:
    """A SQL timestamp literal from UTC text (the session time zone is UTC)."""
    return f"TIMESTAMP {sql_str(text)}"


def key_predicate(key: TouchedKey, prefix: str = "") -> str:
    """SQL predicate selecting one key (columns optionally qualified by ``prefix``)."""
    return f"({prefix}coin_id = {sql_str(key.coin_id)} AND {prefix}vs_currency = {sql_str(key.vs_currency)})"


def keys_column_filter(keys: Sequence[TouchedKey]) -> Column:
    """Column filter ``vs_currency IN (...) AND coin_id IN (...)``: prunes partitions and files.

    Built as one SQL expression: ``Column.isin`` would make one JVM call per literal (thousands
    of coins per batch).
    """
    return F.expr(keys_sql_filter(keys))


def keys_sql_filter(keys: Sequence[TouchedKey], prefix: str = "") -> str:
    """SQL ``vs_currency IN (...) AND coin_id IN (...)`` over the touched keys (FALSE if none)."""
    if not keys:
        return "FALSE"
    currencies = ", ".join(sql_str(c) for c in sorted({k.vs_currency for k in keys}))
    coins = ", ".join(sql_str(c) for c in sorted({k.coin_id for k in keys}))
    return f"{prefix}vs_currency IN ({currencies}) AND {prefix}coin_id IN ({coins})"


def earliest_from(keys: Sequence[TouchedKey]) -> str:
    """The earliest ``from_ts`` of the touched keys (UTC text): a literal lower bound for file skipping."""
    return min(k.from_ts for k in keys)


def touched_frame(spark: SparkSession, keys: Sequence[TouchedKey]) -> DataFrame:
    """The collected keys back as a tiny DataFrame (``coin_id, vs_currency, from_ts``)."""
    rows = [(k.coin_id, k.vs_currency, k.from_ts) for k in keys]
    return spark.createDataFrame(rows, "coin_id string, vs_currency string, from_text string").select(
        "coin_id", "vs_currency", F.to_timestamp("from_text", TS_FORMAT).alias("from_ts")
    )


def read_key_tails(
    spark: SparkSession,
    path: str,
    keys: Sequence[TouchedKey],
    *,
    columns: Sequence[str],
    versions_before: int,
    lower_bound: str = "from_ts",
) -> DataFrame:
    """Silver versions of the touched keys from their range start, plus a few versions before.

    Work per key is bounded by the rows it needs: the rows at or after ``lower_bound`` and the
    ``versions_before`` latest rows before it (ranked in a read pruned to the touched keys).

    Args:
        spark: the session.
        path: the silver Delta table.
        keys: the touched keys.
        columns: silver columns to keep (the key and ``valid_from`` are always kept).
        versions_before: how many versions before the range start to include (0: none).
        lower_bound: a column expression (over ``from_ts`` and silver columns) for the range start.

    Returns:
        ``coin_id, vs_currency, valid_from, *columns, from_ts``.
    """
    wanted = [
        "coin_id",
        "vs_currency",
        "valid_from",
        *[c for c in columns if c not in ("coin_id", "vs_currency", "valid_from")],
    ]
    silver_df = spark.read.format("delta").load(path).filter(keys_column_filter(keys)).select(*wanted)
    joined_df = silver_df.join(F.broadcast(touched_frame(spark, keys)), ["coin_id", "vs_currency"])
    start = F.expr(lower_bound)
    in_range_df = joined_df.filter(F.col("valid_from") >= start)
    if versions_before <= 0:
        return in_range_df
    newest_first = Window.partitionBy("coin_id", "vs_currency").orderBy(F.col("valid_from").desc())
    before_df = (
        joined_df.filter(F.col("valid_from") < start)
        .withColumn("_rank", F.row_number().over(newest_first))
        .filter(F.col("_rank") <= versions_before)
        .drop("_rank")
    )
    return in_range_df.unionByName(before_df)
