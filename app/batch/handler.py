"""The foreachBatch handler: bronze files of one micro-batch -> quarantine + silver SCD2 -> stages -> metadata.

Body: a transform chain (parse, rule checks), the quality split, then the writes, each Delta table
committed at most once per batch with ``(app_id, batch_id)`` as its transaction id
(docs/DESIGN.md, section 3). After the silver MERGE it builds the touched set and runs the
``stages`` (anomalies, gold, warehouse) in order with a :class:`~app.batch.context.BatchContext`,
and every ``optimize_every_batches`` batches compacts the tables (:mod:`app.sinks.delta.compaction`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from app.alerts.dq import alert_on_quality
from app.batch.context import BatchContext, Stage, StageFn, as_stage, plan_waves
from app.batch.frames import collect
from app.batch.kernels.batch import OBSERVATION_COLUMNS, KernelParams
from app.batch.parallel import JOB_DESCRIPTION, run_writes
from app.batch.placement import BatchRows, run_on_driver, run_on_executors
from app.errors import PipelineError
from app.faults import crash_point
from app.logs import log_event
from app.quality.derived import with_derived_columns, with_row_hash
from app.quality.expectations import (
    Rule,
    counts_by_action,
    default_rules,
    raise_on_fail,
    rule_count_exprs,
    split_valid_invalid,
    with_errors,
    with_rule_checks,
)
from app.quality.parsing import parse_bronze
from app.quality.score import passes_every_rule, quality_score
from app.sinks.delta.compaction import compact_tables, compaction_due
from app.sinks.delta.io import app_id_for, read_checkpoint_query_id
from app.sinks.delta.metadata import BatchMetadata, write_metadata
from app.sinks.delta.quarantine import (
    operator_quarantined_files,
    to_quarantine_rows,
    without_files,
    write_quarantine,
)
from app.sinks.delta.scd2 import (
    MergeScope,
    apply_scd2_merge,
    merge_marker,
    silver_version_before,
)
from app.sinks.delta.working_set import WorkingSetReader, working_set_bound
from app.tables import METADATA, QUARANTINE, SILVER, TABLE_NAMES, ensure_table

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from app.config import Settings
    from app.paths import Layout

logger = logging.getLogger(__name__)
MAX_RAISED_MESSAGE = 4000
# Batches whose metadata a handler keeps in memory (``results``): an interval stream runs for
# weeks, and every batch's metadata is in ``pipeline_metadata`` anyway; the totals count them all.
RECENT_BATCHES_KEPT = 1000
TOUCHED_DDL = "coin_id STRING, vs_currency STRING, from_ts TIMESTAMP, to_ts TIMESTAMP"


class BatchFailedError(PipelineError):
    """A batch failed with an error whose message was too long to pass on whole (truncated)."""


def with_observation_columns(valid_df: DataFrame) -> DataFrame:
    """Derived columns, ``row_hash`` and ``valid_from = last_updated`` for the SCD2 plan."""
    return (
        valid_df.transform(with_derived_columns)
        .transform(with_row_hash)
        .withColumn("valid_from", F.col("last_updated"))
    )


@dataclass
class BatchTotals:
    """Running totals over every successful batch a handler processed (not only the kept ones)."""

    batches: int = 0
    files: int = 0
    records_read: int = 0
    new_versions: int = 0
    unchanged: int = 0
    duplicates: int = 0
    quarantined: int = 0

    def add(self, meta: BatchMetadata) -> None:
        """Count one finished batch: every other field sums the batch count of the same name."""
        self.batches += 1
        for f in fields(self):
            if f.name != "batches":
                setattr(self, f.name, getattr(self, f.name) + getattr(meta, f.name))


class BatchHandler:
    """The ``foreachBatch`` callable ``(batch_df, batch_id)``; holds no global state.

    Args:
        layout: storage layout (table paths).
        settings: the frozen settings, handed to the stages.
        app_id: idempotence id; when None it is derived on the first batch from ``checkpoint``.
        checkpoint: the query's checkpoint folder (for the app id).
        run_id: id of this process run (default: a new UUID).
        stages: the stages of every batch (:class:`app.batch.context.Stage`, or plain callables);
            they are ordered by what they require, and their counts go to metadata.
        rules: the expectations (default: :func:`app.quality.expectations.default_rules`).
        on_batch: called with each finished batch's metadata (progress display).
        keep_batches: how many of the latest batches' metadata ``results`` keeps; ``totals``
            counts every batch, so a long-running stream holds a bounded amount.
    """

    def __init__(
        self,
        *,
        layout: Layout,
        settings: Settings,
        app_id: str | None = None,
        checkpoint: str | None = None,
        run_id: str | None = None,
        stages: Sequence[Stage | StageFn] = (),
        rules: list[Rule] | None = None,
        on_batch: Callable[[BatchMetadata], None] | None = None,
        keep_batches: int = RECENT_BATCHES_KEPT,
    ) -> None:
        if app_id is None and checkpoint is None:
            raise ValueError("BatchHandler needs an app_id or a checkpoint to derive it from")
        self.layout = layout
        self.settings = settings
        self.app_id = app_id
        self.checkpoint = checkpoint
        self.run_id = run_id or uuid.uuid4().hex
        self.stages = [as_stage(s) for s in stages]
        self.waves = plan_waves(self.stages)  # a cycle or a missing stage fails here, at start-up
        self.rules = rules if rules is not None else default_rules()
        self.results: deque[BatchMetadata] = deque(maxlen=keep_batches)
        self.totals = BatchTotals()
        self.on_batch = on_batch
        self._tables_ready = False
        self.skip_files: frozenset[str] = frozenset()  # set aside by `coinlake quarantine-file`
        self.failed_files: list[str] = []  # the bronze files of the last failed batch

    def __call__(self, batch_df: DataFrame, batch_id: int) -> None:
        self.process(batch_df, batch_id)

    def _resolve_app_id(self, spark: SparkSession) -> str:
        if self.app_id is None:
            assert self.checkpoint is not None
            self.app_id = app_id_for(read_checkpoint_query_id(spark, self.checkpoint))
        return self.app_id

    @property
    def tables(self) -> tuple[str, ...]:
        """Every Delta table a batch writes: silver, quarantine, metadata and the stages' tables."""
        names = [SILVER, QUARANTINE, METADATA, *(t for s in self.stages for t in s.writes)]
        return tuple(dict.fromkeys(names))

    def prepare(self, spark: SparkSession) -> None:
        """Create (or upgrade) every table the batches write and read the set-aside files; once per run.

        The stream calls it before it starts; :meth:`process` calls it when nothing did.
        """
        if not self._tables_ready:
            for name in self.tables:
                ensure_table(spark, name, self.layout.table(name))
            self.skip_files = operator_quarantined_files(spark, self.layout.table(QUARANTINE))
            self._tables_ready = True

    def process(self, batch_df: DataFrame, batch_id: int) -> BatchMetadata:
        """Process one micro-batch (also callable directly on a static DataFrame in tests).

        Args:
            batch_df: ``value`` (a bronze file's whole text) and ``source_file`` per row.
            batch_id: the micro-batch id.

        Returns:
            The batch's metadata (also appended to ``pipeline_metadata``).

        Raises:
            DataQualityError: a ``fail`` expectation was violated.
        """
        spark = batch_df.sparkSession
        app_id = self._resolve_app_id(spark)
        meta = BatchMetadata(run_id=self.run_id, batch_id=batch_id, app_id=app_id, started_at=_now())
        cached: list[DataFrame] = []
        try:
            self.prepare(spark)
            self._run(spark, batch_df, batch_id, app_id, meta, cached)
            meta.status = "ok"
            meta.finished_at = _now()
            write_metadata(spark, meta, self.layout.table(METADATA))
        except Exception as exc:
            meta.status = "failed"
            meta.error_message = f"{type(exc).__name__}: {exc}"[:4000]
            meta.finished_at = _now()
            self.failed_files = _batch_files(batch_df)
            try:
                write_metadata(spark, meta, self.layout.table(METADATA), idempotent=False)
            except Exception:  # the original error matters more than the bookkeeping
                logger.exception("metadata.write_failed")
            log_event(
                logger, "batch.failed", level=logging.ERROR, batch_id=batch_id, error=meta.error_message
            )
            if len(str(exc)) > MAX_RAISED_MESSAGE:
                # A huge message (e.g. a driver error quoting its data) crossing py4j back into the
                # stream thread can overflow the JVM's stack in Spark's error formatting and hide
                # the cause; the full text is in the log event above and in pipeline_metadata.
                raise BatchFailedError(meta.error_message[:MAX_RAISED_MESSAGE]) from exc
            raise
        finally:
            release(cached)
        self.results.append(meta)
        self.totals.add(meta)
        log_event(
            logger,
            "batch.done",
            batch_id=batch_id,
            run_id=self.run_id,
            files=meta.files,
            records=meta.records_read,
            new_versions=meta.new_versions,
            unchanged=meta.unchanged,
            duplicates=meta.duplicates,
            quarantined=meta.quarantined,
            duration_ms=sum(meta.durations_ms.values()),
        )
        if self.on_batch is not None:
            self.on_batch(meta)
        return meta

    def _run(
        self,
        spark: SparkSession,
        batch_df: DataFrame,
        batch_id: int,
        app_id: str,
        meta: BatchMetadata,
        cached: list[DataFrame],
    ) -> None:
        rules = self.rules
        with _timed(meta, "parse", spark):
            checked_df = (
                parse_bronze(batch_df)
                .transform(without_files, self.skip_files)
                .transform(with_rule_checks, rules)
                .transform(with_errors, rules)
                .persist()
            )
            cached.append(checked_df)
            is_valid = F.size("errors") == 0
            row = checked_df.agg(
                F.count_distinct("source_file").alias("files"),
                F.count(F.lit(1)).alias("records"),
                F.count(F.when(~is_valid, 1)).alias("quarantined"),
                F.count(F.when(passes_every_rule(rules), 1)).alias("dq_passed"),
                F.date_format(
                    F.min(F.when(is_valid, F.col("last_updated"))), "yyyy-MM-dd HH:mm:ss.SSSSSS"
                ).alias("min_ts"),
                F.sort_array(F.collect_set(F.when(is_valid, F.col("vs_currency")))).alias("currencies"),
                *rule_count_exprs(rules),
            ).first()
            assert row is not None
            stats = row.asDict()
            by_action = counts_by_action(stats, rules)
            meta.files = int(stats["files"])
            meta.records_read = int(stats["records"])
            meta.quarantined = int(stats["quarantined"])
            meta.quarantined_by_rule = by_action["quarantine"] | by_action["fail"]
            meta.warned_by_rule = by_action["warn"]
            score = quality_score(
                meta.records_read,
                int(stats["dq_passed"]),
                {k: v for a in by_action.values() for k, v in a.items()},
            )
            meta.dq_passed, meta.dq_score, meta.dq_score_by_rule = score.passed, score.score, score.by_rule
            alert = alert_on_quality(
                checked_df,
                score,
                settings=self.settings,
                alerts_folder=f"{self.layout.root}/alerts",
                app_id=app_id,
                batch_id=batch_id,
                run_id=self.run_id,
            )
            if alert is not None:
                meta.details["dq_alert"] = alert
            raise_on_fail(by_action["fail"])
        crash_point("after_parse")

        valid_df, quarantine_df = split_valid_invalid(checked_df, rules)
        writes: dict[str, Callable[[SparkSession], object]] = {}
        if meta.quarantined:
            rows_df = to_quarantine_rows(quarantine_df, batch_id=batch_id)
            path = self.layout.table(QUARANTINE)
            writes["quarantine"] = lambda s: write_quarantine(rows_df, path, app_id=app_id, batch_id=batch_id)

        rows = None
        touched_df = None
        if stats["min_ts"] is not None:
            with _timed(meta, "working_set", spark):
                rows, silver_write = self._kernels(spark, valid_df, stats, batch_id, app_id, meta)
            touched_df = rows.outputs["touched"].spark(spark)
            if silver_write is not None:
                writes["silver"] = silver_write

        ctx = BatchContext(
            spark=spark,
            batch_id=batch_id,
            app_id=app_id,
            run_id=self.run_id,
            layout=self.layout,
            settings=self.settings,
            touched_df=touched_df if touched_df is not None else spark.createDataFrame([], TOUCHED_DDL),
            rows=rows,
        )
        first, *later = self.waves
        for stage in first:  # at the same time as the silver MERGE and the quarantine write
            writes[stage.name] = lambda s, stage=stage: dict(stage(replace(ctx, spark=s)) or {})  # type: ignore[misc]  # the default binds the loop variable
        stage_counts: dict[str, dict[str, int]] = {}
        with _timed(meta, "writes", spark):
            results, write_ms = run_writes(spark, writes)
        meta.details["write_ms"] = write_ms
        for stage in first:
            stage_counts[stage.name] = results[stage.name]
        if "silver" not in writes:
            crash_point("after_silver_merge")  # a re-run or a batch with nothing to merge
        for wave in later:  # each after everything it requires has committed
            if len(wave) == 1:
                with _timed(meta, wave[0].name, spark):
                    stage_counts[wave[0].name] = dict(wave[0](ctx) or {})
                continue
            jobs = {s.name: (lambda sess, s=s: dict(s(replace(ctx, spark=sess)) or {})) for s in wave}
            with _timed(meta, "+".join(jobs), spark):
                stage_counts.update(run_writes(spark, jobs)[0])
        if stage_counts:
            meta.details["stages"] = stage_counts
        if compaction_due(batch_id, self.settings.optimize_every_batches):
            with _timed(meta, "optimize", spark):
                tables = [self.layout.table(name) for name in TABLE_NAMES]
                meta.details["optimize"] = compact_tables(spark, tables, batch_id=batch_id)

    def _kernels(
        self,
        spark: SparkSession,
        valid_df: DataFrame,
        stats: dict,
        batch_id: int,
        app_id: str,
        meta: BatchMetadata,
    ) -> tuple[BatchRows, Callable[[SparkSession], object] | None]:
        """Read the working set once, place the kernels, and return their rows (module ``placement``).

        The kernels run on the driver when the valid observations plus the working set hold at most
        ``kernel_driver_max_rows`` rows (both collected once as Arrow), else on the executors.

        Returns:
            The kernels' rows, and the silver MERGE to run (None when there is nothing to write or
            the batch already committed it).
        """
        settings = self.settings
        path = self.layout.table(SILVER)
        currencies = list(stats["currencies"])
        scope = MergeScope(currencies=tuple(currencies), min_valid_from=stats["min_ts"])
        version, committed = silver_version_before(spark, path, merge_marker(app_id, batch_id))
        reader = WorkingSetReader(
            spark,
            path,
            version,
            currencies,
            working_set_bound(stats["min_ts"], settings.working_set_lookback_hours),
            versions_needed=settings.zscore_window + 1,
        )
        params = KernelParams.from_settings(settings, batch_id)
        obs_df = valid_df.transform(with_observation_columns).select(*OBSERVATION_COLUMNS)
        before_df = reader.first()
        room = settings.kernel_driver_max_rows - (meta.records_read - meta.quarantined)
        rows = None
        if room >= 0:
            before = collect(before_df, limit=room)
            if before is not None:
                obs = collect(obs_df)
                assert obs is not None
                rows = run_on_driver(reader, obs, before, params)
        if rows is None:
            rows = run_on_executors(spark, reader, obs_df, before_df, params)
        total = rows.counts
        meta.new_versions = total["kept"]
        meta.unchanged = total["unchanged"]
        meta.duplicates = total["duplicate"]
        meta.details["silver"] = {
            "inserts": total["inserts"],
            "updates": total["updates"],
            "deletes": total["deletes"],
            "read_version": version,
            "already_committed": committed,
            "placement": rows.placement,
            **rows.details,
        }
        if committed or not rows.silver_changes:
            return rows, None
        staged = rows.outputs["silver_staged"]

        def merge_silver(session: SparkSession) -> None:
            source_df = staged.spark(session)
            apply_scd2_merge(
                session, path, source_df, scope, app_id=app_id, batch_id=batch_id, source_ready=True
            )
            crash_point("after_silver_merge")

        return rows, merge_silver


def _batch_files(batch_df: DataFrame) -> list[str]:
    """The bronze files of a batch (for the failure message); empty if they cannot be listed."""
    from app.sources.bronze import batch_input_files

    try:
        return sorted(batch_input_files(batch_df))
    except Exception:  # the original error matters more than the file list
        logger.warning("batch.files_unavailable", exc_info=True)
        return []


def release(cached: Sequence[DataFrame]) -> None:
    """Unpersist ``cached`` (in the order they were persisted) newest first.

    Unpersisting a cached DataFrame makes Spark re-plan every cached DataFrame built on it whose
    data is not loaded yet, and re-planning a Delta scan runs Spark jobs (its file filtering).
    Newest first, nothing still cached depends on what is released. Only the checked rows are
    cached now; the working set's frames are local checkpoints, which Spark drops with them.
    """
    for df in reversed(cached):
        df.unpersist()


@contextmanager
def _timed(meta: BatchMetadata, step: str, spark: SparkSession | None = None) -> Iterator[None]:
    """Time ``step`` into ``meta.durations_ms``; its Spark jobs are described ``batch N: step``.

    The description is what the Spark UI and the status store show for each job (the concurrent
    writes add their own name to it, :func:`app.batch.parallel.run_writes`), so a batch's jobs can
    be told apart per step (docs/BENCHMARKS.md).
    """
    sc = spark.sparkContext if spark is not None else None
    previous = sc.getLocalProperty(JOB_DESCRIPTION) if sc is not None else None
    if sc is not None:
        sc.setJobDescription(f"batch {meta.batch_id}: {step}")
    start = time.monotonic()
    try:
        yield
    finally:
        meta.durations_ms[step] = meta.durations_ms.get(step, 0) + int((time.monotonic() - start) * 1000)
        if sc is not None:
            sc.setLocalProperty(JOB_DESCRIPTION, previous)  # type: ignore[arg-type]


def _now() -> datetime:
    return datetime.now(UTC)
