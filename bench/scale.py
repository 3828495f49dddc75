"""Scale of one batch: a whole CoinGecko snapshot (about 17,000 coins x 3 currencies) in ONE batch.

Each of ``repeats`` successive snapshots lands as the ingester lands a cycle (every page of every
currency, one run id) and runs through the full pipeline (no warehouse) as its own batch, over the
same growing lakehouse. The p50 of those batches is compared with the p50 of one-snapshot batches
of the steady section's size (1,000 coins, one currency), so the ratio says how the batch cost
grows with its size: a per-batch overhead makes it far less than the 50x in records.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.paths import Layout
from app.tables import METADATA, SILVER
from bench.spark_runs import RunResult, p50, pct
from bench.steady import run_snapshot_batches
from bench.workload import SnapshotSeries, pages_per_snapshot

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pyspark.sql import SparkSession


@dataclass
class ScaleResult:
    """The one-snapshot batches of the scale run, and the small batches they are compared with."""

    coins: int
    vs_currencies: list[str]
    records_per_batch: int
    files_per_batch: int
    batch_seconds: list[float]
    batch_jobs: list[int]
    silver_rows: int
    reference: str = ""
    reference_batches: list[float] = field(default_factory=list)
    placements: list[str] = field(default_factory=list)
    """Where each batch ran its kernels (``details.silver.placement``), in batch order."""
    executors_batch_seconds: list[float] = field(default_factory=list)
    """The same snapshots again with ``kernel_driver_max_rows=0``: the executor placement."""
    executors_placements: list[str] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return p50(self.batch_seconds)

    @property
    def p50_jobs(self) -> float:
        return p50(self.batch_jobs)

    @property
    def max_jobs(self) -> float:
        return pct(self.batch_jobs, 1.0)

    @property
    def executors_p50(self) -> float:
        return p50(self.executors_batch_seconds)

    @property
    def reference_p50(self) -> float:
        return p50(self.reference_batches)

    @property
    def ratio(self) -> float:
        """Scale p50 over the reference p50 (NaN without a reference)."""
        ref = self.reference_p50
        return self.p50 / ref if ref and ref == ref else float("nan")


def run_scale(
    spark: SparkSession,
    root: str,
    *,
    coins: int,
    vs_currencies: Sequence[str],
    repeats: int,
    shuffle_partitions: int,
    seed: int = 13,
) -> ScaleResult:
    """``repeats`` snapshots of ``coins`` x ``vs_currencies``, each one batch, on an empty lakehouse;
    then the same snapshots on another empty lakehouse with every batch's kernels on the executors.

    The reference fields are left empty: the caller fills them (:func:`run_reference`, or the
    steady section's start phase).
    """

    def one_run(where: str, driver_max_rows: int | None) -> tuple[RunResult, Layout]:
        shutil.rmtree(where, ignore_errors=True)
        layout = Layout.from_root(where)
        series = SnapshotSeries(layout, coins=coins, vs_currencies=tuple(vs_currencies), seed=seed)
        run = run_snapshot_batches(
            spark,
            series,
            repeats,
            name="scale" if driver_max_rows is None else "scale, executor placement",
            shuffle_partitions=shuffle_partitions,
            kernel_driver_max_rows=driver_max_rows,
        )
        return run, layout

    run, layout = one_run(root, None)
    silver = layout.table(SILVER)
    rows = spark.read.format("delta").load(silver).count() if os.path.isdir(silver) else 0
    placements = batch_placements(spark, layout)
    on_executors, executors_layout = one_run(root + "-executors", 0)
    executors_placements = batch_placements(spark, executors_layout)
    shutil.rmtree(executors_layout.root, ignore_errors=True)
    return ScaleResult(
        coins=coins,
        vs_currencies=list(vs_currencies),
        records_per_batch=run.batch_records[0] if run.batch_records else 0,
        files_per_batch=pages_per_snapshot(coins, tuple(vs_currencies)),
        batch_seconds=run.batch_seconds,
        batch_jobs=run.batch_jobs,
        silver_rows=rows,
        placements=placements,
        executors_batch_seconds=on_executors.batch_seconds,
        executors_placements=executors_placements,
    )


def batch_placements(spark: SparkSession, layout: Layout) -> list[str]:
    """Where each successful batch ran its kernels, in batch order (``pipeline_metadata.details``)."""
    rows = (
        spark.read.format("delta")
        .load(layout.table(METADATA))
        .where("status = 'ok' AND details IS NOT NULL")
        .orderBy("batch_id")
        .select("details")
        .collect()
    )
    found = (json.loads(r["details"]).get("silver", {}).get("placement") for r in rows)
    return [p for p in found if p]


def run_reference(
    spark: SparkSession, root: str, *, coins: int, batches: int, shuffle_partitions: int
) -> RunResult:
    """The steady section's start phase alone: ``batches`` one-snapshot batches of ``coins`` coins
    (one currency) on an empty lakehouse, for a scale run made without the steady section."""
    shutil.rmtree(root, ignore_errors=True)
    series = SnapshotSeries(Layout.from_root(root), coins=coins)
    return run_snapshot_batches(
        spark, series, batches, name="scale reference", shuffle_partitions=shuffle_partitions
    )
