"""Build, start and await the bronze -> silver streaming query.

:func:`run_stream` is what the CLI, the demo and the tests call: it starts the query with a stable
name and checkpoint (``Layout.checkpoint(STREAM_QUERY_NAME)``), runs it ``available-now`` (every
file present at start, in batches of ``max_files_per_trigger``, then stops) or on an ``interval``
(until SIGTERM/SIGINT or ``timeout_seconds``), and returns a :class:`StreamResult`.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from app.batch.handler import BatchHandler, BatchTotals
from app.errors import ConfigError, PipelineError
from app.logs import log_event
from app.paths import STREAM_QUERY_NAME, local_path
from app.sources.bronze import read_bronze_stream

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.streaming import StreamingQuery

    from app.batch.context import Stage, StageFn
    from app.config import Settings
    from app.paths import Layout
    from app.quality.expectations import Rule
    from app.sinks.delta.metadata import BatchMetadata

logger = logging.getLogger(__name__)
Trigger = Literal["available-now", "interval"]
PROGRESS_FLUSH_SECONDS = 60.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


class StreamFailedError(PipelineError):
    """The streaming query stopped with an error (the failed batch re-runs on restart)."""


@dataclass
class StreamResult:
    """What a run of the query did.

    Attributes:
        query_id: the query id stored in the checkpoint (stable across restarts).
        app_id: the idempotence id derived from it.
        run_id: this process run.
        batches: metadata of the run's batches, in order: every one, or the latest
            :data:`~app.batch.handler.RECENT_BATCHES_KEPT` of a long run.
        totals: counts over every batch of the run (None: sum ``batches``).
    """

    query_id: str
    app_id: str
    run_id: str
    batches: list[BatchMetadata] = field(default_factory=list)
    totals: BatchTotals | None = None

    @property
    def records_read(self) -> int:
        """Records read over all batches of the run."""
        if self.totals is not None:
            return self.totals.records_read
        return sum(b.records_read for b in self.batches)

    @property
    def batch_count(self) -> int:
        """Batches the run processed (more than ``len(batches)`` once old ones were let go)."""
        return self.totals.batches if self.totals is not None else len(self.batches)


def default_stages(settings: Settings) -> list[Stage | StageFn]:
    """The stages of every batch; the handler orders them by what each requires.

    Anomalies and gold run with the silver MERGE (both score the working set themselves); the
    warehouse requires silver, anomalies and gold, so it mirrors what Delta committed.
    ``COINLAKE_WAREHOUSE=none`` leaves the warehouse out.
    """
    from app.batch.anomalies import ANOMALIES_STAGE
    from app.batch.gold import GOLD_STAGE

    stages: list[Stage | StageFn] = [ANOMALIES_STAGE, GOLD_STAGE]
    if settings.effective_warehouse != "none":
        from app.sinks.warehouse.stage import WarehouseStage

        stages.append(WarehouseStage())
    return stages


def parse_duration(text: str) -> float:
    """``30s``, ``500ms``, ``2m``, ``1h`` or plain seconds to seconds.

    Raises:
        ConfigError: the text is not a positive duration.
    """
    match = _DURATION.match(text or "")
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"--every: expected a duration like 30s, 500ms, 2m or 1h, found {text!r}")
    factor = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2) or "s"]
    return float(match.group(1)) * factor


def start_stream(
    spark: SparkSession,
    settings: Settings,
    layout: Layout,
    handler: BatchHandler,
    *,
    trigger: Trigger = "available-now",
    every: str = "30s",
    checkpoint: str | None = None,
    bronze_days: Sequence[str] | None = None,
) -> StreamingQuery:
    """Start the query (named :data:`app.paths.STREAM_QUERY_NAME`) with ``handler`` as its sink.

    ``checkpoint`` defaults to the stream's own, ``layout.checkpoint(STREAM_QUERY_NAME)``; a
    replay passes its own folder. ``bronze_days`` lists only those ``dt=`` folders (a replay from
    a day); by default the lookback setting decides.
    """
    from app.sinks.delta.maintenance import maintenance_conf

    for key, value in maintenance_conf(settings).items():  # the tables' retention and checkpoint interval
        spark.conf.set(key, value)
    handler.prepare(spark)  # every table the batches write, once, before the first batch
    checkpoint = checkpoint or layout.checkpoint(STREAM_QUERY_NAME)
    seed_file = prepare_checkpoint(settings, layout, checkpoint, bronze_days=bronze_days)
    source_df = read_bronze_stream(
        spark,
        layout.bronze_root,
        max_files_per_trigger=settings.max_files_per_trigger,
        lookback_days=settings.bronze_lookback_days,
        days=bronze_days,
        source=settings.bronze_source,
        late_minutes=settings.bronze_late_minutes,
        seed_file=seed_file,
    )
    writer = (
        source_df.writeStream.queryName(STREAM_QUERY_NAME)
        .option("checkpointLocation", checkpoint)
        .foreachBatch(handler)
    )
    if trigger == "available-now":
        writer = writer.trigger(availableNow=True)
    elif trigger == "interval":
        writer = writer.trigger(processingTime=f"{int(parse_duration(every) * 1000)} milliseconds")
    else:
        raise ConfigError(f"--trigger: expected available-now or interval, found {trigger!r}")
    return writer.start()


def prepare_checkpoint(
    settings: Settings, layout: Layout, checkpoint: str, *, bronze_days: Sequence[str] | None = None
) -> str | None:
    """Make ``checkpoint`` readable by the configured bronze source; returns a migration's seed file.

    The listing source takes over a checkpoint written by Spark's file source in place
    (:mod:`app.sources.bronze_migration`); the file source cannot read a listing checkpoint, so
    that combination stops with a message.

    Raises:
        ConfigError: ``COINLAKE_BRONZE_SOURCE=files`` on a checkpoint written by the listing source.
    """
    from app.sources.bronze_migration import is_listing_checkpoint, migrate_checkpoint, seed_file

    if settings.bronze_source == "files":
        if is_listing_checkpoint(checkpoint):
            raise ConfigError(
                f"the checkpoint {checkpoint} was written by the listing bronze source; the file "
                f"source cannot resume it: unset COINLAKE_BRONZE_SOURCE (or set it to listing), or "
                f"start over with `coinlake replay --from-scratch`"
            )
        return None
    from app.sources.bronze import start_key

    # Logged as bronze.checkpoint_migrated (where the old checkpoint went, files committed).
    migrate_checkpoint(
        checkpoint,
        layout.bronze_root,
        late_minutes=settings.bronze_late_minutes,
        start_key=start_key(lookback_days=settings.bronze_lookback_days, days=bronze_days),
    )
    seed = seed_file(checkpoint)
    return seed if os.path.exists(local_path(seed)) else None


def run_stream(
    spark: SparkSession,
    settings: Settings,
    layout: Layout,
    *,
    trigger: Trigger = "available-now",
    every: str = "30s",
    stages: Sequence[Stage | StageFn] | None = None,
    rules: list[Rule] | None = None,
    run_id: str | None = None,
    timeout_seconds: float | None = None,
    on_batch: Callable[[BatchMetadata], None] | None = None,
    checkpoint: str | None = None,
    bronze_days: Sequence[str] | None = None,
) -> StreamResult:
    """Run the query until it finishes (available-now), is signalled (SIGTERM/SIGINT) or times out.

    Args:
        spark: the session.
        settings: the settings (batch size, lookback).
        layout: the storage layout.
        trigger: ``available-now`` or ``interval``.
        every: the interval of the ``interval`` trigger.
        stages: stages after silver; default :func:`default_stages`.
        rules: expectations; default ``default_rules()``.
        run_id: this run's id (default: a new UUID).
        timeout_seconds: stop the query after this long (mainly for interval runs in tests).
        on_batch: called with each finished batch's metadata (e.g. to draw progress).
        checkpoint: the query's checkpoint folder (default: the stream's own).
        bronze_days: read only these ``dt=YYYY-MM-DD`` folders (default: as the settings say).

    Returns:
        The run's :class:`StreamResult`.

    Raises:
        StreamFailedError: a batch failed; the query stopped and that batch re-runs on restart.
    """
    run_id = run_id or uuid.uuid4().hex
    checkpoint = checkpoint or layout.checkpoint(STREAM_QUERY_NAME)
    handler = BatchHandler(
        layout=layout,
        settings=settings,
        checkpoint=checkpoint,
        run_id=run_id,
        stages=default_stages(settings) if stages is None else stages,
        rules=rules,
        on_batch=on_batch,
    )
    from app.observability import recording_progress

    # Interval runs live long: flush their progress rows every minute, not only at the end.
    flush_every = PROGRESS_FLUSH_SECONDS if trigger == "interval" else None
    with recording_progress(spark, layout, run_id=run_id, flush_interval_s=flush_every):
        query = start_stream(
            spark,
            settings,
            layout,
            handler,
            trigger=trigger,
            every=every,
            checkpoint=checkpoint,
            bronze_days=bronze_days,
        )
        log_event(logger, "stream.started", query_id=query.id, trigger=trigger, run_id=run_id)
        _await(query, timeout_seconds)
    error = query.exception()
    if error is not None:
        raise StreamFailedError(failure_message(root_cause(str(error)), handler.failed_files))
    result = StreamResult(
        query_id=str(query.id),
        app_id=handler.app_id or "",
        run_id=run_id,
        batches=list(handler.results),
        totals=handler.totals,
    )
    log_event(
        logger, "stream.finished", query_id=query.id, batches=result.batch_count, records=result.records_read
    )
    return result


QUARANTINE_FILE_COMMAND = "coinlake quarantine-file PATH --reason TEXT"
MAX_FILES_NAMED = 10


def failure_message(cause: str, files: Sequence[str]) -> str:
    """One line saying why the stream stopped, which bronze files the failed batch read, and how to
    set one aside when the failure is in the data (it repeats on every restart)."""
    message = f"stream stopped by an error (the failed batch re-runs on restart): {cause}"
    if not files:
        return message
    named = ", ".join(files[:MAX_FILES_NAMED])
    more = f" and {len(files) - MAX_FILES_NAMED} more" if len(files) > MAX_FILES_NAMED else ""
    return (
        f"{message}; bronze file(s) of the failed batch: {named}{more}; if it fails again on restart "
        f"(a data problem), set the file aside with: {QUARANTINE_FILE_COMMAND}"
    )


def _await(query: StreamingQuery, timeout_seconds: float | None) -> None:
    """Wait for the query to end, stopping it on SIGTERM/SIGINT or after ``timeout_seconds``.

    A query that fails ends the wait quietly: ``awaitTermination`` raises its error, which
    :func:`run_stream` reads back from ``query.exception()`` and reports in one line.
    """
    from pyspark.errors import StreamingQueryException

    stop = threading.Event()
    restore = _install_stop_signals(stop)
    waited = 0.0
    try:
        while query.isActive:
            if stop.is_set() or (timeout_seconds is not None and waited >= timeout_seconds):
                log_event(
                    logger,
                    "stream.stopping",
                    query_id=query.id,
                    reason="signal" if stop.is_set() else "timeout",
                )
                query.stop()
                break
            try:
                query.awaitTermination(0.5)  # type: ignore[arg-type]  # seconds; pyspark takes a float
            except StreamingQueryException:
                break
            waited += 0.5
    finally:
        restore()


def _install_stop_signals(stop: threading.Event):  # noqa: ANN202
    """Make SIGTERM/SIGINT request a clean stop (main thread only); returns a restore callable."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _request_stop(signum: int, frame: object) -> None:
        stop.set()

    for sig in previous:
        signal.signal(sig, _request_stop)

    def _restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return _restore


# "Caused by:" lines of a JVM error, and the last line of a Python traceback.
_CAUSED_BY = re.compile(r"^\s*Caused by: (.+)$", re.MULTILINE)
_PYTHON_ERROR = re.compile(r"^((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception)): (.+)$", re.MULTILINE)
_WRAPPERS = ("py4j.", "pyspark.errors.", "org.apache.spark.sql.execution.streaming.")


def root_cause(text: str) -> str:
    """The one line of a failed query's error that says what went wrong.

    A foreachBatch failure reaches the driver wrapped several times (the streaming query's error,
    the Python callback's traceback, the Py4J error, the Spark job's error, each with its causes).
    The innermost JVM cause is the most specific (``java.io.FileNotFoundException: ...
    (Permission denied)``); a failure in Python code has none, and the last line of its traceback
    is used (``app.errors.DataQualityError: ...``). Otherwise the first line.
    """
    text = text.split("=== Streaming Query ===", 1)[0]
    causes = [c.strip() for c in _CAUSED_BY.findall(text) if not c.strip().startswith(_WRAPPERS)]
    if causes:
        return causes[-1][:500]
    errors = [
        f"{name}: {msg.strip()}"
        for name, msg in _PYTHON_ERROR.findall(text)
        if not name.startswith(_WRAPPERS)
    ]
    if errors:
        return errors[-1][:500]
    return _first_line(text)


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()[:500]
    return "unknown error"
