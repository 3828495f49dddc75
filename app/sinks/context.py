"""What the foreachBatch handler hands to each stage that runs after the silver MERGE."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.tables import ensure_table

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from app.config import Settings
    from app.paths import Layout
    from app.sinks.working_set import WorkingSet


@dataclass(frozen=True)
class BatchContext:
    """One micro-batch, after silver has been merged.

    Attributes:
        spark: the session of the batch (``batch_df.sparkSession``).
        batch_id: the micro-batch id from the stream.
        app_id: idempotence id of the stream (``coinlake-<query id>``), see ``delta_io``.
        run_id: id of this process run (for logs and metadata).
        layout: storage layout of the data root.
        settings: the frozen settings.
        touched_df: ``coin_id, vs_currency, from_ts, to_ts``: one row per key with valid
            observations in the batch; silver rows with ``valid_from >= from_ts`` may have changed
            (docs/DESIGN.md, section 4). Cached by the handler.
        ensured: paths of tables already ensured by this stream run (the handler passes one set
            to every batch, so each table is checked once per run, not once per batch).
        image: the batch's silver working set before and after it (:mod:`app.sinks.working_set`);
            None when the batch had no valid records.
        outputs: the rows of the replaced ranges each stage computed from the after-image, by
            Delta table name (the warehouse stage mirrors them instead of re-reading Delta).
    """

    spark: SparkSession
    batch_id: int
    app_id: str
    run_id: str
    layout: Layout
    settings: Settings
    touched_df: DataFrame
    ensured: set[str] = field(default_factory=set)
    image: WorkingSet | None = None
    outputs: dict[str, DataFrame] = field(default_factory=dict)

    def scored(self) -> tuple[DataFrame, DataFrame]:
        """Both images' touched versions with their z-scores ``(after, before)``, computed once per batch.

        The handler computes them before the stages start (the stages run in parallel threads).
        """
        if "_scored_after" not in self.outputs:
            from app.sinks.derive import score_images

            image = self.require_image()
            after_df, before_df = score_images(
                image.after_df,
                image.before_df,
                image.touched_df,
                window=self.settings.zscore_window,
                min_periods=self.settings.zscore_min_periods,
            )
            self.outputs["_scored_after"], self.outputs["_scored_before"] = after_df, before_df
        return self.outputs["_scored_after"], self.outputs["_scored_before"]

    def require_image(self) -> WorkingSet:
        """The batch's working set; raises when the context has none (no valid records)."""
        if self.image is None:
            raise ValueError(f"batch {self.batch_id} has no working set (it had no valid records)")
        return self.image

    def ensure_table(self, name: str) -> str:
        """Create (or upgrade) the Delta table ``name`` once per run; returns its path."""
        path = self.layout.table(name)
        if path not in self.ensured:
            ensure_table(self.spark, name, path)
            self.ensured.add(path)
        return path


# A stage runs inside the batch once its working set is computed, at the same time as the silver
# MERGE and the other stages, and returns counts for pipeline_metadata (e.g. {"anomalies_added": 3}).
# It must be idempotent per batch_id. A stage with ``after_writes = True`` (the warehouse) runs once
# every Delta write of the batch has committed.
Stage = Callable[[BatchContext], dict[str, int]]
