"""The foreachBatch handler: bronze files of one micro-batch -> quarantine + silver SCD2 -> stages -> metadata.

Body: a transform chain (parse, rule checks), the quality split, then the writes, each Delta table
committed at most once per batch with ``(app_id, batch_id)`` as its transaction id
(docs/DESIGN.md, section 3). After the silver MERGE it builds the touched set and runs the
``stages`` (anomalies, gold, warehouse) in order with a :class:`~app.sinks.context.BatchContext`,
and every ``optimize_every_batches`` batches compacts the tables (:mod:`app.sinks.compaction`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from app.errors import PipelineError
from app.faults import crash_point
from app.logs import log_event
from app.paths import TABLE_NAMES
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
from app.sinks.compaction import compact_tables, compaction_due
from app.sinks.context import BatchContext, Stage
from app.sinks.delta_io import app_id_for, read_checkpoint_query_id
from app.sinks.metadata import BatchMetadata, write_metadata
from app.sinks.quarantine import to_quarantine_rows, write_quarantine
from app.sinks.scd2 import (
    MergeScope,
    apply_scd2_merge,
    build_scd2_plan,
    build_touched,
    merge_marker,
    scope_condition,
    select_tail,
    silver_version_before,
)
from app.tables import ensure_table

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from app.config import Settings
    from app.paths import Layout

logger = logging.getLogger(__name__)
SILVER = "silver_crypto_clean"
QUARANTINE = "bronze_quarantine"
METADATA = "pipeline_metadata"
MAX_RAISED_MESSAGE = 4000
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


class SilverBatchHandler:
    """The ``foreachBatch`` callable ``(batch_df, batch_id)``; holds no global state.

    Args:
        layout: storage layout (table paths).
        settings: the frozen settings, handed to the stages.
        app_id: idempotence id; when None it is derived on the first batch from ``checkpoint``.
        checkpoint: the query's checkpoint folder (for the app id).
        run_id: id of this process run (default: a new UUID).
        stages: callables run after the silver MERGE, in order; their counts go to metadata.
        rules: the expectations (default: :func:`app.quality.expectations.default_rules`).
        on_batch: called with each finished batch's metadata (progress display).
    """

    def __init__(
        self,
        *,
        layout: Layout,
        settings: Settings,
        app_id: str | None = None,
        checkpoint: str | None = None,
        run_id: str | None = None,
        stages: Sequence[Stage] = (),
        rules: list[Rule] | None = None,
        on_batch: Callable[[BatchMetadata], None] | None = None,
    ) -> None:
        if app_id is None and checkpoint is None:
            raise ValueError("SilverBatchHandler needs an app_id or a checkpoint to derive it from")
        self.layout = layout
        self.settings = settings
        self.app_id = app_id
        self.checkpoint = checkpoint
        self.run_id = run_id or uuid.uuid4().hex
        self.stages = list(stages)
        self.rules = rules if rules is not None else default_rules()
        self.results: list[BatchMetadata] = []
        self.on_batch = on_batch
        self._tables_ready = False
        self._ensured: set[str] = set()  # tables the stages have ensured during this run

    def __call__(self, batch_df: DataFrame, batch_id: int) -> None:
        self.process(batch_df, batch_id)

    def _resolve_app_id(self, spark: SparkSession) -> str:
        if self.app_id is None:
            assert self.checkpoint is not None
            self.app_id = app_id_for(read_checkpoint_query_id(spark, self.checkpoint))
        return self.app_id

    def _ensure_tables(self, spark: SparkSession) -> None:
        if not self._tables_ready:
            for name in (SILVER, QUARANTINE, METADATA):
                ensure_table(spark, name, self.layout.table(name))
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
            self._ensure_tables(spark)
            self._run(spark, batch_df, batch_id, app_id, meta, cached)
            meta.status = "ok"
            meta.finished_at = _now()
            write_metadata(spark, meta, self.layout.table(METADATA))
        except Exception as exc:
            meta.status = "failed"
            meta.error_message = f"{type(exc).__name__}: {exc}"[:4000]
            meta.finished_at = _now()
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
        with _timed(meta, "parse"):
            checked_df = (
                parse_bronze(batch_df)
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
            raise_on_fail(by_action["fail"])
        crash_point("after_parse")

        valid_df, quarantine_df = split_valid_invalid(checked_df, rules)
        if meta.quarantined:
            with _timed(meta, "quarantine"):
                write_quarantine(
                    to_quarantine_rows(quarantine_df, batch_id=batch_id),
                    self.layout.table(QUARANTINE),
                    app_id=app_id,
                    batch_id=batch_id,
                )

        touched_df = spark.createDataFrame([], TOUCHED_DDL)
        if stats["min_ts"] is not None:
            with _timed(meta, "silver"):
                touched_df = self._merge_silver(spark, valid_df, stats, batch_id, app_id, meta, cached)
        crash_point("after_silver_merge")

        ctx = BatchContext(
            spark=spark,
            batch_id=batch_id,
            app_id=app_id,
            run_id=self.run_id,
            layout=self.layout,
            settings=self.settings,
            touched_df=touched_df,
            ensured=self._ensured,
        )
        stage_counts: dict[str, dict[str, int]] = {}
        for stage in self.stages:
            name = getattr(stage, "__name__", type(stage).__name__)
            with _timed(meta, name):
                stage_counts[name] = dict(stage(ctx) or {})
        if stage_counts:
            meta.details["stages"] = stage_counts
        if compaction_due(batch_id, self.settings.optimize_every_batches):
            with _timed(meta, "optimize"):
                tables = [self.layout.table(name) for name in TABLE_NAMES]
                meta.details["optimize"] = compact_tables(spark, tables, batch_id=batch_id)

    def _merge_silver(
        self,
        spark: SparkSession,
        valid_df: DataFrame,
        stats: dict,
        batch_id: int,
        app_id: str,
        meta: BatchMetadata,
        cached: list[DataFrame],
    ) -> DataFrame:
        path = self.layout.table(SILVER)
        scope = MergeScope(currencies=tuple(stats["currencies"]), min_valid_from=stats["min_ts"])
        version, committed = silver_version_before(spark, path, merge_marker(app_id, batch_id))
        silver_df = (
            spark.read.format("delta")
            .option("versionAsOf", version)
            .load(path)
            .alias("t")
            .filter(scope_condition(scope))
        )
        obs_df = valid_df.transform(with_observation_columns)
        # The tail is read once and cached: left as a Delta scan inside the plan (two branches, several
        # windows), Delta re-ran its file filtering for it dozens of times per batch (docs/BENCHMARKS.md).
        tail_df = select_tail(silver_df, obs_df).persist()
        cached.append(tail_df)
        tail_df.count()
        plan_df = build_scd2_plan(obs_df, tail_df, batch_id=batch_id).persist()
        cached.append(plan_df)
        is_batch = F.col("_origin") == "batch"
        counts = plan_df.agg(
            *[
                F.count(F.when(is_batch & (F.col("_outcome") == o), 1)).alias(o)
                for o in ("kept", "unchanged", "duplicate")
            ],
            F.count(F.when(F.col("_action") == "upsert", 1)).alias("upserts"),
            F.count(F.when(F.col("_action") == "delete", 1)).alias("deletes"),
        ).first()
        assert counts is not None
        meta.new_versions = int(counts["kept"])
        meta.unchanged = int(counts["unchanged"])
        meta.duplicates = int(counts["duplicate"])
        meta.details["silver"] = {
            "upserts": int(counts["upserts"]),
            "deletes": int(counts["deletes"]),
            "read_version": version,
            "already_committed": committed,
        }
        if not committed and (counts["upserts"] or counts["deletes"]):
            apply_scd2_merge(
                spark,
                path,
                plan_df.filter(F.col("_action") != "none"),
                scope,
                app_id=app_id,
                batch_id=batch_id,
            )
        touched_df = build_touched(plan_df).persist()
        cached.append(touched_df)
        return touched_df


def release(cached: Sequence[DataFrame]) -> None:
    """Unpersist ``cached`` (in the order they were persisted) newest first.

    Unpersisting a cached DataFrame makes Spark re-plan every cached DataFrame built on it whose
    data is not loaded yet, and re-planning a Delta scan runs Spark jobs (its file filtering). The
    batch's caches are a chain (checked rows -> silver tail -> SCD2 plan -> touched set), and the
    touched set is never loaded when no stage reads it: released oldest first, that re-planning
    cost 8 Spark jobs and ~3 s per batch (docs/BENCHMARKS.md). Newest first nothing depends on
    what is released.
    """
    for df in reversed(cached):
        df.unpersist()


@contextmanager
def _timed(meta: BatchMetadata, step: str) -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    finally:
        meta.durations_ms[step] = meta.durations_ms.get(step, 0) + int((time.monotonic() - start) * 1000)


def _now() -> datetime:
    return datetime.now(UTC)
