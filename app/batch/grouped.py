"""Run a kernel on the executors, one Python call per hash bucket of the key (never one per coin).

A kernel is a function of pandas frames (:mod:`app.batch.kernels`). :func:`by_key_bucket` hashes
the business key of each input frame into ``buckets`` buckets, groups (or co-groups) the frames by
bucket and calls the kernel once per bucket with that bucket's rows of each frame, converted with
the same Arrow adapters the driver placement uses (:mod:`app.batch.frames`). A kernel that is a
function of each key's rows alone gives the same rows however the keys are bucketed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

from app.batch.frames import from_arrow, to_arrow
from app.tables import SILVER_KEYS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.types import StructType

BUCKET = "_bucket"
# Buckets per executor core: enough to balance keys of unequal history.
BUCKETS_PER_CORE = 4


def default_buckets(df: DataFrame) -> int:
    """A few buckets per core of the cluster."""
    return max(2, df.sparkSession.sparkContext.defaultParallelism * BUCKETS_PER_CORE)


def with_bucket(df: DataFrame, buckets: int, keys: Sequence[str] = SILVER_KEYS) -> DataFrame:
    """``df`` with ``_bucket``: a hash of ``keys`` modulo ``buckets``."""
    from pyspark.sql import functions as F

    return df.withColumn(BUCKET, F.pmod(F.xxhash64(*keys), F.lit(buckets)).cast("int"))


def _frame(table: pa.Table) -> pd.DataFrame:
    return from_arrow(table.drop_columns([BUCKET]) if BUCKET in table.column_names else table)


def by_key_bucket(
    frames: Sequence[DataFrame],
    kernel: Callable[..., pd.DataFrame | pa.Table],
    schema: StructType,
    *,
    buckets: int | None = None,
    keys: Sequence[str] = SILVER_KEYS,
) -> DataFrame:
    """``kernel`` applied per hash bucket of ``keys`` to one or two frames, on the executors.

    Args:
        frames: one or two Spark frames holding ``keys``.
        kernel: ``kernel(pdf)`` or ``kernel(left_pdf, right_pdf)`` -> rows of ``schema`` (a pandas
            frame, or an Arrow table already of ``schema``); called only for buckets with rows
            in the first frame.
        schema: the Spark schema of the kernel's output.
        buckets: how many buckets (default: :func:`default_buckets`).
        keys: the columns hashed into the bucket.

    Returns:
        The kernel's rows of every bucket (a lazy frame: checkpoint it before using it twice).

    Raises:
        ValueError: not one or two frames.
    """
    if len(frames) not in (1, 2):
        raise ValueError(f"by_key_bucket takes one or two frames, got {len(frames)}")
    n = buckets or default_buckets(frames[0])
    columns = [f.name for f in schema.fields]

    def empty() -> pa.Table:
        return to_arrow(pd.DataFrame(columns=columns), schema)

    def arrow(out: pd.DataFrame | pa.Table) -> pa.Table:
        return out if isinstance(out, pa.Table) else to_arrow(out, schema)

    if len(frames) == 1:

        def one(table: pa.Table) -> pa.Table:
            pdf = _frame(table)
            return empty() if pdf.empty else arrow(kernel(pdf))

        return with_bucket(frames[0], n, keys).groupBy(BUCKET).applyInArrow(one, schema)

    def two(left: pa.Table, right: pa.Table) -> pa.Table:
        first = _frame(left)
        return empty() if first.empty else arrow(kernel(first, _frame(right)))

    left_df, right_df = (with_bucket(df, n, keys).groupBy(BUCKET) for df in frames)
    return left_df.cogroup(right_df).applyInArrow(two, schema)
