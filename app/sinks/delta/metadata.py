"""The ``pipeline_metadata`` sink: one row per micro-batch (and per ingest cycle), idempotent per batch."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from app.sinks.delta.io import append_idempotent
from app.tables import METADATA_DDL

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

STREAM_BATCH_KIND = "stream_batch"


@dataclass
class BatchMetadata:
    """The counts and timings of one micro-batch; ``records_read = new_versions + unchanged + duplicates + quarantined``."""

    run_id: str
    batch_id: int
    app_id: str
    started_at: datetime
    kind: str = STREAM_BATCH_KIND
    finished_at: datetime | None = None
    status: str = "running"
    files: int = 0
    records_read: int = 0
    new_versions: int = 0
    unchanged: int = 0
    duplicates: int = 0
    quarantined: int = 0
    quarantined_by_rule: dict[str, int] = field(default_factory=dict)
    warned_by_rule: dict[str, int] = field(default_factory=dict)
    durations_ms: dict[str, int] = field(default_factory=dict)
    error_message: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    dq_passed: int | None = None
    dq_score: float | None = None
    dq_score_by_rule: dict[str, float] = field(default_factory=dict)

    @property
    def reconciles(self) -> bool:
        """Whether every record read is accounted for exactly once."""
        return self.records_read == self.new_versions + self.unchanged + self.duplicates + self.quarantined

    def as_row(self) -> dict[str, Any]:
        """The row as ``METADATA_DDL`` values (``details`` as a JSON string)."""
        return {
            "run_id": self.run_id,
            "kind": self.kind,
            "batch_id": self.batch_id,
            "app_id": self.app_id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "status": self.status,
            "files": self.files,
            "records_read": self.records_read,
            "new_versions": self.new_versions,
            "unchanged": self.unchanged,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "quarantined_by_rule": dict(self.quarantined_by_rule),
            "warned_by_rule": dict(self.warned_by_rule),
            "durations_ms": dict(self.durations_ms),
            "error_message": self.error_message,
            "details": json.dumps(self.details, sort_keys=True, default=str),
            "dq_passed": self.dq_passed,
            "dq_score": self.dq_score,
            "dq_score_by_rule": dict(self.dq_score_by_rule),
        }


def write_metadata(spark: SparkSession, meta: BatchMetadata, path: str, *, idempotent: bool = True) -> None:
    """Append the batch's metadata row; with ``idempotent`` once per ``(app_id, batch_id)``.

    A failed batch is written with ``idempotent=False`` so that its successful re-run can still
    commit its own row.
    """
    row = meta.as_row()
    df = spark.createDataFrame([tuple(row.values())], METADATA_DDL).coalesce(1)  # one file, not one per core
    if idempotent:
        append_idempotent(df, path, meta.app_id, meta.batch_id)
    else:
        df.write.format("delta").mode("append").save(path)
