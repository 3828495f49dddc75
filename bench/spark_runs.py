"""The Spark runs of the benchmark: the bare-stream ceiling, the full pipeline and the silver floor.

Beside them, the *silver floor*: the same stream and handler with no stage after silver (parse,
expectations, the silver SCD2 MERGE, the ``pipeline_metadata`` row; no anomalies, gold or
warehouse). It is the cheapest pipeline that still keeps silver's contract, so it bounds what any
change to the later stages, or moving them off the latency path, could reach.

Every run uses the same SparkSession and the same source (:func:`app.sources.bronze.read_bronze_stream`
with the same ``max_files_per_trigger``) over its own copy of the same bronze files, so the ratios
compare the pipeline's work, not different inputs or settings. The steady-state and scale series
built from these runs are in :mod:`bench.steady` and :mod:`bench.scale`.
"""

from __future__ import annotations

import math
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
from bench.jobs import BatchJobCounter

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from app.batch.context import Stage

SILVER_ALONE: tuple[Stage, ...] = ()  # the stage list of the silver floor


@dataclass
class RunResult:
    """One available-now run: records read, wall seconds, and per batch its cycle time, Spark jobs
    (:mod:`bench.jobs`; empty where not measured) and records read."""

    name: str
    records: int
    seconds: float
    batch_seconds: list[float] = field(default_factory=list)
    batch_jobs: list[int] = field(default_factory=list)
    batch_records: list[int] = field(default_factory=list)

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


def p50(values: Sequence[float]) -> float:
    """The median, or NaN for no values (a phase that measured nothing reports "n/a")."""
    return float(statistics.median(values)) if values else math.nan


def pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile by nearest rank, or NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))])


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
    started_at = time.time()
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
    batches = cycle_seconds(query.recentProgress, started_at)
    records = spark.read.format("delta").load(target).count()
    return RunResult("a: ceiling (bare stream)", records, seconds, batches)


def cycle_seconds(progress: Sequence[dict], started_at: float) -> list[float]:
    """Each data batch's cycle time from a query's progress: the time between batch ends.

    The same measure as the pipeline's (:func:`run_pipeline` takes it between two batches'
    ``on_batch`` calls), so the two can be compared: a trigger's ``triggerExecution`` alone leaves
    out the time between triggers (the offset and commit logs, the next planning), which a
    ``foreachBatch`` cycle pays. A batch ends at its trigger's start (``timestamp``) plus its
    ``triggerExecution``; the first cycle counts from ``started_at`` (epoch seconds), as the
    pipeline's first batch counts from the run's start.
    """
    from datetime import datetime

    ends = [
        datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00")).timestamp()
        + p["durationMs"].get("triggerExecution", 0) / 1000
        for p in progress
        if p["numInputRows"]
    ]
    return [b - a for a, b in zip([started_at, *ends], ends, strict=False)]


def pipeline_settings(
    layout: Layout,
    *,
    warehouse: str,
    max_files_per_trigger: int,
    shuffle_partitions: int,
    optimize_every_batches: int | None = None,
    kernel_driver_max_rows: int | None = None,
) -> Settings:
    extra: dict[str, int] = {}
    if optimize_every_batches is not None:
        extra["optimize_every_batches"] = optimize_every_batches
    if kernel_driver_max_rows is not None:
        extra["kernel_driver_max_rows"] = kernel_driver_max_rows
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
    """(b)/(c) The full pipeline, available-now; each batch's cycle time and Spark jobs are taken
    between batch ends.

    ``stages=SILVER_ALONE`` runs the silver floor instead (module docstring); None runs the
    pipeline's own stages for ``settings``.
    """
    marks: list[float] = []
    jobs = BatchJobCounter(spark)

    def on_batch(_meta: object) -> None:
        marks.append(time.monotonic())
        jobs.batch_done()

    jobs.start()
    start = time.monotonic()
    result = run_stream(spark, settings, layout, on_batch=on_batch, stages=stages)
    seconds = time.monotonic() - start
    cycles = [b - a for a, b in zip([start, *marks], marks, strict=False)]
    return RunResult(
        name,
        result.records_read,
        seconds,
        cycles,
        jobs.per_batch,
        [b.records_read for b in result.batches],
    )
