"""Spark <-> pandas at the edges of the kernels: collect once as Arrow, write from Arrow.

The kernels (:mod:`app.batch.kernels`) take and return pandas frames in one convention: tz-naive
``datetime64`` timestamps holding UTC, nullable ``Int64`` for BIGINT, ``datetime.date`` for DATE,
``collapsed_observations`` as lists of dicts. This module converts a Spark frame into that shape
(one ``toArrow()`` collect) and a kernel's frame back into a Spark frame with a table's exact
schema (``createDataFrame`` of an Arrow table: a local relation, no Python UDF, no JVM job until a
write reads it).

:class:`Rows` is what a write takes: the rows of one output, held as pandas on the driver
placement or as a Spark frame on the executor placement, convertible either way.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType


@functools.lru_cache(maxsize=64)
def struct_type(ddl: str) -> StructType:
    """The Spark schema of a DDL string (parsed by the active SparkContext, once per string)."""
    from pyspark.sql.types import StructType

    schema = StructType.fromDDL(ddl)
    assert isinstance(schema, StructType)
    return schema


def arrow_schema(schema: StructType) -> pa.Schema:
    """The Arrow schema Spark uses for ``schema`` (timestamps as ``timestamp[us, tz=UTC]``)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(schema, timezone="UTC", prefers_large_types=False)


def _naive_utc(values: pd.Series) -> pd.Series:
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").dt.tz_localize(None)
    return values


def _naive_ts(value: Any) -> Any:
    if value is None:
        return None
    ts = pd.Timestamp(value)
    if ts is pd.NaT:
        return None
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


def _observations(cell: Any) -> list[dict[str, Any]] | None:
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return None
    return [
        {
            "observed_at": _naive_ts(o["observed_at"]),
            "extracted_at": _naive_ts(o["extracted_at"]),
            "source_file": o["source_file"],
        }
        for o in cell
    ]


# Integer columns stay integers with NULLs (pandas would make them floats).
_INT_TYPES = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype()}


def from_arrow(table: pa.Table) -> pd.DataFrame:
    """A collected Arrow table as a kernel frame (see the module docstring for the convention)."""
    pdf = table.to_pandas(types_mapper=_INT_TYPES.get)
    for name, field_type in zip(table.column_names, table.schema.types, strict=True):
        if pa.types.is_timestamp(field_type):
            pdf[name] = _naive_utc(pdf[name])
        elif pa.types.is_list(field_type):
            pdf[name] = [_observations(c) for c in pdf[name]] if len(pdf) else pd.Series([], dtype=object)
    return pdf


def collect(df: DataFrame, *, limit: int | None = None) -> pd.DataFrame | None:
    """``df``'s rows as a kernel frame, in one Spark job; None when it holds more than ``limit`` rows."""
    if limit is not None:
        table = df.limit(limit + 1).toArrow()
        if table.num_rows > limit:
            return None
    else:
        table = df.toArrow()
    return from_arrow(table)


def _cell_to_arrow(value: Any) -> Any:
    if not isinstance(value, list | tuple | np.ndarray):
        return None  # None, or NaN where a frame was reindexed to a wider schema
    return [
        {
            "observed_at": o["observed_at"],
            "extracted_at": o["extracted_at"],
            "source_file": o["source_file"],
        }
        for o in value
    ]


def to_arrow(pdf: pd.DataFrame, schema: StructType) -> pa.Table:
    """A kernel frame as an Arrow table with exactly ``schema``'s columns and types.

    Raises:
        KeyError: a column of ``schema`` is missing from ``pdf``.
    """
    target = arrow_schema(schema)
    arrays = []
    for fld in target:
        col = pdf[fld.name]
        if pa.types.is_timestamp(fld.type):
            values = pd.to_datetime(col)
            values = values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert("UTC")
            arrays.append(pa.array(values, type=fld.type, from_pandas=True))
        elif pa.types.is_list(fld.type):
            arrays.append(pa.array([_cell_to_arrow(v) for v in col], type=fld.type, from_pandas=True))
        elif pa.types.is_integer(fld.type):
            numbers = pd.array(col, dtype="Int64")
            arrays.append(pa.array(numbers, type=pa.int64(), from_pandas=True).cast(fld.type))
        elif pa.types.is_boolean(fld.type):
            arrays.append(pa.array(pd.array(col, dtype="boolean"), type=fld.type, from_pandas=True))
        elif pa.types.is_date(fld.type):
            arrays.append(pa.array([None if pd.isna(v) else v for v in col], type=fld.type))
        else:
            arrays.append(pa.array(col.to_numpy(dtype=object), type=fld.type, from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=target)


def to_spark(spark: SparkSession, pdf: pd.DataFrame, schema: StructType) -> DataFrame:
    """A kernel frame as a Spark frame with ``schema`` (a local relation built from Arrow)."""
    df = spark.createDataFrame(to_arrow(pdf, schema))
    # Arrow says every field may be NULL; keep the target's names and types, in its order.
    return df.select(*[f"`{f.name}`" for f in schema.fields])


@dataclass
class Rows:
    """One output of a batch: pandas (driver placement) or a Spark frame (executor placement).

    Attributes:
        schema: the Spark schema of the rows (a table's DDL, plus ``_action`` for a difference).
        pdf: the rows as a kernel frame, when they were computed on the driver.
        df: the rows as a Spark frame, when they were computed on the executors (checkpointed).
    """

    schema: StructType
    pdf: pd.DataFrame | None = None
    df: DataFrame | None = None

    def spark(self, session: SparkSession) -> DataFrame:
        """The rows as a Spark frame (built once from Arrow on the driver placement)."""
        if self.df is None:
            assert self.pdf is not None
            self.df = to_spark(session, self.pdf, self.schema)
        return self.df

    def pandas(self) -> pd.DataFrame:
        """The rows as a kernel frame (collected once on the executor placement)."""
        if self.pdf is None:
            assert self.df is not None
            self.pdf = from_arrow(self.df.toArrow())
        return self.pdf

    def count(self) -> int:
        """How many rows (no Spark job on the driver placement)."""
        if self.pdf is not None:
            return len(self.pdf)
        assert self.df is not None
        return self.df.count()
