"""Where a batch's kernels run: on the driver (collected once as Arrow) or on the executors.

The kernels (:mod:`app.batch.kernels`) are one implementation; this module only places them.

* **Driver**: when the batch's observations plus its working set hold at most
  ``kernel_driver_max_rows`` rows, both are collected once with ``toArrow()`` and the kernels run
  in this process. The outputs stay pandas; a write turns them into a local relation.
* **Executors**: above that, the same kernels run per hash bucket of the key
  (``cogroup(...).applyInArrow``, a few buckets per core, never one Python call per coin). Each
  output is a checkpointed frame; the daily metrics are added up per (vs_currency, day) by a
  second grouped call of the same kernel.

Both read more of silver when the plan says the batch reaches further back
(:class:`app.sinks.delta.working_set.WorkingSetReader`), and give the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa

from app.batch.frames import Rows, collect, struct_type, to_arrow
from app.batch.grouped import by_key_bucket, default_buckets
from app.batch.kernels.batch import (
    COUNTS,
    OUTPUTS,
    KernelParams,
    derive_rows,
    first_days,
    metric_rows,
    plan_batch,
    plan_counts,
)
from app.batch.kernels.scd2 import after_image, short_history_keys, touched_ranges
from app.sinks.delta.working_set import day_start
from app.tables import ANOMALIES_DDL, GOLD_METRICS_DDL, GOLD_OHLC_DDL, SILVER_DDL

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from app.sinks.delta.working_set import WorkingSetReader

TOUCHED_DDL = "coin_id STRING, vs_currency STRING, from_ts TIMESTAMP, to_ts TIMESTAMP"
SHORT_DDL = "coin_id STRING, vs_currency STRING, need_before TIMESTAMP"
PLAN_EXTRA_DDL = "_origin STRING, _outcome STRING, _action STRING"
ACTION_DDL = "_action STRING"
OUTPUT = "_output"
_PY_TS = "%Y-%m-%d %H:%M:%S.%f"


def output_schemas() -> dict[str, StructType]:
    """The Spark schema of each kernel output (a table's DDL, plus ``_action`` for a difference)."""
    return {
        "touched": struct_type(TOUCHED_DDL),
        "silver_staged": struct_type(f"{SILVER_DDL}, {ACTION_DDL}"),
        "silver_fresh": struct_type(SILVER_DDL),
        "anomalies_fresh": struct_type(ANOMALIES_DDL),
        "anomalies_staged": struct_type(f"{ANOMALIES_DDL}, {ACTION_DDL}"),
        "ohlc_fresh": struct_type(GOLD_OHLC_DDL),
        "ohlc_staged": struct_type(f"{GOLD_OHLC_DDL}, {ACTION_DDL}"),
        "metric_days": struct_type(f"{SILVER_DDL}, metric_date DATE"),
        "metrics_fresh": struct_type(GOLD_METRICS_DDL),
    }


@dataclass
class BatchRows:
    """Everything a batch writes, as computed by the kernels, and where they ran.

    Attributes:
        placement: ``driver`` or ``executors``.
        outputs: by name (:func:`output_schemas`): ``touched``, ``silver_staged`` (the silver MERGE
            source: plan rows with an action), ``silver_fresh``, ``anomalies_fresh``,
            ``anomalies_staged``, ``ohlc_fresh``, ``ohlc_staged``, ``metrics_fresh``.
        counts: observations kept/unchanged/duplicate; silver rows inserted/updated/deleted.
        first_days: per touched vs_currency its first touched day.
        earliest: the earliest ``from_ts`` of the touched keys (UTC text, ``TS_FORMAT``).
        details: the working set's shape (rows, bound, keys read further back).
    """

    placement: str
    outputs: dict[str, Rows]
    counts: dict[str, int]
    first_days: dict[str, str]
    earliest: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def currencies(self) -> list[str]:
        """The touched vs currencies, sorted."""
        return sorted(self.first_days)

    @property
    def silver_changes(self) -> int:
        """Silver rows the plan inserts, updates or deletes."""
        return self.counts["inserts"] + self.counts["updates"] + self.counts["deletes"]


def _ts_text(value: Any) -> str:
    return pd.Timestamp(value).strftime(_PY_TS)


def _short_list(short: pd.DataFrame) -> list[tuple[str, str, str]]:
    return [
        (str(c), str(v), _ts_text(n))
        for c, v, n in short[["coin_id", "vs_currency", "need_before"]].itertuples(index=False)
    ]


def run_on_driver(
    reader: WorkingSetReader, obs: pd.DataFrame, before: pd.DataFrame, params: KernelParams
) -> BatchRows:
    """The kernels on the driver over collected frames; reads more of silver when the plan needs it."""
    plan, touched = plan_batch(obs, before, batch_id=params.batch_id, max_collapsed=params.max_collapsed)
    earliest = _ts_text(touched["from_ts"].min())
    bound = reader.bound
    if day_start(earliest) < bound:
        # A touched key's version before the batch began on an earlier day: that day is touched.
        older = collect(reader.older(day_start(earliest)))
        assert older is not None
        before = pd.concat([before, older[before.columns]], ignore_index=True)
        bound = day_start(earliest)
    short = short_history_keys(before, touched, versions_needed=params.window + 1, bound=pd.Timestamp(bound))
    if len(short):
        missing = collect(reader.missing_history(_short_list(short), bound=bound))
        assert missing is not None
        before = pd.concat([before, missing[before.columns]], ignore_index=True)
    details = {"working_set_rows": len(before), "short_history_keys": len(short), "working_set_from": bound}
    return rows_on_driver(before, after_image(before, plan), touched, params, plan=plan, details=details)


def rows_on_driver(
    before: pd.DataFrame,
    after: pd.DataFrame,
    touched: pd.DataFrame,
    params: KernelParams,
    *,
    plan: pd.DataFrame | None = None,
    details: dict[str, Any] | None = None,
) -> BatchRows:
    """Every output of a batch from its two images, computed here (the driver placement's last step).

    Args:
        before: the working set before the batch.
        after: the same after it.
        touched: the touched ranges.
        params: the kernel parameters.
        plan: the SCD2 plan (the silver MERGE source and the counts); None: nothing to merge.
        details: the working set's shape, for the batch's metadata.
    """
    days = first_days(touched)
    rows = derive_rows(before, after, touched, first_days=days, params=params)
    schemas = output_schemas()
    staged = plan.loc[plan["_action"] != "none"] if plan is not None else before.iloc[0:0].assign(_action="")
    pdfs = {
        "touched": touched,
        "silver_staged": staged.reset_index(drop=True),
        **{k: v for k, v in rows.items() if k != "metric_days"},
        "metrics_fresh": metric_rows(rows["metric_days"], batch_id=params.batch_id),
    }
    return BatchRows(
        placement="driver",
        outputs={k: Rows(schemas[k], pdf=v) for k, v in pdfs.items()},
        counts=plan_counts(plan) if plan is not None else dict.fromkeys(COUNTS, 0),
        first_days=days,
        earliest=_ts_text(touched["from_ts"].min()),
        details=details or {},
    )


# ---------------------------------------------------------------- executor placement


def _wide_schema(schemas: dict[str, StructType]) -> StructType:
    """One schema holding every output's columns (same name, same type), plus ``_output``."""
    from pyspark.sql.types import StringType, StructField, StructType

    fields: dict[str, StructField] = {}
    for schema in schemas.values():
        for fld in schema.fields:
            seen = fields.get(fld.name)
            if seen is not None and seen.dataType != fld.dataType:
                raise TypeError(
                    f"column {fld.name} is {seen.dataType} in one output, {fld.dataType} elsewhere"
                )
            fields.setdefault(fld.name, StructField(fld.name, fld.dataType, True))
    return StructType([*fields.values(), StructField(OUTPUT, StringType(), False)])


def _stacked(frames: dict[str, pd.DataFrame], wide: StructType) -> pa.Table:
    """Kernel outputs stacked into one Arrow table of the wide schema, tagged by ``_output``.

    Each output is converted on its own (its columns keep their types) and the tables are
    concatenated: stacking the pandas frames first would turn a boolean or integer column that
    another output lacks into floats.
    """
    names = [f.name for f in wide.fields]
    parts = [
        to_arrow(pdf.assign(**{OUTPUT: name}).reindex(columns=names), wide) for name, pdf in frames.items()
    ]
    return pa.concat_tables(parts) if parts else to_arrow(pd.DataFrame(columns=names), wide)


def run_on_executors(
    spark: SparkSession,
    reader: WorkingSetReader,
    obs_df: DataFrame,
    before_df: DataFrame,
    params: KernelParams,
    *,
    buckets: int | None = None,
) -> BatchRows:
    """The same kernels on the executors, per hash bucket of the key; outputs are checkpointed frames.

    Three grouped passes: the SCD2 plan (and from it the touched ranges and the keys whose history
    is short, collected: one small row per key), then, over the working set with any older rows
    added, every per-key output at once, and the daily metrics per (vs_currency, day).
    """
    from pyspark.sql import functions as F

    from app.sinks.delta.io import stable_source

    buckets = buckets or default_buckets(obs_df)
    schemas = output_schemas()
    plan_schema = struct_type(f"{SILVER_DDL}, {PLAN_EXTRA_DDL}")
    batch_id, max_collapsed = params.batch_id, params.max_collapsed

    def plan_kernel(obs: pd.DataFrame, before: pd.DataFrame) -> pd.DataFrame:
        return plan_batch(obs, before, batch_id=batch_id, max_collapsed=max_collapsed)[0]

    plan_df = stable_source(by_key_bucket([obs_df, before_df], plan_kernel, plan_schema, buckets=buckets))
    touched = collect(by_key_bucket([plan_df], touched_ranges, schemas["touched"], buckets=buckets))
    assert touched is not None
    counts_row = plan_df.agg(
        *[
            F.count(F.when((F.col("_origin") == "batch") & (F.col("_outcome") == o), 1)).alias(o)
            for o in ("kept", "unchanged", "duplicate")
        ],
        *[F.count(F.when(F.col("_action") == a, 1)).alias(f"{a}s") for a in ("insert", "update", "delete")],
    ).first()
    assert counts_row is not None
    counts = {k: int(counts_row[k]) for k in COUNTS}
    earliest = _ts_text(touched["from_ts"].min())
    bound = reader.bound
    if day_start(earliest) < bound:
        before_df = before_df.unionByName(reader.older(day_start(earliest)))
        bound = day_start(earliest)
    versions_needed, short_bound = params.window + 1, pd.Timestamp(bound)

    def short_kernel(plan: pd.DataFrame, before: pd.DataFrame) -> pd.DataFrame:
        return short_history_keys(
            before, touched_ranges(plan), versions_needed=versions_needed, bound=short_bound
        )

    short = collect(
        by_key_bucket([plan_df, before_df], short_kernel, struct_type(SHORT_DDL), buckets=buckets)
    )
    assert short is not None
    if len(short):
        before_df = before_df.unionByName(reader.missing_history(_short_list(short), bound=bound))
    days = first_days(touched)
    wide = _wide_schema({k: schemas[k] for k in OUTPUTS})

    def derive_kernel(plan: pd.DataFrame, before: pd.DataFrame) -> pd.DataFrame:
        after = after_image(before, plan)
        return _stacked(
            derive_rows(before, after, touched_ranges(plan), first_days=days, params=params), wide
        )

    wide_df = stable_source(by_key_bucket([plan_df, before_df], derive_kernel, wide, buckets=buckets))

    def part(name: str) -> DataFrame:
        return wide_df.filter(F.col(OUTPUT) == name).select(*[f"`{f.name}`" for f in schemas[name].fields])

    def metrics_kernel(day_rows: pd.DataFrame) -> pd.DataFrame:
        return metric_rows(day_rows, batch_id=batch_id)

    metrics_df = stable_source(
        by_key_bucket(
            [part("metric_days")],
            metrics_kernel,
            schemas["metrics_fresh"],
            buckets=buckets,
            keys=("vs_currency", "metric_date"),
        )
    )
    outputs = {name: Rows(schemas[name], df=part(name)) for name in OUTPUTS if name != "metric_days"}
    outputs["touched"] = Rows(schemas["touched"], pdf=touched)
    staged_columns = [f"`{f.name}`" for f in schemas["silver_staged"].fields]
    outputs["silver_staged"] = Rows(
        schemas["silver_staged"], df=plan_df.filter(F.col("_action") != "none").select(*staged_columns)
    )
    outputs["metrics_fresh"] = Rows(schemas["metrics_fresh"], df=metrics_df)
    return BatchRows(
        placement="executors",
        outputs=outputs,
        counts=counts,
        first_days=days,
        earliest=earliest,
        details={"buckets": buckets, "short_history_keys": len(short), "working_set_from": bound},
    )
