"""Run a batch's independent Delta writes at the same time, each on a session of its own.

Once a batch's working set is computed, its writes (the silver MERGE, the anomaly write, the two
gold MERGEs, the quarantine append) do not depend on each other. Run one after another they leave
most of the machine idle: each Delta command is a chain of short Spark jobs with driver-side
planning between them (docs/BENCHMARKS.md). Run from threads, one command plans while another's
jobs run. Each write still commits once per ``(app_id, batch_id)`` (``delta_io``): the threads get
:func:`~app.sinks.delta.io.private_session` sessions, so their transaction settings never mix.

A failed write does not cancel the others: every write is waited for, then the first error (in
the order the writes were given) is raised, so the batch fails and re-runs on restart, where the
writes that did commit are skipped by their transaction ids.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from app.sinks.delta.io import private_session

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

Write = Callable[["SparkSession"], Any]
# The Spark local property behind ``SparkContext.setJobDescription`` (per thread, inherited).
JOB_DESCRIPTION = "spark.job.description"


def run_writes(spark: SparkSession, writes: Mapping[str, Write]) -> tuple[dict[str, Any], dict[str, int]]:
    """Run ``writes`` concurrently, each with its own session; wait for all of them.

    Args:
        spark: the batch's session (each write gets a private clone of it).
        writes: name -> callable taking the session to use; a single write runs inline.

    Returns:
        ``(results, durations_ms)`` by name.

    Raises:
        Exception: the first failure in ``writes`` order, after every write has finished.
    """
    from pyspark import InheritableThread

    results: dict[str, Any] = {}
    errors: dict[str, BaseException] = {}
    durations: dict[str, int] = {}

    sc = spark.sparkContext
    described = sc.getLocalProperty(JOB_DESCRIPTION)

    def run(name: str, write: Write, session: SparkSession) -> None:
        start = time.monotonic()
        if described and len(writes) > 1:  # each thread's jobs say which write they belong to
            sc.setJobDescription(f"{described} > {name}")
        try:
            results[name] = write(session)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread below
            errors[name] = exc
        finally:
            durations[name] = int((time.monotonic() - start) * 1000)

    if len(writes) == 1:
        ((name, write),) = writes.items()
        run(name, write, spark)
    else:
        threads = [
            InheritableThread(target=run, args=(name, write, private_session(spark)), name=f"write-{name}")
            for name, write in writes.items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for name in writes:
        if name in errors:
            failed = sorted(errors)
            if len(failed) > 1:
                logger.error("batch writes failed: %s", ", ".join(failed))
            raise errors[name]
    return results, durations
