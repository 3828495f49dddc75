"""Read the small slices of the Delta tables the report plots, as pandas frames.

Every reader returns an empty frame when its table does not exist yet, and filters and limits in
Spark before ``toPandas`` so the driver only sees what is drawn (top coins, one coin's candles,
per-batch metadata).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from app.paths import Layout
from app.tables import (
    ANOMALIES,
    COINGECKO_FIELDS,
    GOLD_METRICS,
    GOLD_OHLC,
    METADATA,
    QUARANTINE,
    SILVER,
    TABLE_NAMES,
)

# The silver columns of the report's price data (the fields marked ``report`` in the registry).
REPORT_COLUMNS = tuple(f.column for f in COINGECKO_FIELDS if f.report)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

NON_BATCH_KINDS = ("progress", "ingest", "ingest_cycle")


@dataclass
class ReportData:
    """Everything the report draws, as pandas frames (empty when a table has no data)."""

    vs_currency: str | None = None
    top_coins: list[str] = field(default_factory=list)
    coin: str | None = None
    ohlc_interval: str | None = None
    table_counts: dict[str, int | None] = field(default_factory=dict)
    prices: pd.DataFrame = field(default_factory=pd.DataFrame)
    anomalies: pd.DataFrame = field(default_factory=pd.DataFrame)
    gold: pd.DataFrame = field(default_factory=pd.DataFrame)
    ohlc: pd.DataFrame = field(default_factory=pd.DataFrame)
    quarantine_by_rule: pd.DataFrame = field(default_factory=pd.DataFrame)
    quarantine_samples: pd.DataFrame = field(default_factory=pd.DataFrame)
    batches: pd.DataFrame = field(default_factory=pd.DataFrame)
    durations: pd.DataFrame = field(default_factory=pd.DataFrame)
    progress: pd.DataFrame = field(default_factory=pd.DataFrame)


def _table(spark: SparkSession, layout: Layout, name: str) -> DataFrame | None:
    from delta.tables import DeltaTable

    path = layout.table(name)
    if not DeltaTable.isDeltaTable(spark, path):
        return None
    return spark.read.format("delta").load(path)


def load_report_data(
    spark: SparkSession,
    layout: Layout,
    *,
    coin: str | None = None,
    top_n: int = 6,
    max_candles: int = 120,
) -> ReportData:
    """Read the slices of every table the report needs.

    Args:
        spark: the session.
        layout: the storage layout.
        coin: the coin id for the candle chart (default: the largest by market cap).
        top_n: how many coins (by latest market cap) get a price chart.
        max_candles: the most recent candles drawn.

    Returns:
        The frames; a table that does not exist gives empty frames and a ``None`` count.
    """
    from pyspark.sql import functions as F

    data = ReportData()
    tables = {name: _table(spark, layout, name) for name in TABLE_NAMES}
    data.table_counts = {name: (None if df is None else df.count()) for name, df in tables.items()}

    silver_df = tables[SILVER]
    if silver_df is not None and data.table_counts[SILVER]:
        currencies = [r[0] for r in silver_df.select("vs_currency").distinct().collect()]
        data.vs_currency = "usd" if "usd" in currencies else sorted(currencies)[0]
        current_df = silver_df.where((F.col("vs_currency") == data.vs_currency) & F.col("is_current"))
        ranked = current_df.orderBy(F.col("market_cap").desc_nulls_last(), "coin_id").select("coin_id")
        data.top_coins = [r[0] for r in ranked.limit(top_n).collect()]
        data.prices = (
            silver_df.where(
                (F.col("vs_currency") == data.vs_currency) & F.col("coin_id").isin(data.top_coins)
            )
            .select("coin_id", "valid_from", *REPORT_COLUMNS)
            .orderBy("coin_id", "valid_from")
            .toPandas()
        )
    data.coin = coin or (data.top_coins[0] if data.top_coins else None)

    anomalies_df = tables[ANOMALIES]
    if anomalies_df is not None and data.top_coins:
        data.anomalies = (
            anomalies_df.where(
                (F.col("vs_currency") == data.vs_currency) & F.col("coin_id").isin(data.top_coins)
            )
            .select("coin_id", "observed_at", "metric", "value", "z_score")
            .toPandas()
        )

    gold_df = tables[GOLD_METRICS]
    if gold_df is not None:
        if data.vs_currency:
            gold_df = gold_df.where(F.col("vs_currency") == data.vs_currency)
        data.gold = gold_df.orderBy("metric_date").toPandas()

    ohlc_df = tables[GOLD_OHLC]
    if ohlc_df is not None and data.coin:
        coin_df = ohlc_df.where(F.col("coin_id") == data.coin)
        if data.vs_currency:
            coin_df = coin_df.where(F.col("vs_currency") == data.vs_currency)
        counts = {r[0]: r[1] for r in coin_df.groupBy("interval").count().collect()}
        data.ohlc_interval = "1h" if counts.get("1h", 0) >= 2 else ("1d" if counts.get("1d") else None)
        if data.ohlc_interval:
            data.ohlc = (
                coin_df.where(F.col("interval") == data.ohlc_interval)
                .orderBy(F.col("bucket_start").desc())
                .limit(max_candles)
                .toPandas()
                .sort_values("bucket_start")
            )

    _load_metadata(data, tables[METADATA])
    _load_quarantine(data, tables[QUARANTINE])
    return data


def _load_metadata(data: ReportData, meta_df: DataFrame | None) -> None:
    from pyspark.sql import functions as F

    if meta_df is None:
        return
    kind = F.lower(F.coalesce("kind", F.lit("")))
    batch_df = meta_df.where(F.col("batch_id").isNotNull() & ~kind.isin(*NON_BATCH_KINDS))
    data.batches = (
        batch_df.select(
            "batch_id",
            "run_id",
            "started_at",
            "finished_at",
            "status",
            "records_read",
            "new_versions",
            "quarantined",
            *[
                F.col(c) if c in batch_df.columns else F.lit(None).cast(t).alias(c)  # older tables
                for c, t in (("dq_passed", "bigint"), ("dq_score", "double"))
            ],
        )
        .orderBy("started_at", "batch_id")
        .toPandas()
    )
    data.durations = batch_df.select(
        "batch_id", "started_at", F.explode("durations_ms").alias("stage", "ms")
    ).toPandas()
    data.quarantine_by_rule = (
        batch_df.select("batch_id", F.explode("quarantined_by_rule").alias("rule", "count"))
        .groupBy("batch_id", "rule")
        .agg(F.sum("count").alias("count"))
        .toPandas()
    )
    progress = (
        meta_df.where(kind == "progress")
        .select(
            "batch_id",
            "started_at",
            "records_read",
            "details",
            F.col("durations_ms")["triggerExecution"].alias("ms"),
        )
        .orderBy("started_at")
        .toPandas()
    )
    if not progress.empty:
        rates = [_detail(d, "processed_rows_per_second") for d in progress["details"]]
        progress["processed_rows_per_second"] = rates
    data.progress = progress


def _detail(details: str | None, key: str) -> Any:
    try:
        return json.loads(details or "{}").get(key)
    except ValueError:
        return None


def _load_quarantine(data: ReportData, quarantine_df: DataFrame | None) -> None:
    from pyspark.sql import functions as F

    if quarantine_df is None:
        return
    if data.quarantine_by_rule.empty:  # no per-batch counts in metadata: count the records
        data.quarantine_by_rule = (
            quarantine_df.select("batch_id", F.explode("failed_rules").alias("rule"))
            .groupBy("batch_id", "rule")
            .count()
            .toPandas()
        )
    data.quarantine_samples = (
        quarantine_df.orderBy(F.col("batch_id").desc())
        .select(
            "batch_id",
            "coin_id",
            F.array_join("failed_rules", ", ").alias("rules"),
            F.array_join("errors", "; ").alias("errors"),
            F.substring("raw_record", 1, 160).alias("raw_record"),
        )
        .limit(8)
        .toPandas()
    )
