"""The warehouse stage: mirror the batch's touched ranges from Delta into Snowflake (or the emulator).

Runs after the Delta writes of a micro-batch. Per touched key it reads the *current* Delta rows of
the replaced ranges (docs/DESIGN.md, section 4) and hands them to the loader, which replaces those
ranges in one warehouse transaction, exactly once per ``(app_id, batch_id)``. Because the rows come
from the Delta state, a batch re-run after Delta committed recovers exactly what to mirror.

``warehouse_on_error``:

- ``fail``: the error propagates, the stream batch fails, a restart re-runs it.
- ``continue``: the error is logged and counted, and the batch's touched ranges are added to a small
  pending file ``<data root>/warehouse/pending/<app>.json``. The next batch mirrors its own ranges
  together with the pending ones (earliest ``from_ts`` per key); on its commit the pending file is
  removed and its ledger row lists the caught-up batches in ``CATCHES_UP``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.errors import LoadTerminalError, LoadTransientError
from app.paths import local_path
from app.retry import RetryPolicy
from app.sinks.warehouse.connector import WarehouseConnector, connector_from_settings
from app.sinks.warehouse.sql import TARGETS, TargetTable, WarehouseBatch
from app.tables import SILVER

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

    from app.batch.context import BatchContext
    from app.config import Settings
    from app.paths import Layout

logger = logging.getLogger(__name__)

# pipeline_metadata rows of the last N batches are upserted each batch (their row is written after
# the stages, so a batch mirrors its predecessors' rows).
METADATA_LOOKBACK_BATCHES = 10


def pending_path(layout: Layout, app_id: str) -> str:
    """Where the unsynced ranges of a stream are kept (``warehouse_on_error=continue``)."""
    digest = hashlib.sha1(app_id.encode("utf-8")).hexdigest()[:16]
    return os.path.join(local_path(layout.warehouse_dir), "pending", f"{digest}.json")


def read_pending(path: str) -> dict[str, Any]:
    """The pending batches and ranges, or an empty record."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return {"batches": [], "touched": []}


def _write_pending(path: str, record: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(record, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def ranges_df(spark: SparkSession, touched_df: DataFrame, pending: dict[str, Any]) -> DataFrame:
    """``coin_id, vs_currency, from_ts``: earliest from_ts per key over the batch and the pending ranges."""
    from pyspark.sql import functions as F

    base_df = touched_df.select("coin_id", "vs_currency", "from_ts")
    if pending.get("touched"):
        rows = [(r["coin_id"], r["vs_currency"], r["from_ts"]) for r in pending["touched"]]
        pending_df = spark.createDataFrame(rows, "coin_id string, vs_currency string, from_ts string").select(
            "coin_id", "vs_currency", F.to_timestamp("from_ts").alias("from_ts")
        )
        base_df = base_df.unionByName(pending_df)
    return base_df.groupBy("coin_id", "vs_currency").agg(F.min("from_ts").alias("from_ts"))


def _read_delta(spark: SparkSession, path: str) -> DataFrame | None:
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, path):
        return None
    return spark.read.format("delta").load(path)


def select_mirror_rows(
    target: TargetTable,
    table_df: DataFrame,
    touched_df: DataFrame,
    *,
    app_id: str,
    min_batch_id: int,
    batch_id: int,
    currencies: set[str] | None = None,
) -> DataFrame:
    """The Delta rows of ``target`` inside the ranges of ``touched_df`` (pushdown-friendly filters).

    ``currencies`` (the touched ones) prunes the ``vs_currency`` partitions before the join.
    """
    from pyspark.sql import functions as F

    if target.replaces is None:
        return table_df.filter(
            (F.col("app_id") == app_id) & (F.col("batch_id") >= min_batch_id) & (F.col("batch_id") < batch_id)
        )
    rule = target.replaces
    column = rule.column.lower()
    match = [c.lower() for c in rule.match]
    if rule.bound == "date":
        bounds_df = touched_df.groupBy(*match).agg(F.min(F.to_date("from_ts")).alias("_bound"))
    elif rule.bound == "day":
        bounds_df = touched_df.select(*match, F.date_trunc("day", "from_ts").alias("_bound"))
    elif rule.bound == "bucket":
        bounds_df = touched_df.select(*match, F.col("from_ts").alias("_from"))
    else:
        bounds_df = touched_df.select(*match, F.col("from_ts").alias("_bound"))
    if "vs_currency" in match and currencies is not None:
        table_df = table_df.filter(F.col("vs_currency").isin(sorted(currencies)))
    if rule.bound == "bucket":
        bucket = F.when(F.col("interval") == "1h", F.date_trunc("hour", "_from")).otherwise(
            F.date_trunc("day", "_from")
        )
        return (
            table_df.join(F.broadcast(bounds_df), on=match, how="inner")
            .filter(F.col(column) >= bucket)
            .drop("_from")
        )
    return (
        table_df.join(F.broadcast(bounds_df), on=match, how="inner")
        .filter(F.col(column) >= F.col("_bound"))
        .drop("_bound")
    )


def to_pandas(df: DataFrame) -> pd.DataFrame:
    """Collect a small frame to pandas with timestamps as UTC-naive values, whatever the local zone.

    Timestamps travel as epoch microseconds (no Python local-time conversion); maps and arrays as JSON.
    """
    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    cols = []
    for fld in df.schema.fields:
        if isinstance(fld.dataType, T.TimestampType):
            cols.append(F.unix_micros(F.col(f"`{fld.name}`")).alias(fld.name))
        elif isinstance(fld.dataType, T.DateType):
            cols.append(F.date_format(F.col(f"`{fld.name}`"), "yyyy-MM-dd").alias(fld.name))
        elif isinstance(fld.dataType, T.MapType | T.ArrayType | T.StructType):
            cols.append(F.to_json(F.col(f"`{fld.name}`")).alias(fld.name))
        else:
            cols.append(F.col(f"`{fld.name}`"))
    rows = df.select(*cols).collect()
    pdf = pd.DataFrame([tuple(r) for r in rows], columns=df.columns)
    for fld in df.schema.fields:
        if isinstance(fld.dataType, T.TimestampType):
            pdf[fld.name] = pd.to_datetime(pd.array(pdf[fld.name], dtype="Int64"), unit="us")
        elif isinstance(fld.dataType, T.DateType):
            pdf[fld.name] = (
                pd.to_datetime(pdf[fld.name]).dt.date.astype(object).where(pdf[fld.name].notna(), None)
            )
    return pdf


def _delta_rows(
    ctx: BatchContext, target: TargetTable, touched_df: DataFrame, min_batch: int, currencies: set[str]
) -> DataFrame | None:
    """The current Delta rows of ``target`` in the ranges of ``touched_df`` (None: no table yet)."""
    table_df = _read_delta(ctx.spark, ctx.layout.table(target.delta_name))
    if table_df is None:
        return None
    return select_mirror_rows(
        target,
        table_df,
        touched_df,
        app_id=ctx.app_id,
        min_batch_id=min_batch,
        batch_id=ctx.batch_id,
        currencies=currencies,
    )


class WarehouseStage:
    """The warehouse :data:`~app.batch.context.Stage`: ``stage(ctx) -> counts``.

    It runs once the batch's Delta writes have committed (it requires them), and mirrors the
    rows the batch computed from its after-image; while ranges are pending after a failed load it
    mirrors the current Delta rows of all of them instead.

    Args:
        connector_factory: ``(settings, layout) -> WarehouseConnector | None`` (tests inject one).
        attempts: load attempts on transient errors (exponential backoff between them);
            ``COINLAKE_WAREHOUSE_LOAD_ATTEMPTS`` when None.
        wait_seconds: first backoff wait, doubled per attempt up to 30 s.
    """

    name = "warehouse"
    writes: tuple[str, ...] = ()
    # It mirrors what these committed (their rows, from ``ctx.outputs``).
    requires: tuple[str, ...] = ("silver", "anomalies", "gold")

    def __init__(
        self,
        connector_factory: Callable[[Settings, Layout], WarehouseConnector | None] = connector_from_settings,
        *,
        attempts: int | None = None,
        wait_seconds: float = 1.0,
    ) -> None:
        self._factory = connector_factory
        self._attempts = attempts
        self._wait_seconds = wait_seconds
        self._initialized: set[str] = set()

    def retry_policy(self, settings: Settings) -> RetryPolicy:
        """How a batch load is retried: the stage's attempts, else the settings'; waits double to 30 s."""
        return RetryPolicy(
            max_attempts=self._attempts or settings.warehouse_load_attempts,
            backoff_initial=self._wait_seconds,
            backoff_max=30.0,
            transient=(LoadTransientError,),
        )

    def __call__(self, ctx: BatchContext) -> dict[str, int]:
        connector = self._factory(ctx.settings, ctx.layout)
        if connector is None:
            return {}
        loader = connector.loader()
        path = pending_path(ctx.layout, ctx.app_id)
        pending = read_pending(path)
        catches_up = tuple(sorted({int(b) for b in pending["batches"]} - {ctx.batch_id}))
        if not pending["touched"] and ctx.rows is not None:
            min_batch = min((*catches_up, ctx.batch_id)) - METADATA_LOOKBACK_BATCHES
            touched, frames = self._frames_from_image(ctx, min_batch=min_batch)
        else:
            touched, frames = self._frames_from_delta(ctx, pending, catches_up)
        batch = WarehouseBatch(ctx.app_id, ctx.batch_id, frames, touched, catches_up)

        def load() -> Any:
            if connector.kind not in self._initialized:
                loader.init_schema()
                self._initialized.add(connector.kind)
            return loader.load(batch)

        try:
            result = self.retry_policy(ctx.settings).retrying()(load)
        except (LoadTransientError, LoadTerminalError) as exc:
            if ctx.settings.warehouse_on_error == "fail":
                raise
            self._remember(path, pending, ctx.batch_id, touched)
            logger.error(
                "warehouse load failed, continuing app_id=%s batch_id=%s pending_batches=%s error=%s",
                ctx.app_id,
                ctx.batch_id,
                len(catches_up) + 1,
                exc,
            )
            return {"warehouse_failed": 1, "warehouse_pending_batches": len(catches_up) + 1}
        if pending["batches"] or pending["touched"]:
            os.remove(path)
        return {
            "warehouse_rows": sum(result.rows.values()),
            "warehouse_deleted": result.deleted,
            "warehouse_duplicates_removed": result.duplicates_removed,
            "warehouse_skipped": int(result.skipped),
            "warehouse_caught_up_batches": len(catches_up),
        }

    @staticmethod
    def _frames_from_image(
        ctx: BatchContext, *, min_batch: int
    ) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
        """The batch's ranges and rows from its after-image and the stages' outputs (no Delta read).

        Only the metadata rows of earlier batches, and any table whose stage did not run, are read
        from Delta.
        """
        rows = ctx.require_rows()
        touched = to_pandas(ctx.touched_df.select("coin_id", "vs_currency", "from_ts"))
        outputs = dict(ctx.outputs)
        outputs[SILVER] = rows.outputs["silver_fresh"]
        frames = {}
        for target in TARGETS:
            computed = outputs.get(target.delta_name)
            if computed is not None:
                rows_df: DataFrame | None = computed.spark(ctx.spark)
            else:
                rows_df = _delta_rows(ctx, target, ctx.touched_df, min_batch, set(rows.currencies))
            if rows_df is not None:
                frames[target.name] = to_pandas(rows_df)
        return touched, frames

    @staticmethod
    def _frames_from_delta(
        ctx: BatchContext, pending: dict[str, Any], catches_up: tuple[int, ...]
    ) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
        """The ranges of this batch and the pending ones, with the current Delta rows (catch-up path)."""
        touched_df = ranges_df(ctx.spark, ctx.touched_df, pending).cache()
        try:
            touched = to_pandas(touched_df)
            frames = {}
            min_batch = min((*catches_up, ctx.batch_id)) - METADATA_LOOKBACK_BATCHES
            for target in TARGETS:
                rows_df = _delta_rows(ctx, target, touched_df, min_batch, set(touched["vs_currency"]))
                if rows_df is not None:
                    frames[target.name] = to_pandas(rows_df)
        finally:
            touched_df.unpersist()
        return touched, frames

    @staticmethod
    def _remember(path: str, pending: dict[str, Any], batch_id: int, touched: pd.DataFrame) -> None:
        """Add the batch and its ranges (already merged with the old pending ones) to the pending file."""
        record = {
            "batches": sorted({*map(int, pending["batches"]), batch_id}),
            "touched": [
                {"coin_id": c, "vs_currency": v, "from_ts": ts.isoformat(sep=" ")}
                for c, v, ts in touched[["coin_id", "vs_currency", "from_ts"]].itertuples(index=False)
            ],
        }
        _write_pending(path, record)
