"""The Spark parts of the benchmark: the bare-stream ceiling, the full pipeline and the steady state.

Beside them, the *silver floor*: the same stream and handler with no stage after silver (parse,
expectations, the silver SCD2 MERGE, the ``pipeline_metadata`` row; no anomalies, gold or
warehouse). It is the cheapest pipeline that still keeps silver's contract, so it bounds what any
change to the later stages, or moving them off the latency path, could reach.

Every run uses the same SparkSession and the same source (:func:`app.sources.bronze.read_bronze_stream`
with the same ``max_files_per_trigger``) over its own copy of the same bronze files, so the ratios
compare the pipeline's work, not different inputs or settings.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from app.config import Settings
from app.paths import Layout
from app.sources.bronze import ENVELOPE_DDL, RAW_RECORD_DDL, read_bronze_stream
from app.stream import run_stream
from bench.workload import generate

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from app.sinks.context import Stage

SILVER_ALONE: tuple[Stage, ...] = ()  # the stage list of the silver floor


@dataclass
class RunResult:
    """One available-now run: records read, wall seconds, and each batch's cycle time."""

    name: str
    records: int
    seconds: float
    batch_seconds: list[float] = field(default_factory=list)

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


def copy_bronze(src: Layout, dst_root: str) -> Layout:
    """A fresh data root holding a copy of ``src``'s bronze files and nothing else."""
    shutil.rmtree(dst_root, ignore_errors=True)
    dst = Layout.from_root(dst_root)
    shutil.copytree(src.bronze_root, dst.bronze_root)
    return dst


def run_ceiling(spark: SparkSession, layout: Layout, *, max_files_per_trigger: int) -> RunResult:
    """(a) A bare stream: same source and schema, explode the records, append them to one Delta table."""
    source_df = read_bronze_stream(spark, layout.bronze_root, max_files_per_trigger=max_files_per_trigger)
    env = F.from_json("value", ENVELOPE_DDL)
    records_df = (
        source_df.select(env.alias("env"), "source_file")
        .select(
            F.explode("env.data").alias("raw"), F.col("env.request.vs_currency").alias("vs"), "source_file"
        )
        .select(F.from_json("raw", RAW_RECORD_DDL).alias("r"), "vs", "source_file")
        .select("r.*", "vs", "source_file")
    )
    target = os.path.join(layout.root, "tables", "ceiling")
    start = time.monotonic()
    query = (
        records_df.writeStream.format("delta")
        .option("checkpointLocation", os.path.join(layout.root, "checkpoints", "ceiling"))
        .trigger(availableNow=True)
        .start(target)
    )
    query.awaitTermination()
    seconds = time.monotonic() - start
    if query.exception() is not None:
        raise RuntimeError(f"ceiling stream failed: {query.exception()}")
    batches = [
        p["durationMs"].get("triggerExecution", 0) / 1000 for p in query.recentProgress if p["numInputRows"]
    ]
    records = spark.read.format("delta").load(target).count()
    return RunResult("a: ceiling (bare stream)", records, seconds, batches)


def pipeline_settings(
    layout: Layout,
    *,
    warehouse: str,
    max_files_per_trigger: int,
    shuffle_partitions: int,
    optimize_every_batches: int | None = None,
) -> Settings:
    extra = {} if optimize_every_batches is None else {"optimize_every_batches": optimize_every_batches}
    return Settings(
        data_root=layout.root,
        warehouse=warehouse,
        max_files_per_trigger=max_files_per_trigger,
        shuffle_partitions=shuffle_partitions,
        **extra,
    )


def run_pipeline(
    spark: SparkSession,
    layout: Layout,
    settings: Settings,
    *,
    name: str,
    stages: Sequence[Stage] | None = None,
) -> RunResult:
    """(b)/(c) The full pipeline, available-now; each batch's cycle time is taken between batch ends.

    ``stages=SILVER_ALONE`` runs the silver floor instead (module docstring); None runs the
    pipeline's own stages for ``settings``.
    """
    marks: list[float] = []
    start = time.monotonic()
    result = run_stream(
        spark, settings, layout, on_batch=lambda _meta: marks.append(time.monotonic()), stages=stages
    )
    seconds = time.monotonic() - start
    cycles = [b - a for a, b in zip([start, *marks], marks, strict=False)]
    return RunResult(name, result.records_read, seconds, cycles)


@dataclass
class SteadyResult:
    """Batch cycle times at the start and at the end of a growing silver history."""

    coins: int
    start_batches: list[float]
    end_batches: list[float]
    silver_rows_start: int
    silver_rows_end: int
    backfill_records: int
    backfill_seconds: float
    floor_batches: list[float] = field(default_factory=list)

    @staticmethod
    def _pct(values: list[float], q: float) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    @property
    def p50_start(self) -> float:
        return statistics.median(self.start_batches) if self.start_batches else float("nan")

    @property
    def p95_start(self) -> float:
        return self._pct(self.start_batches, 0.95)

    @property
    def p50_end(self) -> float:
        return statistics.median(self.end_batches) if self.end_batches else float("nan")

    @property
    def p95_end(self) -> float:
        return self._pct(self.end_batches, 0.95)

    @property
    def p50_floor(self) -> float:
        """p50 of the silver floor over the start phase's snapshots (module docstring)."""
        return statistics.median(self.floor_batches) if self.floor_batches else float("nan")

    @property
    def ratio(self) -> float:
        return self.p50_end / self.p50_start if self.p50_start else float("nan")


def run_steady_state(
    spark: SparkSession,
    root: str,
    *,
    coins: int,
    batches: int,
    history_snapshots: int,
    shuffle_partitions: int,
    seed: int = 11,
) -> SteadyResult:
    """One snapshot of ``coins`` coins per batch, ``batches`` times, then a backfill, then again.

    Phase 1 measures ``batches`` batches on an empty lakehouse; phase 2 lands ``history_snapshots``
    more snapshots and runs them through the same pipeline in large batches (silver grows by a little
    under ``coins * history_snapshots`` versions: 914k for 1,000 × 1,000, as unchanged snapshots
    collapse); phase 3 measures ``batches`` batches on top of that
    history. The snapshots continue one market in time order, as a live stream would see them.
    After phase 1 the silver floor (module docstring) runs over a copy of phase 1's snapshots, on
    its own empty lakehouse, one snapshot per batch too.
    """
    shutil.rmtree(root, ignore_errors=True)
    layout = Layout.from_root(root)
    pages = -(-coins // 250)
    step = 300

    def land(first_cycle: int, n: int) -> None:
        generate(layout, coins=coins, snapshots=n, seed=seed, step_seconds=step, first_cycle=first_cycle)

    def silver_rows() -> int:
        path = layout.table("silver_crypto_clean")
        return spark.read.format("delta").load(path).count() if os.path.isdir(path) else 0

    per_batch = pipeline_settings(
        layout, warehouse="none", max_files_per_trigger=pages, shuffle_partitions=shuffle_partitions
    )
    land(0, batches)
    start_run = run_pipeline(spark, layout, per_batch, name="steady start")
    rows_start = silver_rows()
    # The silver floor over the same snapshots, after the start phase so that phase stays as it was.
    floor = copy_bronze(layout, root + "-floor")
    floor_run = run_pipeline(
        spark,
        floor,
        pipeline_settings(
            floor, warehouse="none", max_files_per_trigger=pages, shuffle_partitions=shuffle_partitions
        ),
        name="steady start, silver floor",
        stages=SILVER_ALONE,
    )
    shutil.rmtree(floor.root, ignore_errors=True)
    land(batches, history_snapshots)
    # The backfill stands in for a long-running stream: it compacts as often, in snapshots, as the
    # default setting makes a one-snapshot-per-batch stream do (every 100 batches).
    per_backfill_batch = 50
    big = pipeline_settings(
        layout,
        warehouse="none",
        max_files_per_trigger=pages * per_backfill_batch,
        shuffle_partitions=shuffle_partitions,
        optimize_every_batches=(
            max(1, per_batch.optimize_every_batches // per_backfill_batch)
            if per_batch.optimize_every_batches
            else 0
        ),
    )
    backfill = run_pipeline(spark, layout, big, name="backfill")
    land(batches + history_snapshots, batches)
    end_run = run_pipeline(spark, layout, per_batch, name="steady end")
    return SteadyResult(
        coins=coins,
        start_batches=start_run.batch_seconds,
        end_batches=end_run.batch_seconds,
        silver_rows_start=rows_start,
        silver_rows_end=silver_rows(),
        backfill_records=backfill.records,
        backfill_seconds=backfill.seconds,
        floor_batches=floor_run.batch_seconds,
    )
