"""Streaming progress into ``pipeline_metadata``: one ``kind='progress'`` row per micro-batch.

Design: **buffer in the listener, write from the driver thread.**

PySpark calls :class:`ProgressRecorder`'s callbacks on a separate thread (the py4j callback
server) while the stream's foreachBatch handler may be in the middle of its own Delta commits.
Writing Delta from the callback would race those commits and, worse, the session-wide
``txnAppId``/``txnVersion`` settings of :func:`app.sinks.delta.io.delta_txn`: an append made while
they are set would be tagged with the batch's transaction id (and skipped, or consume it). So the
callback only turns the event into a plain dict and appends it to an in-memory buffer under a
small lock; nothing touches Spark there (a JVM call from the callback would also stall Spark's
listener bus). :meth:`ProgressRecorder.flush` writes the buffer as one blind Delta append from a
Python thread of ours and holds ``delta_io.SESSION_TXN_LOCK`` while doing so, so it can never interleave
with a ``delta_txn`` block; blind appends do not conflict with the handler's own commits. Call it
after the query ends (the :func:`recording_progress` context manager does), periodically from the
thread that awaits the query (``flush(..., min_interval_s=60)``), or let the context manager run
a small flusher thread (``flush_interval_s``) for long-running queries. Progress rows are observability, not data: a crash
before a flush loses them; the handler's own per-batch rows are the accounting of record.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pyspark.sql.streaming import StreamingQueryListener

from app.logs import log_event
from app.paths import STREAM_QUERY_NAME, Layout
from app.tables import METADATA

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

PROGRESS_KIND = "progress"


def _parse_ts(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    # Stored as a UTC wall-clock value, like every other timestamp (app/tables.py).
    return parsed.astimezone(UTC).replace(tzinfo=None)


def progress_row(progress: Any, run_id: str) -> dict[str, Any]:
    """A ``pipeline_metadata`` row (as a dict) from one ``StreamingQueryProgress``.

    Args:
        progress: the ``event.progress`` of ``onQueryProgress``.
        run_id: id of this process run.

    Returns:
        Values for the columns of ``app.tables.METADATA_DDL``; rates and sources go to ``details``.
    """
    durations = {str(k): int(v) for k, v in (progress.durationMs or {}).items()}
    started = _parse_ts(progress.timestamp)
    finished = None
    if started is not None and "triggerExecution" in durations:
        finished = started + timedelta(milliseconds=durations["triggerExecution"])
    details = {
        "query_name": progress.name,
        "query_id": str(progress.id),
        "query_run_id": str(progress.runId),
        "input_rows_per_second": _finite(progress.inputRowsPerSecond),
        "processed_rows_per_second": _finite(progress.processedRowsPerSecond),
        "batch_duration_ms": int(getattr(progress, "batchDuration", 0) or 0),
        "sources": [
            {"description": s.description, "num_input_rows": int(s.numInputRows)}
            for s in (progress.sources or [])
        ],
    }
    return {
        "run_id": run_id,
        "kind": PROGRESS_KIND,
        "batch_id": int(progress.batchId),
        "app_id": f"coinlake-{progress.id}",
        "started_at": started,
        "finished_at": finished,
        "status": "ok",
        "records_read": int(progress.numInputRows),
        "durations_ms": durations,
        "details": json.dumps(details, sort_keys=True),
    }


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


class ProgressRecorder(StreamingQueryListener):
    """Buffers each micro-batch's progress; :meth:`flush` appends the buffer to ``pipeline_metadata``.

    Args:
        run_id: id of this process run, stored in every row.
        query_name: only record queries with this name (None: every query of the session).
    """

    def __init__(self, run_id: str, query_name: str | None = STREAM_QUERY_NAME) -> None:
        super().__init__()
        self.run_id = run_id
        self.query_name = query_name
        self._lock = threading.Lock()
        # Keyed by (query id, batch id): a repeated event for a batch replaces the earlier one.
        self._buffer: dict[tuple[str, int], dict[str, Any]] = {}
        self._last_flush = time.monotonic()
        self.written = 0
        self._ensured: set[str] = set()  # metadata tables checked by this recorder (once each)

    # --- listener callbacks: run on the py4j callback thread; no Spark calls here ---
    def onQueryStarted(self, event: Any) -> None:  # noqa: N802 (PySpark's name)
        pass

    def onQueryProgress(self, event: Any) -> None:  # noqa: N802
        progress = event.progress
        if self.query_name is not None and progress.name != self.query_name:
            return
        try:
            row = progress_row(progress, self.run_id)
        except Exception:  # a listener must never kill the callback thread
            logger.exception("progress event could not be converted")
            return
        with self._lock:
            self._buffer[(str(progress.id), row["batch_id"])] = row

    def onQueryIdle(self, event: Any) -> None:  # noqa: N802
        pass

    def onQueryTerminated(self, event: Any) -> None:  # noqa: N802
        pass

    # --- driver side ---
    def pending(self) -> list[dict[str, Any]]:
        """A copy of the buffered rows, oldest batch first."""
        with self._lock:
            return sorted(self._buffer.values(), key=lambda r: (r["app_id"], r["batch_id"]))

    def flush(self, spark: SparkSession, layout: Layout, *, min_interval_s: float = 0.0) -> int:
        """Append the buffered rows to ``pipeline_metadata`` in one commit; call from the driver thread.

        Args:
            spark: the session.
            layout: the storage layout (the table lives at ``layout.table("pipeline_metadata")``).
            min_interval_s: do nothing if the last flush was more recent than this (for calling
                it on every poll of an await loop).

        Returns:
            The number of rows written.
        """
        if min_interval_s and time.monotonic() - self._last_flush < min_interval_s:
            return 0
        from app.sinks.delta.io import SESSION_TXN_LOCK
        from app.tables import METADATA_DDL, ensure_table

        with self._lock:
            rows = list(self._buffer.values())
            self._buffer.clear()
        self._last_flush = time.monotonic()
        if not rows:
            return 0
        path = layout.table(METADATA)
        try:
            with SESSION_TXN_LOCK:
                if path not in self._ensured:
                    ensure_table(spark, METADATA, path)
                    self._ensured.add(path)
                metadata_df = spark.createDataFrame(rows, METADATA_DDL)
                metadata_df.write.format("delta").mode("append").save(path)
        except Exception:
            with self._lock:  # keep them for the next flush; newer events for a batch win
                for row in rows:
                    self._buffer.setdefault((row["app_id"], row["batch_id"]), row)
            raise
        self.written += len(rows)
        log_event(logger, "progress.flushed", rows=len(rows), run_id=self.run_id)
        return len(rows)


def wait_for_listener_events(spark: SparkSession, timeout_ms: int = 10_000) -> None:
    """Wait until Spark has delivered queued listener events (progress is posted asynchronously)."""
    try:
        spark.sparkContext._jsc.sc().listenerBus().waitUntilEmpty(timeout_ms)  # type: ignore[union-attr]
    except Exception:  # best effort: an internal API; on Databricks it may be absent
        time.sleep(min(timeout_ms, 1000) / 1000)


@contextmanager
def recording_progress(
    spark: SparkSession,
    layout: Layout,
    *,
    run_id: str,
    query_name: str | None = STREAM_QUERY_NAME,
    flush_interval_s: float | None = None,
) -> Iterator[ProgressRecorder]:
    """Record the progress of streaming queries started inside the block.

    On exit (also on error) the listener is removed and the buffer flushed to
    ``pipeline_metadata`` from the calling thread. With ``flush_interval_s``, a daemon thread also
    flushes every that many seconds while the block runs (for continuous queries)::

        with recording_progress(spark, layout, run_id=run_id) as recorder:
            query = start_stream(...)
            while query.isActive:
                query.awaitTermination(30)
                recorder.flush(spark, layout, min_interval_s=60)
    """
    recorder = ProgressRecorder(run_id=run_id, query_name=query_name)
    spark.streams.addListener(recorder)
    stop = threading.Event()
    flusher = None
    if flush_interval_s:
        flusher = threading.Thread(
            target=_flush_periodically,
            args=(recorder, spark, layout, flush_interval_s, stop),
            name="coinlake-progress-flusher",
            daemon=True,
        )
        flusher.start()
    try:
        yield recorder
    finally:
        stop.set()
        if flusher is not None:
            flusher.join(timeout=120)
        wait_for_listener_events(spark)
        spark.streams.removeListener(recorder)
        try:
            recorder.flush(spark, layout)
        except Exception:  # observability must not mask the stream's own outcome
            logger.exception("progress rows could not be written")


def _flush_periodically(
    recorder: ProgressRecorder, spark: SparkSession, layout: Layout, interval_s: float, stop: threading.Event
) -> None:
    while not stop.wait(interval_s):
        try:
            recorder.flush(spark, layout)
        except Exception:  # keep the rows buffered and try again next time
            logger.exception("periodic progress flush failed")
