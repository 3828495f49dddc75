"""Spark jobs per batch: the driver's job counter, read at the end of every batch.

A batch's job count is the number of Spark jobs the driver started between the end of the previous
batch and the end of this one: the same window as the batch cycle time, so it covers the source's
listing and planning, the handler's work and its Delta commits (the first batch of a run counts
from the run's start, so it also holds the query's start: three table checks today).

The counter is the DAG scheduler's job id sequence (``numTotalJobs``): every job gets the next id
when it is submitted, on the driver thread that submits it, so reading it needs no listener and is
exact at the moment the batch's ``on_batch`` callback runs. The status store
(``statusTracker().getJobIdsForGroup``) is filled by the asynchronous listener bus and keeps only
the last ``spark.ui.retainedJobs`` jobs, so it can lag a batch's last jobs and forget old ones; it
serves to check this count after a run (``tests/test_bench_smoke.py``), not to take it. Nothing
else runs Spark jobs while the bench measures, so every job in a window after the first is the
stream's own (its job group is the query's run id).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def jobs_started(spark: SparkSession) -> int | None:
    """Spark jobs the driver has started so far, or None where the counter is not reachable.

    ``DAGScheduler.numTotalJobs`` is ``private[spark]`` in Scala, which is public to Py4J; a
    session without a local JVM (Spark Connect) has neither, and the bench then reports no count.
    """
    try:
        return int(spark.sparkContext._jsc.sc().dagScheduler().numTotalJobs())
    except Exception:  # no JVM gateway, or an API change: report "n/a", never fail the bench
        return None


class BatchJobCounter:
    """Jobs per batch of one run: call :meth:`start` before the run and :meth:`batch_done` per batch."""

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark
        self.per_batch: list[int] = []
        self._last: int | None = None

    def start(self) -> None:
        self._last = jobs_started(self.spark)

    def batch_done(self) -> None:
        now = jobs_started(self.spark)
        if now is not None and self._last is not None:
            self.per_batch.append(now - self._last)
        self._last = now


def status_store_jobs(spark: SparkSession, *, timeout_ms: int = 30_000) -> dict[int, str | None]:
    """Job id -> job group of every job the status store retains, once the listener bus is drained.

    For checking :class:`BatchJobCounter` after a run (module docstring), not for measuring.
    """
    sc = spark.sparkContext._jsc.sc()
    sc.listenerBus().waitUntilEmpty(timeout_ms)
    jobs: dict[int, str | None] = {}
    it = sc.statusStore().jobsList(None).iterator()
    while it.hasNext():
        job = it.next()
        group = job.jobGroup()
        jobs[int(job.jobId())] = str(group.get()) if group.isDefined() else None
    return jobs
