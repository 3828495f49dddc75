"""``coinlake sql [--warehouse] [--format table|csv|json] "SELECT ..."``.

Without ``--warehouse`` every existing Delta table is a temporary view under its name and Spark
runs the query; with it, the configured warehouse (Snowflake or the emulator) runs it. Timestamps
are printed as ISO-8601 UTC (both stores hold UTC).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from app.commands.common import layout_of, settings_from_args, spark_from_settings
from app.errors import ConfigError, PipelineError
from app.sinks.warehouse.connector import connector_from_settings
from app.tables import TABLE_NAMES


class QueryError(PipelineError):
    """The query failed (syntax, unknown table or column)."""


def register(sub: Any) -> None:
    parser = sub.add_parser("sql", help="query the Delta tables by name, or the warehouse")
    parser.add_argument("query", help='e.g. "SELECT * FROM silver_crypto_clean WHERE is_current"')
    parser.add_argument("--warehouse", action="store_true", help="run on the warehouse instead of Delta")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.set_defaults(handler=_sql)


def json_value(value: Any) -> Any:
    """A JSON-ready value: timestamps ISO-8601 UTC with ``Z``, dates ISO, NaN as null."""
    if value is None:
        return None
    if hasattr(value, "to_pydatetime"):  # pandas Timestamp
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat() + "Z"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return json_value(value.item())
    return value


def format_rows(names: list[str], rows: list[tuple[Any, ...]], fmt: str) -> str:
    """Render a result as ``table``, ``csv`` or ``json`` (an array of row objects)."""
    values = [[json_value(v) for v in row] for row in rows]
    if fmt == "json":
        return json.dumps([dict(zip(names, row, strict=True)) for row in values], indent=2, default=str)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([["" if v is None else v for v in row] for row in values])
        return out.getvalue().rstrip("\n")
    text = [["NULL" if v is None else str(v) for v in row] for row in values]
    widths = [max([len(n), *(len(r[i]) for r in text)]) for i, n in enumerate(names)]
    lines = [" | ".join(n.ljust(w) for n, w in zip(names, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in text]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)


def _sql(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    layout = layout_of(settings)
    if args.warehouse:
        # A snapshot of the emulator, so a query works while the stream writes to it.
        connector = connector_from_settings(settings, layout, read_only=True)
        if connector is None:
            raise ConfigError("COINLAKE_WAREHOUSE=none: no warehouse to query")
        names, rows = connector.loader().query(args.query)
    else:
        names, rows = _spark_query(settings, layout, args.query)
    print(format_rows(names, rows, args.format))
    return 0


def _spark_query(settings: Any, layout: Any, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    from delta.tables import DeltaTable

    spark = spark_from_settings(settings, app_name="coinlake-sql")
    # PySpark logs the analysis error it raises; the CLI reports it once, in one line.
    logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)
    for name in TABLE_NAMES:
        path = layout.table(name)
        if DeltaTable.isDeltaTable(spark, path):
            spark.read.format("delta").load(path).createOrReplaceTempView(name)
    try:
        return collect_utc(spark.sql(query))
    except Exception as exc:
        if type(exc).__module__.startswith("pyspark"):
            raise QueryError(str(exc).splitlines()[0]) from exc
        raise


def collect_utc(df: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows; timestamps as UTC-naive datetimes whatever the local zone, maps as JSON."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    cols, is_ts = [], []
    for i, fld in enumerate(df.schema.fields):
        col = F.col(f"`{fld.name}`")
        ts = isinstance(fld.dataType, T.TimestampType)
        if ts:
            col = F.unix_micros(col)
        elif isinstance(fld.dataType, T.MapType | T.ArrayType | T.StructType):
            col = F.to_json(col)
        cols.append(col.alias(f"c{i}"))
        is_ts.append(ts)
    epoch = datetime(1970, 1, 1)
    rows = [
        tuple(
            epoch + timedelta(microseconds=v) if t and v is not None else v
            for v, t in zip(row, is_ts, strict=True)
        )
        for row in df.select(*cols).collect()
    ]
    return list(df.columns), rows
