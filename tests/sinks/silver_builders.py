"""Test helpers: silver tables built directly from observations, and hand-made batch contexts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from app.batch.context import BatchContext
from app.batch.frames import collect
from app.batch.kernels.batch import KernelParams
from app.batch.placement import rows_on_driver
from app.config import load_settings
from app.paths import Layout
from app.tables import SILVER_DDL, TABLE_NAMES, ensure_table

# Data roots whose tables exist (ensured once per root, as the stream does once per run).
_PREPARED: set[str] = set()

OBS_DDL = (
    "coin_id string, vs_currency string, valid_from timestamp, current_price double, total_volume double, "
    "market_cap double, price_change_percentage_24h double, price_volatility_24h double, "
    "market_cap_category string, volume_to_market_cap_ratio double"
)


@dataclass(frozen=True)
class Obs:
    """One silver version (only the columns the anomaly and gold stages read)."""

    coin_id: str
    valid_from: datetime
    current_price: float | None = None
    total_volume: float | None = None
    market_cap: float | None = None
    price_change_percentage_24h: float | None = None
    price_volatility_24h: float | None = None
    market_cap_category: str | None = None
    volume_to_market_cap_ratio: float | None = None
    vs_currency: str = "usd"

    def moved(self, valid_from: datetime) -> Obs:
        return replace(self, valid_from=valid_from)


def silver_df(spark: SparkSession, observations: Iterable[Obs]) -> DataFrame:
    """Silver rows (full SILVER_DDL schema) with valid_to/is_current derived per key."""
    rows = [
        (
            o.coin_id,
            o.vs_currency,
            o.valid_from,
            o.current_price,
            o.total_volume,
            o.market_cap,
            o.price_change_percentage_24h,
            o.price_volatility_24h,
            o.market_cap_category,
            o.volume_to_market_cap_ratio,
        )
        for o in observations
    ]
    from pyspark.sql import Window

    obs_df = spark.createDataFrame(rows, OBS_DDL)
    nxt = F.lead("valid_from").over(Window.partitionBy("coin_id", "vs_currency").orderBy("valid_from"))
    obs_df = obs_df.withColumn("valid_to", nxt).withColumn("is_current", F.col("valid_to").isNull())
    schema = spark.createDataFrame([], SILVER_DDL).schema
    return obs_df.select(
        *[
            (F.col(f.name) if f.name in obs_df.columns else F.lit(None)).cast(f.dataType).alias(f.name)
            for f in schema.fields
        ]
    )


def write_silver(spark: SparkSession, path: str, observations: Iterable[Obs]) -> None:
    """Replace the silver table at ``path`` with exactly these versions."""
    silver_df(spark, observations).write.format("delta").mode("overwrite").save(path)


def touched_rows(existing: Sequence[Obs], new: Sequence[Obs]) -> list[tuple[str, str, datetime, datetime]]:
    """The touched set as the handler defines it (docs/DESIGN.md, section 4)."""
    out = []
    for key in sorted({(o.coin_id, o.vs_currency) for o in new}):
        times = [o.valid_from for o in new if (o.coin_id, o.vs_currency) == key]
        first = min(times)
        before = [
            o.valid_from for o in existing if (o.coin_id, o.vs_currency) == key and o.valid_from < first
        ]
        out.append((key[0], key[1], max(before) if before else first, max(times)))
    return out


def make_ctx(
    spark: SparkSession,
    root: Path,
    batch_id: int,
    touched: Sequence[tuple[str, str, datetime, datetime]],
    *,
    before: Iterable[Obs] | None = None,
    after: Iterable[Obs] | None = None,
    **settings: Any,
) -> BatchContext:
    """A BatchContext over ``root`` with the given touched set and settings overrides.

    With ``before`` and ``after`` (silver before and after the batch) it carries the kernels' rows
    computed from those whole tables as the two images (a superset of what the handler reads).
    """
    touched_df = spark.createDataFrame(
        list(touched), "coin_id string, vs_currency string, from_ts timestamp, to_ts timestamp"
    )
    config = load_settings(data_dir=str(root), **settings)
    rows = None
    if touched and before is not None and after is not None:
        params = KernelParams.from_settings(config, batch_id)
        before_pd, after_pd, touched_pd = (
            collect(silver_df(spark, before)),
            collect(silver_df(spark, after)),
            collect(touched_df),
        )
        assert before_pd is not None and after_pd is not None and touched_pd is not None
        rows = rows_on_driver(before_pd, after_pd, touched_pd, params)
    layout = Layout.from_root(str(root))
    if layout.root not in _PREPARED:  # what the stream does once, at start (the handler's prepare)
        for name in TABLE_NAMES:
            ensure_table(spark, name, layout.table(name))
        _PREPARED.add(layout.root)
    return BatchContext(
        spark=spark,
        batch_id=batch_id,
        app_id="coinlake-test",
        run_id="run-test",
        layout=layout,
        settings=config,
        touched_df=touched_df,
        rows=rows,
    )


def table_rows(spark: SparkSession, path: str, drop: Sequence[str] = ()) -> list[tuple[Any, ...]]:
    """All rows of a Delta table, sorted, without the ``drop`` columns."""
    df = spark.read.format("delta").load(path).drop(*drop)
    return sorted(tuple(r) for r in df.collect())


def table_version(spark: SparkSession, path: str) -> int:
    """The latest Delta version of a table."""
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, path).history(1).collect()[0]["version"])
