"""Soak: a long-running interval-trigger stream, sampled every few batches, must stay flat.

The stream is the pipeline's own (:func:`app.stream.start_stream` with the handler and the default
stages, no warehouse) on an ``interval`` trigger, as ``coinlake stream --trigger interval`` runs
it. Every batch lands the next snapshot (one small bronze file of ``coins`` coins) from its
``on_batch`` callback, so the next trigger has exactly one new file: the run is as many batches
as asked, each as small as possible, and what is measured is what a process keeps per batch.

Every ``sample_every`` batches (and after the first), on the driver:

* the RSS of the Python driver and of the JVM (``/proc/<pid>/status``, ``VmRSS``);
* the JVM heap used after a full GC (``System.gc()``, then ``totalMemory - freeMemory``);
* the open file descriptors of both processes (``/proc/<pid>/fd``);
* the stream checkpoint folder's size in bytes and its file count;
* the ``_delta_log`` file count of each table.

Delta deletes a log file only once it is older than ``delta.logRetentionDuration`` (30 days by
default) counted from the start of the day, so no run shorter than a month can see that cleanup
happen on its own. To check that it does, the soak ages the logs once, after batch
``age_logs_at``: it moves the modification time of every file in each table's ``_delta_log``
:data:`LOG_AGE_DAYS` days back, keeping their order, as if everything written so far had been
written a month earlier. The next checkpoint of each table (every 10 commits) must then delete the
files before it; :meth:`SoakResult.log_cleanup` reports each table's count at the ageing and the
lowest count after it.

:meth:`SoakResult.growth_per_100` fits a least-squares line through the samples after the warm-up
and reports its slope per 100 batches, per metric.
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from app.paths import Layout
from app.tables import TABLE_NAMES
from bench.spark_runs import pipeline_settings
from bench.workload import SnapshotSeries

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from app.sinks.delta.metadata import BatchMetadata

# The metrics of a sample that must stay flat, in report order (delta_log_files is per table).
METRICS = (
    "python_rss_mb",
    "jvm_rss_mb",
    "jvm_heap_after_gc_mb",
    "python_fds",
    "jvm_fds",
    "checkpoint_bytes",
    "checkpoint_files",
)
_MB = 1024 * 1024
# How far back the soak moves the Delta logs: past delta.logRetentionDuration's default of 30 days
# plus the cut-off's truncation to the start of a day.
LOG_AGE_DAYS = 32


@dataclass
class SoakSample:
    """What the driver held after batch ``batch`` (the batch count, 1-based)."""

    batch: int
    python_rss_mb: float
    jvm_rss_mb: float
    jvm_heap_after_gc_mb: float
    python_fds: int
    jvm_fds: int
    checkpoint_bytes: int
    checkpoint_files: int
    delta_log_files: dict[str, int] = field(default_factory=dict)

    def value(self, metric: str) -> float:
        """A metric by name; ``delta_log_files:<table>`` for one table's log."""
        if metric.startswith("delta_log_files:"):
            return float(self.delta_log_files.get(metric.split(":", 1)[1], 0))
        return float(getattr(self, metric))


@dataclass
class SoakResult:
    """The samples of a soak run; ``warmup``: the batches left out of the growth figures."""

    coins: int
    batches: int
    interval: str
    sample_every: int
    warmup: int
    samples: list[SoakSample] = field(default_factory=list)
    # When the Delta logs were aged (module docstring): the batch, the days and each table's count.
    logs_aged_after: int = 0
    logs_aged_days: int = 0
    logs_at_ageing: dict[str, int] = field(default_factory=dict)

    def metrics(self) -> list[str]:
        """Every metric name, the per-table ``_delta_log`` counts last."""
        tables = sorted({t for s in self.samples for t in s.delta_log_files})
        return [*METRICS, *(f"delta_log_files:{t}" for t in tables)]

    def growth_per_100(self, metric: str) -> float:
        """Least-squares slope of ``metric`` over the samples after the warm-up, per 100 batches.

        Returns:
            The slope x 100, or NaN with fewer than two samples after the warm-up.
        """
        return growth_per_100([(s.batch, s.value(metric)) for s in self.samples if s.batch > self.warmup])

    def as_dict(self) -> dict[str, object]:
        return dict(
            asdict(self),
            growth_per_100={m: self.growth_per_100(m) for m in self.metrics()},
            after_warmup={m: self.span(m) for m in self.metrics()},
            log_cleanup=self.log_cleanup(),
        )

    def log_cleanup(self) -> dict[str, tuple[int, int]]:
        """Per table: its ``_delta_log`` file count when the logs were aged, and the lowest after.

        Empty when the logs were not aged or no sample followed; a table whose lowest count after
        is below its count at the ageing had its old log files deleted by Delta's cleanup.
        """
        later = [s for s in self.samples if s.batch > self.logs_aged_after]
        if not self.logs_aged_after or not later:
            return {}
        return {
            table: (count, min(s.delta_log_files.get(table, count) for s in later))
            for table, count in sorted(self.logs_at_ageing.items())
        }

    def span(self, metric: str) -> tuple[float, float]:
        """``metric`` at the first and at the last sample after the warm-up (NaN when none)."""
        after = [s.value(metric) for s in self.samples if s.batch > self.warmup]
        return (after[0], after[-1]) if after else (float("nan"), float("nan"))


def growth_per_100(points: list[tuple[int, float]]) -> float:
    """The least-squares slope through ``(batch, value)`` points, times 100 (NaN below 2 points)."""
    if len(points) < 2:
        return float("nan")
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        return float("nan")
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return 100.0 * sxy / sxx


def _rss_mb(pid: int | str) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024  # kB
    return float("nan")


def _fds(pid: int | str) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _tree(path: str) -> tuple[int, int]:
    """Bytes and files under ``path`` (0, 0 when it does not exist)."""
    size = files = 0
    for folder, _dirs, names in os.walk(path):
        for name in names:
            try:
                size += os.path.getsize(os.path.join(folder, name))
            except FileNotFoundError:  # removed by a cleanup while walking
                continue
            files += 1
    return size, files


def _log_dirs(layout: Layout) -> dict[str, str]:
    """Each existing table's ``_delta_log`` folder."""
    dirs = {name: os.path.join(layout.table(name), "_delta_log") for name in TABLE_NAMES}
    return {name: path for name, path in dirs.items() if os.path.isdir(path)}


def age_delta_logs(layout: Layout, days: int) -> dict[str, int]:
    """Move every ``_delta_log`` file's modification time ``days`` back, keeping their order.

    Delta's log cleanup compares these times with the retention cut-off and expects them to rise
    with the version (it raises a later file's time to its predecessor's otherwise), so every file
    moves by the same amount and the order a running table wrote them in is kept.

    Returns:
        Each table's log file count at the ageing.
    """
    shift = days * 86_400
    counts = {}
    for name, log_dir in _log_dirs(layout).items():
        files = 0
        for entry in os.scandir(log_dir):
            if entry.is_file():
                st = entry.stat()
                os.utime(entry.path, (st.st_atime - shift, st.st_mtime - shift))
                files += 1
        counts[name] = files
    return counts


def take_sample(spark: SparkSession, layout: Layout, batch: int) -> SoakSample:
    """Measure the driver and the lake after ``batch`` batches (module docstring)."""
    jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
    jvm.java.lang.System.gc()
    runtime = jvm.java.lang.Runtime.getRuntime()
    heap = (runtime.totalMemory() - runtime.freeMemory()) / _MB
    jvm_pid = int(jvm.java.lang.ProcessHandle.current().pid())
    ckpt_bytes, ckpt_files = _tree(layout.checkpoint())
    logs = {name: _tree(log_dir)[1] for name, log_dir in _log_dirs(layout).items()}
    return SoakSample(
        batch=batch,
        python_rss_mb=_rss_mb("self"),
        jvm_rss_mb=_rss_mb(jvm_pid),
        jvm_heap_after_gc_mb=heap,
        python_fds=_fds("self"),
        jvm_fds=_fds(jvm_pid),
        checkpoint_bytes=ckpt_bytes,
        checkpoint_files=ckpt_files,
        delta_log_files=logs,
    )


def run_soak(
    spark: SparkSession,
    root: str,
    *,
    coins: int,
    batches: int,
    sample_every: int,
    warmup: int,
    interval: str = "1s",
    age_logs_at: int = 0,
    shuffle_partitions: int = 2,
    on_sample: object = None,
) -> SoakResult:
    """Run ``batches`` interval-trigger batches of one ``coins``-coin snapshot each; sample them.

    Args:
        spark: the session.
        root: the data root (wiped first).
        coins: coins per snapshot (at most 250: one bronze file per batch).
        batches: batches to run.
        sample_every: sample after every N-th batch (and after the first).
        warmup: batches left out of the growth figures.
        interval: the trigger interval.
        age_logs_at: age the Delta logs (module docstring) after this batch; 0: never.
        shuffle_partitions: as elsewhere in the bench.
        on_sample: optional callable given each sample as it is taken (progress printing).

    Returns:
        The run's samples.

    Raises:
        RuntimeError: the stream stopped with an error, or a batch did not read one snapshot.
    """
    import shutil

    from app.batch.handler import BatchHandler
    from app.stream import default_stages, start_stream

    shutil.rmtree(root, ignore_errors=True)
    layout = Layout.from_root(root)
    series = SnapshotSeries(layout, coins=coins)
    if series.files_per_snapshot != 1:
        raise ValueError(f"soak: --soak-coins must be at most 250 (one file per batch), got {coins}")
    settings = pipeline_settings(
        layout, warehouse="none", max_files_per_trigger=1, shuffle_partitions=shuffle_partitions
    )
    result = SoakResult(
        coins=coins, batches=batches, interval=interval, sample_every=sample_every, warmup=warmup
    )
    done = threading.Event()
    problems: list[str] = []

    def on_batch(meta: BatchMetadata) -> None:
        count = handler.totals.batches
        if meta.records_read != coins:
            problems.append(f"batch {meta.batch_id} read {meta.records_read} records, expected {coins}")
            done.set()
            return
        if count == 1 or count % sample_every == 0:
            sample = take_sample(spark, layout, count)
            result.samples.append(sample)
            if callable(on_sample):
                on_sample(sample)
        if count == age_logs_at:
            result.logs_aged_after, result.logs_aged_days = count, LOG_AGE_DAYS
            result.logs_at_ageing = age_delta_logs(layout, LOG_AGE_DAYS)
        if count >= batches:
            done.set()
        else:
            series.land(1)  # the next trigger's one new file

    handler = BatchHandler(
        layout=layout,
        settings=settings,
        checkpoint=layout.checkpoint(),
        stages=default_stages(settings),
        on_batch=on_batch,
    )
    series.land(1)
    query = start_stream(spark, settings, layout, handler, trigger="interval", every=interval)
    try:
        while not done.is_set() and query.isActive:
            done.wait(1.0)
    finally:
        query.stop()
    if query.exception() is not None:
        raise RuntimeError(f"soak: the stream failed: {query.exception()}")
    if problems:
        raise RuntimeError(f"soak: {problems[0]}")
    if handler.totals.batches < batches:
        raise RuntimeError(f"soak: the stream stopped after {handler.totals.batches} of {batches} batches")
    return result
