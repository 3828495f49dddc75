"""Parse bronze pages into typed records: one row per API record, plus one row per unusable file.

The chain is ``files_df.transform(with_envelope).transform(explode_records).transform(with_typed_columns)``.
Its output has the columns of ``app.tables.RECORD_DDL`` plus:

- ``record_index``: position of the record in the page's ``data`` (NULL for a file-level row),
- ``raw_record``: the record's original JSON text (the whole file text for a file-level row),
- ``parse_error``: NULL, or why the file or record could not be read (the ``unparseable`` rule),
- ``_raw``: the record's fields as raw strings, used by the type-check rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.sql import Column
from pyspark.sql import functions as F

from app.sources.bronze import ENVELOPE_DDL, RAW_RECORD_DDL, with_empty_files
from app.tables import COINGECKO_FIELDS, FieldSpec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

# Raw field -> typed column, per kind of conversion (from the field registry).
NUMERIC_FIELDS = {f.source: f.column for f in COINGECKO_FIELDS if f.kind == "double"}
TIMESTAMP_FIELDS = {f.source: f.column for f in COINGECKO_FIELDS if f.kind == "timestamp"}
INT_FIELDS = {f.source: f.column for f in COINGECKO_FIELDS if f.kind == "int"}
# Raw text kept for a file-level quarantine row is capped: an HTML error page can be large.
MAX_RAW_FILE_CHARS = 20000
# The narrowest time range of the sinks: pandas' nanosecond timestamps (1677-09-21 to 2262-04-11),
# which the warehouse load goes through; Spark and Snowflake hold years 1 to 9999. A time outside
# it becomes NULL here (and an expectation says so) instead of failing the load.
MIN_SINK_TIME = "1677-09-22T00:00:00Z"
MAX_SINK_TIME = "2262-04-11T00:00:00Z"
# INT bounds for market_cap_rank (Spark INT, Snowflake NUMBER(38,0)).
INT_MIN, INT_MAX = -(2**31), 2**31 - 1


def parse_timestamp(col: Column) -> Column:
    """ISO-8601 text (``2026-11-25T19:48:06.123Z``, with or without ms, ``Z`` or an offset) to a UTC timestamp; NULL if unparseable.

    Any year Spark holds (1 to 9999) comes back; :func:`to_sink_timestamp` bounds it.
    """
    return F.trim(col).try_cast("timestamp")


def parse_double(col: Column) -> Column:
    """A JSON number (int or float, or a numeric string) to DOUBLE; NULL if not numeric.

    NaN and ±Infinity (JSON literals or strings) come back as such; :func:`to_finite` drops them.
    """
    return F.trim(col).try_cast("double")


def finite_or_null(col: Column) -> Column:
    """``col`` when it is a finite number, else NULL (NaN and ±Infinity become NULL)."""
    return F.when(~F.isnan(col) & (F.abs(col) != F.lit(float("inf"))), col)


def to_finite(col: Column) -> Column:
    """Raw text to a finite DOUBLE: NULL when not numeric, NaN or ±Infinity (never raises).

    −0.0 becomes 0.0, so silver stores one zero.
    """
    value = finite_or_null(parse_double(col))
    return F.when(value == 0, F.lit(0.0)).otherwise(value)


def to_int(col: Column, *, lo: int = INT_MIN, hi: int = INT_MAX) -> Column:
    """Raw text to INT: NULL when not numeric, NaN, infinite or outside ``[lo, hi]``.

    A plain ``.cast("int")`` of a double raises ``CAST_OVERFLOW`` under ANSI mode (3e9, NaN); the
    bounds check comes first, so the cast can never overflow. Fractions are truncated.
    """
    value = parse_double(col)
    # NaN compares greater than every number in Spark, so it fails ``<= hi``.
    return F.when((value >= F.lit(float(lo))) & (value <= F.lit(float(hi))), value.cast("int"))


def to_sink_timestamp(col: Column, *, earliest: str = MIN_SINK_TIME, latest: str = MAX_SINK_TIME) -> Column:
    """Raw ISO text to a timestamp every sink can hold: NULL when unparseable or outside the range."""
    ts = parse_timestamp(col)
    lo, hi = F.lit(earliest).cast("timestamp"), F.lit(latest).cast("timestamp")
    return F.when((ts >= lo) & (ts < hi), ts)


def to_text(col: Column, *, max_chars: int) -> Column:
    """Raw text, trimmed; NULL when longer than ``max_chars`` or a JSON object/array (not text)."""
    text = F.trim(col)
    nested = F.ltrim(col).startswith("{") | F.ltrim(col).startswith("[")
    return F.when(~nested & (F.length(text) <= max_chars), text)


def typed_field(field: FieldSpec, raw: Column) -> Column:
    """The raw text of ``field`` converted to its silver column; total (NULL, never an error).

    Text of a field that quarantines unfit values is kept trimmed (its rules quarantine the
    record); other text becomes NULL when too long or not text.
    """
    if field.kind == "double":
        value = to_finite(raw)
    elif field.kind == "int":
        value = to_int(raw)
    elif field.kind == "timestamp":
        value = to_sink_timestamp(raw)
    elif field.quarantine_unrepresentable or field.max_chars is None:
        value = F.trim(raw)
    else:
        value = to_text(raw, max_chars=field.max_chars)
    return value.alias(field.column)


def with_envelope(df: DataFrame, *, text_col: str = "value") -> DataFrame:
    """Parse each file's text into the ``envelope`` struct and name what is wrong with the file.

    Args:
        df: one row per bronze file with its whole text in ``text_col`` and ``source_file``.
        text_col: the column holding the file text.

    Returns:
        ``df`` plus ``envelope`` (:data:`app.sources.bronze.ENVELOPE_DDL`) and ``file_error``
        (NULL for a usable page).
    """
    # A UTF-8 byte order mark is not part of the JSON text (RFC 8259 lets parsers ignore it).
    text = F.regexp_replace(F.col(text_col), "^\ufeff", "")
    env = F.col("envelope")
    # json_object_keys is strict JSON and refuses NaN/Infinity literals, which from_json (like
    # Python's json) accepts: a page is "not an object" only when neither parser could read it,
    # so one NaN field quarantines its record, not the whole page.
    not_object = ~F.ltrim(text).startswith("{") | (
        F.json_object_keys(text).isNull() & env["_corrupt_record"].isNotNull()
    )
    file_error = (
        F.when(text.isNull() | (F.trim(text) == ""), F.lit("file is empty"))
        .when(
            F.coalesce(not_object, F.lit(True)),
            F.lit("file is not a JSON object (not JSON, truncated or HTML)"),
        )
        .when(env["_corrupt_record"].isNotNull(), F.lit("page envelope has fields of the wrong type"))
        .when(env["data"].isNull(), F.lit("page has no 'data' array"))
        .when(
            env["http_status"].isNotNull() & (env["http_status"] != "200"),
            F.concat(F.lit("page has http_status "), env["http_status"]),
        )
    )
    return df.withColumn("envelope", F.from_json(text, ENVELOPE_DDL)).withColumn("file_error", file_error)


def explode_records(df: DataFrame, *, text_col: str = "value") -> DataFrame:
    """One row per element of a usable page's ``data``; one row per unusable file.

    Args:
        df: the output of :func:`with_envelope`.
        text_col: the column holding the file text.

    Returns:
        ``source_file, record_index, raw_record, file_error, fetched_at_text, vs_currency`` rows.
    """
    env = F.col("envelope")
    records = F.when(
        F.col("file_error").isNull(),
        F.transform(env["data"], lambda x, i: F.struct(i.alias("i"), x.alias("raw"))),
    ).otherwise(
        F.array(
            F.struct(
                F.lit(None).cast("int").alias("i"),
                F.substring(F.col(text_col), 1, MAX_RAW_FILE_CHARS).alias("raw"),
            )
        )
    )
    return df.select(
        "source_file",
        "file_error",
        env["fetched_at"].alias("fetched_at_text"),
        F.lower(F.trim(env["request"]["vs_currency"])).alias("vs_currency"),
        F.explode(records).alias("rec"),
    ).select(
        "source_file",
        F.col("rec.i").alias("record_index"),
        F.col("rec.raw").alias("raw_record"),
        "file_error",
        "fetched_at_text",
        "vs_currency",
    )


def with_typed_columns(df: DataFrame) -> DataFrame:
    """Type each record as ``RECORD_DDL`` and set ``parse_error`` for unreadable files and records.

    Args:
        df: the output of :func:`explode_records`.

    Returns:
        The typed records (see the module docstring for the extra columns).
    """
    raw = F.col("_raw")
    is_object = F.ltrim(F.col("raw_record")).startswith("{")
    parse_error = F.coalesce(
        F.col("file_error"),
        F.when(~F.coalesce(is_object, F.lit(False)), F.lit("record is not a JSON object")),
    )
    # Every conversion is total: a value that does not fit becomes NULL, and the expectations
    # (app.quality.expectations) compare with the raw text to name what happened.
    typed = [typed_field(field, raw[field.source]) for field in COINGECKO_FIELDS]
    typed.insert(1, F.col("vs_currency"))  # the key's second part comes from the page's request
    typed += [to_sink_timestamp(F.col("fetched_at_text")).alias("extracted_at"), F.col("source_file")]
    return df.withColumn(
        "_raw",
        F.when(is_object & F.col("file_error").isNull(), F.from_json(F.col("raw_record"), RAW_RECORD_DDL)),
    ).select(
        *typed,
        "record_index",
        "raw_record",
        parse_error.alias("parse_error"),
        "_raw",
        F.col("fetched_at_text").alias("_fetched_at_text"),
    )


def parse_bronze(df: DataFrame, *, text_col: str = "value") -> DataFrame:
    """The whole parse step: files (``value``, ``source_file``) to typed records (see module docstring).

    Zero-byte files, which Spark's scan skips, come back as empty-text rows first
    (:func:`app.sources.bronze.with_empty_files`), so they are quarantined as ``file is empty``.
    """
    return (
        df.transform(with_empty_files, text_col=text_col)
        .transform(with_envelope, text_col=text_col)
        .transform(explode_records, text_col=text_col)
        .transform(with_typed_columns)
    )
