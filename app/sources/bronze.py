"""The bronze read side: explicit schemas of the page envelope and of a record, and the stream reader.

Each bronze file is one JSON page (docs/DESIGN.md, section 1). The stream reads every file as one
whole text value (``text`` with ``wholetext``) and parses it afterwards with :data:`ENVELOPE_DDL`
through ``from_json``: a file that is not JSON, is truncated or has a malformed envelope keeps its
raw text and lands in quarantine with a reason instead of being dropped by a JSON reader.

Records are kept as raw JSON strings (``data ARRAY<STRING>``: Spark stores an object element as
its JSON text) and parsed with :data:`RAW_RECORD_DDL`, where every field is a string, so ints vs
floats, numbers sent as strings, nested values where a scalar is expected and extra fields never
fail a parse; :mod:`app.quality.parsing` casts them with ``try_cast`` and the expectations flag what
did not cast.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# Everything but ``data`` and ``request`` is read as text and typed later, so a quirky envelope
# (a status sent as a string, a page number as a float) still parses. A value of the wrong shape
# (``data`` not an array) fills ``_corrupt_record`` with the whole text.
ENVELOPE_DDL = """
source STRING, endpoint STRING, request STRUCT<vs_currency: STRING, page: STRING>,
fetched_at STRING, http_status STRING, run_id STRING, page STRING, data ARRAY<STRING>,
_corrupt_record STRING
"""

# Fields of one /coins/markets record, all as raw text; unknown fields are ignored.
RAW_RECORD_FIELDS = (
    "id",
    "symbol",
    "name",
    "current_price",
    "market_cap",
    "market_cap_rank",
    "total_volume",
    "high_24h",
    "low_24h",
    "price_change_24h",
    "price_change_percentage_24h",
    "circulating_supply",
    "total_supply",
    "max_supply",
    "ath",
    "ath_date",
    "atl",
    "atl_date",
    "last_updated",
)
RAW_RECORD_DDL = ", ".join(f"{name} STRING" for name in RAW_RECORD_FIELDS)

# Columns of the streaming DataFrame handed to foreachBatch.
BRONZE_TEXT_COLUMNS = ("value", "source_file")


def bronze_glob(bronze_root: str, *, lookback_days: int = 0, today: date | None = None) -> str:
    """The path pattern the stream lists: every date folder, or only the recent ones.

    Listing cost grows with the folders matched, so ``lookback_days > 0`` restricts the pattern to
    the ``dt=`` folders from ``today - lookback_days`` to ``today + 1`` (tomorrow covers a stream
    running across midnight UTC; restart it daily when a lookback is set).

    Args:
        bronze_root: ``Layout.bronze_root``.
        lookback_days: days back to list; 0 lists all folders.
        today: the reference UTC date (default: today).

    Returns:
        A Hadoop glob such as ``<root>/dt=*/*.json`` or ``<root>/dt={2026-01-01,2026-01-02}/*.json``.
    """
    root = bronze_root.rstrip("/")
    if lookback_days <= 0:
        return f"{root}/dt=*/*.json"
    ref = today or datetime.now(UTC).date()
    days = [(ref + timedelta(days=offset)).isoformat() for offset in range(-lookback_days, 2)]
    return f"{root}/dt={{{','.join(days)}}}/*.json"


def read_bronze_stream(
    spark: SparkSession,
    bronze_root: str,
    *,
    max_files_per_trigger: int = 100,
    lookback_days: int = 0,
) -> DataFrame:
    """A streaming DataFrame of bronze files: ``value`` (the whole file text) and ``source_file``.

    Dot-prefixed temporary files (``.<name>.json.tmp``) are hidden from Spark's file source and do
    not match ``*.json`` either, so a file is read only after its atomic rename.

    Args:
        spark: the session.
        bronze_root: ``Layout.bronze_root``.
        max_files_per_trigger: bronze files per micro-batch.
        lookback_days: see :func:`bronze_glob`.

    Returns:
        The streaming DataFrame with columns :data:`BRONZE_TEXT_COLUMNS`.
    """
    return (
        spark.readStream.format("text")
        .option("wholetext", True)
        .option("maxFilesPerTrigger", max_files_per_trigger)
        .load(bronze_glob(bronze_root, lookback_days=lookback_days))
        .select(F.col("value"), F.col("_metadata.file_path").alias("source_file"))
    )


def read_bronze_files(spark: SparkSession, paths: list[str]) -> DataFrame:
    """A static DataFrame of the given bronze files, shaped like the stream (for tests and tools)."""
    return (
        spark.read.format("text")
        .option("wholetext", True)
        .load(paths)
        .select(F.col("value"), F.col("_metadata.file_path").alias("source_file"))
    )
