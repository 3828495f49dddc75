"""Steady state: one snapshot per batch at the start and at the end of a growing silver history.

Beside the start phase, the silver floor (:data:`bench.spark_runs.SILVER_ALONE`) and the bare
stream (:func:`bench.spark_runs.run_ceiling`) over copies of the same snapshots, one per batch. :func:`run_snapshot_batches` (one landed snapshot per batch) is shared with
the scale section (:mod:`bench.scale`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.paths import Layout
from app.tables import SILVER
from bench.spark_runs import (
    SILVER_ALONE,
    RunResult,
    copy_bronze,
    p50,
    pct,
    pipeline_settings,
    run_ceiling,
    run_pipeline,
)
from bench.workload import SnapshotSeries

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pyspark.sql import SparkSession

    from app.batch.context import Stage


@dataclass
class SteadyResult:
    """Batch cycle times and Spark jobs per batch at the start and at the end of a growing silver history."""

    coins: int
    start_batches: list[float]
    end_batches: list[float]
    silver_rows_start: int
    silver_rows_end: int
    backfill_records: int
    backfill_seconds: float
    floor_batches: list[float] = field(default_factory=list)
    bare_batches: list[float] = field(default_factory=list)
    start_jobs: list[int] = field(default_factory=list)
    end_jobs: list[int] = field(default_factory=list)
    floor_jobs: list[int] = field(default_factory=list)

    @property
    def p50_start(self) -> float:
        return p50(self.start_batches)

    @property
    def p95_start(self) -> float:
        return pct(self.start_batches, 0.95)

    @property
    def p50_end(self) -> float:
        return p50(self.end_batches)

    @property
    def p95_end(self) -> float:
        return pct(self.end_batches, 0.95)

    @property
    def p50_floor(self) -> float:
        """p50 of the silver floor over the start phase's snapshots (module docstring)."""
        return p50(self.floor_batches)

    @property
    def p50_bare(self) -> float:
        """p50 of the bare stream (the throughput ceiling's query) over the start phase's snapshots."""
        return p50(self.bare_batches)

    @property
    def over_bare(self) -> float:
        """The start phase's p50 over the bare stream's, measured in the same run."""
        return self.p50_start / self.p50_bare if self.p50_bare else float("nan")

    @property
    def ratio(self) -> float:
        return self.p50_end / self.p50_start if self.p50_start else float("nan")

    def jobs_summary(self) -> dict[str, float]:
        """p50 and max Spark jobs per batch of each phase (NaN where not measured)."""
        out: dict[str, float] = {}
        for phase, jobs in (("start", self.start_jobs), ("end", self.end_jobs), ("floor", self.floor_jobs)):
            out[f"jobs_p50_{phase}"] = p50(jobs)
            out[f"jobs_max_{phase}"] = pct(jobs, 1.0)
        return out


def run_snapshot_batches(
    spark: SparkSession,
    series: SnapshotSeries,
    snapshots: int,
    *,
    name: str,
    shuffle_partitions: int,
    stages: Sequence[Stage] | None = None,
    kernel_driver_max_rows: int | None = None,
) -> RunResult:
    """Land the series' next ``snapshots`` snapshots and run them, exactly one snapshot per batch.

    ``kernel_driver_max_rows`` overrides the setting of that name (0: every batch's kernels run on
    the executors).

    ``maxFilesPerTrigger`` is one snapshot's files (every page of every currency); the files of
    later snapshots are newer, and the file source takes the oldest first. No warehouse.

    Raises:
        RuntimeError: a batch did not read exactly one snapshot (the measurement would be wrong).
    """
    workload = series.land(snapshots)
    settings = pipeline_settings(
        series.layout,
        warehouse="none",
        max_files_per_trigger=series.files_per_snapshot,
        shuffle_partitions=shuffle_partitions,
        kernel_driver_max_rows=kernel_driver_max_rows,
    )
    run = run_pipeline(spark, series.layout, settings, name=name, stages=stages)
    per_snapshot = workload.records // snapshots
    if run.batch_records != [per_snapshot] * snapshots:
        raise RuntimeError(
            f"bench: {name}: expected {snapshots} batches of {per_snapshot} records (one snapshot "
            f"each), got {run.batch_records}"
        )
    return run


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
    series = SnapshotSeries(layout, coins=coins, seed=seed)
    pages = series.files_per_snapshot

    def silver_rows() -> int:
        path = layout.table(SILVER)
        return spark.read.format("delta").load(path).count() if os.path.isdir(path) else 0

    start_run = run_snapshot_batches(
        spark, series, batches, name="steady start", shuffle_partitions=shuffle_partitions
    )
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
    # The bare stream over the same snapshots, one per batch: what reading and appending alone cost.
    bare = copy_bronze(layout, root + "-bare")
    bare_run = run_ceiling(spark, bare, max_files_per_trigger=pages)
    shutil.rmtree(bare.root, ignore_errors=True)
    series.land(history_snapshots)
    # The backfill stands in for a long-running stream: it compacts as often, in snapshots, as the
    # default setting makes a one-snapshot-per-batch stream do (every 100 batches).
    per_backfill_batch = 50
    default_every = pipeline_settings(
        layout, warehouse="none", max_files_per_trigger=pages, shuffle_partitions=shuffle_partitions
    ).optimize_every_batches
    big = pipeline_settings(
        layout,
        warehouse="none",
        max_files_per_trigger=pages * per_backfill_batch,
        shuffle_partitions=shuffle_partitions,
        optimize_every_batches=max(1, default_every // per_backfill_batch) if default_every else 0,
    )
    backfill = run_pipeline(spark, layout, big, name="backfill")
    end_run = run_snapshot_batches(
        spark, series, batches, name="steady end", shuffle_partitions=shuffle_partitions
    )
    return SteadyResult(
        coins=coins,
        start_batches=start_run.batch_seconds,
        end_batches=end_run.batch_seconds,
        silver_rows_start=rows_start,
        silver_rows_end=silver_rows(),
        backfill_records=backfill.records,
        backfill_seconds=backfill.seconds,
        floor_batches=floor_run.batch_seconds,
        bare_batches=bare_run.batch_seconds,
        start_jobs=start_run.batch_jobs,
        end_jobs=end_run.batch_jobs,
        floor_jobs=floor_run.batch_jobs,
    )
