"""What the foreachBatch handler hands to each stage that runs after the silver MERGE."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from app.batch.frames import Rows
    from app.batch.placement import BatchRows
    from app.config import Settings
    from app.paths import Layout


@dataclass(frozen=True)
class BatchContext:
    """One micro-batch, once its kernels have computed every table's rows.

    Attributes:
        spark: the session of the batch (``batch_df.sparkSession``).
        batch_id: the micro-batch id from the stream.
        app_id: idempotence id of the stream (``coinlake-<query id>``), see ``delta_io``.
        run_id: id of this process run (for logs and metadata).
        layout: storage layout of the data root.
        settings: the frozen settings.
        touched_df: ``coin_id, vs_currency, from_ts, to_ts``: one row per key with valid
            observations in the batch; silver rows with ``valid_from >= from_ts`` may have changed
            (docs/DESIGN.md, section 4).
        rows: what the kernels computed for every table (:class:`app.batch.placement.BatchRows`);
            None when the batch had no valid records.
        outputs: the rows of the replaced ranges each stage wrote, by Delta table name (the
            warehouse stage mirrors them instead of re-reading Delta).
    """

    spark: SparkSession
    batch_id: int
    app_id: str
    run_id: str
    layout: Layout
    settings: Settings
    touched_df: DataFrame
    rows: BatchRows | None = None
    outputs: dict[str, Rows] = field(default_factory=dict)

    def require_rows(self) -> BatchRows:
        """The batch's kernel outputs; raises when the context has none (no valid records)."""
        if self.rows is None:
            raise ValueError(f"batch {self.batch_id} has no kernel outputs (it had no valid records)")
        return self.rows


StageFn = Callable[[BatchContext], dict[str, int]]

# The writes the batch handler itself runs in every batch; a stage may require them by name.
BUILTIN_WRITES = ("silver", "quarantine")


@dataclass(frozen=True)
class Stage:
    """A step of every batch after its working set is computed.

    A stage with no ``requires`` runs at the same time as the silver MERGE, the quarantine write
    and the other such stages; a stage runs only after every stage (or built-in write) it requires
    has committed. It returns counts for pipeline_metadata (e.g. ``{"anomalies_added": 3}``) and
    must be idempotent per batch_id.

    Attributes:
        name: the stage's name (its counts and duration in pipeline_metadata are keyed by it).
        run: ``run(ctx) -> counts``.
        writes: the Delta tables it writes (the stream ensures them once, at start).
        requires: stages, or :data:`BUILTIN_WRITES`, whose writes must have committed first.
    """

    name: str
    run: StageFn
    writes: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()

    def __call__(self, ctx: BatchContext) -> dict[str, int]:
        return self.run(ctx)


def as_stage(stage: Stage | StageFn) -> Stage:
    """``stage`` itself, or a callable as a stage: named after it, with its ``writes`` and ``requires``
    attributes when it has them (a class like the warehouse stage), else writing nothing."""
    if isinstance(stage, Stage):
        return stage
    name = str(getattr(stage, "name", None) or getattr(stage, "__name__", type(stage).__name__))
    return Stage(name, stage, tuple(getattr(stage, "writes", ())), tuple(getattr(stage, "requires", ())))


def plan_waves(stages: Iterable[Stage]) -> list[list[Stage]]:
    """Order stages into waves: the first runs with the built-in writes, each later one after the last.

    Raises:
        ConfigError: two stages share a name, a stage requires one that is not in the pipeline, or
            the requirements form a cycle (said at start-up, before any batch runs).
    """
    by_name: dict[str, Stage] = {}
    for stage in stages:
        if stage.name in by_name or stage.name in BUILTIN_WRITES:
            raise ConfigError(f"two stages are named {stage.name!r}; stage names must be unique")
        by_name[stage.name] = stage
    for stage in by_name.values():
        missing = [r for r in stage.requires if r not in by_name and r not in BUILTIN_WRITES]
        if missing:
            raise ConfigError(
                f"stage {stage.name!r} requires {', '.join(map(repr, missing))}, which "
                f"{'is' if len(missing) == 1 else 'are'} not in the pipeline "
                f"(stages: {', '.join(by_name) or 'none'}; built in: {', '.join(BUILTIN_WRITES)})"
            )
    level: dict[str, int] = dict.fromkeys(BUILTIN_WRITES, 0)

    def wave_of(name: str, path: Sequence[str]) -> int:
        if name in level:
            return level[name]
        if name in path:
            cycle = [*path[path.index(name) :], name]
            raise ConfigError(f"stage requirements form a cycle: {' -> '.join(cycle)}")
        stage = by_name[name]
        level[name] = max((wave_of(r, [*path, name]) + 1 for r in stage.requires), default=0)
        return level[name]

    for name in by_name:
        wave_of(name, [])
    waves: list[list[Stage]] = [[] for _ in range(max((level[n] for n in by_name), default=0) + 1)]
    for name, stage in by_name.items():
        waves[level[name]].append(stage)
    return waves
