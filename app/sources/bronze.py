"""The bronze read side: explicit schemas of the page envelope and of a record, and the stream reader.

Each bronze file is one JSON page (docs/DESIGN.md, section 1). The stream reads every file as one
whole text value (the listing source of :mod:`app.sources.bronze_source` by default, or Spark's
``text`` source with ``wholetext``) and parses it afterwards with :data:`ENVELOPE_DDL`
through ``from_json``: a file that is not JSON, is truncated or has a malformed envelope keeps its
raw text and lands in quarantine with a reason instead of being dropped by a JSON reader.

The listing source reads zero-byte files as ``""`` itself. Spark's file scan skips them whatever the format (``text`` and ``binaryFile`` alike: they
are listed and counted in a batch, never read), so :func:`with_empty_files` adds an empty-text row
for each of them; the parser names it ``file is empty`` and it is quarantined like any other
unusable file.

Records are kept as raw JSON strings (``data ARRAY<STRING>``: Spark stores an object element as
its JSON text) and parsed with :data:`RAW_RECORD_DDL`, where every field is a string, so ints vs
floats, numbers sent as strings, nested values where a scalar is expected and extra fields never
fail a parse; :mod:`app.quality.parsing` casts them with ``try_cast`` and the expectations flag what
did not cast.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pyspark.sql import functions as F

from app.errors import ConfigError
from app.logs import log_event
from app.tables import COINGECKO_FIELDS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

logger = logging.getLogger(__name__)

# Everything but ``data`` and ``request`` is read as text and typed later, so a quirky envelope
# (a status sent as a string, a page number as a float) still parses. A value of the wrong shape
# (``data`` not an array) fills ``_corrupt_record`` with the whole text.
ENVELOPE_DDL = """
source STRING, endpoint STRING, request STRUCT<vs_currency: STRING, page: STRING>,
fetched_at STRING, http_status STRING, run_id STRING, page STRING, data ARRAY<STRING>,
_corrupt_record STRING
"""

# Fields of one /coins/markets record, all as raw text; unknown fields are ignored.
RAW_RECORD_FIELDS = tuple(f.source for f in COINGECKO_FIELDS)
RAW_RECORD_DDL = ", ".join(f"{name} STRING" for name in RAW_RECORD_FIELDS)

# Columns of the streaming DataFrame handed to foreachBatch.
BRONZE_TEXT_COLUMNS = ("value", "source_file")


def bronze_glob(
    bronze_root: str,
    *,
    lookback_days: int = 0,
    today: date | None = None,
    days: Sequence[str] | None = None,
) -> str:
    """The path pattern the stream lists: every date folder, only the recent ones, or given ones.

    Listing cost grows with the folders matched, so ``lookback_days > 0`` restricts the pattern to
    the ``dt=`` folders from ``today - lookback_days`` to ``today + 1`` (tomorrow covers a stream
    running across midnight UTC; restart it daily when a lookback is set).

    Args:
        bronze_root: ``Layout.bronze_root``.
        lookback_days: days back to list; 0 lists all folders.
        today: the reference UTC date (default: today).
        days: exactly these ``YYYY-MM-DD`` folders (a replay from a day, :func:`bronze_days_from`);
            overrides ``lookback_days``.

    Returns:
        A Hadoop glob such as ``<root>/dt=*/*.json`` or ``<root>/dt={2026-01-01,2026-01-02}/*.json``.

    Raises:
        ValueError: ``days`` is given but empty (the glob would match nothing).
    """
    root = bronze_root.rstrip("/")
    if days is not None:
        if not days:
            raise ValueError("bronze_glob: days is empty")
        return f"{root}/dt={{{','.join(days)}}}/*.json"
    if lookback_days <= 0:
        return f"{root}/dt=*/*.json"
    ref = today or datetime.now(UTC).date()
    days = [(ref + timedelta(days=offset)).isoformat() for offset in range(-lookback_days, 2)]
    return f"{root}/dt={{{','.join(days)}}}/*.json"


def bronze_days_from(spark: SparkSession, bronze_root: str, from_day: date) -> list[str]:
    """The ``dt=YYYY-MM-DD`` folders of bronze on or after ``from_day``, as sorted day strings.

    Listed through Hadoop's file system (any scheme), one level deep: the folders, not their files.

    Returns:
        The days (``YYYY-MM-DD``); empty when bronze or every folder from that day is missing.
    """
    path, fs = _hadoop_fs(spark, bronze_root)
    if not fs.exists(path):
        return []
    days = []
    for status in fs.listStatus(path):
        name = str(status.getPath().getName())
        if status.isDirectory() and name.startswith("dt="):
            try:
                day = date.fromisoformat(name[len("dt=") :])
            except ValueError:
                continue  # not a date folder of ours
            if day >= from_day:
                days.append(day.isoformat())
    return sorted(days)


BronzeSourceKind = Literal["listing", "files"]


def read_bronze_stream(
    spark: SparkSession,
    bronze_root: str,
    *,
    max_files_per_trigger: int = 100,
    lookback_days: int = 0,
    days: Sequence[str] | None = None,
    source: BronzeSourceKind = "listing",
    late_minutes: float = 60.0,
    seed_file: str | None = None,
    today: date | None = None,
) -> DataFrame:
    """A streaming DataFrame of bronze files: ``value`` (the whole file text) and ``source_file``.

    ``source="listing"`` (the default) is :mod:`app.sources.bronze_source`: a trigger lists only
    what can have landed since the last one and the checkpoint state is bounded. ``"files"`` is
    Spark's file source over :func:`bronze_glob` (every folder listed on every trigger, one
    checkpoint log entry per file read forever); keep it for storage that plain Python cannot list.

    Dot-prefixed temporary files (``.<name>.json.tmp``) are ignored by both, so a file is read only
    after its atomic rename.

    Args:
        spark: the session.
        bronze_root: ``Layout.bronze_root``.
        max_files_per_trigger: bronze files per micro-batch.
        lookback_days: ``files``: see :func:`bronze_glob`; ``listing``: where a new checkpoint
            starts (that many days before ``today``; 0: all of bronze).
        days: only these ``dt=`` folders (``files``), or from the first of them on (``listing``;
            a replay from a day).
        source: ``listing`` or ``files``.
        late_minutes: ``listing``: the admission window of late files
            (:func:`app.sources.bronze_offsets.window_start`).
        seed_file: ``listing``: the first offset of a checkpoint migrated from the file source.
        today: the reference UTC date of ``lookback_days`` (default: today).

    Returns:
        The streaming DataFrame with columns :data:`BRONZE_TEXT_COLUMNS`.

    Raises:
        ConfigError: ``listing`` over a root that plain Python file I/O cannot reach.
    """
    if source == "files":
        return (
            spark.readStream.format("text")
            .option("wholetext", True)
            .option("maxFilesPerTrigger", max_files_per_trigger)
            .load(bronze_glob(bronze_root, lookback_days=lookback_days, days=days))
            .select(F.col("value"), F.col("_metadata.file_path").alias("source_file"))
        )
    from app.sources.bronze_source import FORMAT, BronzeDataSource, is_listable

    if not is_listable(bronze_root):
        raise ConfigError(
            f"COINLAKE_BRONZE_SOURCE=listing reads bronze with plain file I/O, which cannot reach "
            f"{bronze_root}; use a local, dbfs:/ or /Volumes root, or set COINLAKE_BRONZE_SOURCE=files"
        )
    spark.dataSource.register(BronzeDataSource)
    reader = (
        spark.readStream.format(FORMAT)
        .option("path", bronze_root)
        .option("maxFilesPerTrigger", max_files_per_trigger)
        .option("lateMinutes", late_minutes)
        .option("startKey", start_key(lookback_days=lookback_days, days=days, today=today))
    )
    if seed_file:
        reader = reader.option("seedFile", seed_file)
    return reader.load()


def start_key(*, lookback_days: int = 0, days: Sequence[str] | None = None, today: date | None = None) -> str:
    """Where a new checkpoint of the listing source starts: the first of ``days``, the lookback's
    first day, or ``""`` (all of bronze)."""
    from app.sources.bronze_offsets import day_key

    if days:
        return day_key(date.fromisoformat(min(days)))
    if lookback_days > 0:
        return day_key((today or datetime.now(UTC).date()) - timedelta(days=lookback_days))
    return ""


def read_bronze_files(spark: SparkSession, paths: list[str]) -> DataFrame:
    """A static DataFrame of the given bronze files, shaped like the stream (for tests and tools)."""
    return (
        spark.read.format("text")
        .option("wholetext", True)
        .load(paths)
        .select(F.col("value"), F.col("_metadata.file_path").alias("source_file"))
    )


# Set by Spark on the thread that runs a micro-batch (foreachBatch included).
_BATCH_ID_PROPERTY = "streaming.sql.batchId"
_QUERY_ID_PROPERTY = "sql.streaming.queryId"
# The bronze stream has one source, the file source; its log lists the files of every batch.
_SOURCE_LOG = "sources/0"
_warned_unavailable = False


def with_empty_files(df: DataFrame, *, text_col: str = "value") -> DataFrame:
    """``df`` plus an empty-text row (``""``, ``source_file``) for each zero-byte file of the batch.

    Spark's file scan drops zero-byte files before reading them, so a micro-batch that lists one
    has no row for it: without this it would be neither processed nor quarantined. The files of
    the batch are ``df.inputFiles()`` for a static read (:func:`read_bronze_files`), or, inside a
    micro-batch of :func:`read_bronze_stream`, the batch's entries in the file source's checkpoint
    log (the same list Spark read, so a re-run batch finds the same files). Each is checked with a
    ``getFileStatus`` (at most ``max_files_per_trigger`` of them; no file is read). When nothing is
    empty, ``df`` is returned unchanged.

    Where Spark's JVM is not reachable from Python (Spark Connect, restricted clusters) the check
    is skipped with one warning, and zero-byte files stay unread as before.

    Args:
        df: :data:`BRONZE_TEXT_COLUMNS` rows: a static read of bronze files or a micro-batch.
        text_col: the column holding the file text.

    Returns:
        ``df``, or ``df`` with one ``(text_col="", source_file)`` row per zero-byte file.
    """
    global _warned_unavailable
    spark = df.sparkSession
    try:
        empty = [path for path, size in _file_sizes(spark, _scanned_files(df)) if size == 0]
    except Exception as exc:  # noqa: BLE001 - a missing JVM bridge must not fail the batch
        if not _warned_unavailable:
            _warned_unavailable = True
            log_event(
                logger,
                "bronze.empty_file_check_unavailable",
                level=logging.WARNING,
                error=f"{type(exc).__name__}: {str(exc)[:300]}",
            )
        return df
    if not empty:
        return df
    log_event(logger, "bronze.empty_files", files=len(empty))
    rows = spark.createDataFrame([("", path) for path in empty], f"{text_col} STRING, source_file STRING")
    return df.unionByName(rows, allowMissingColumns=True)


def batch_input_files(df: DataFrame) -> list[str]:
    """The bronze files ``df`` was read from, zero-byte ones included.

    A static read lists them itself; a micro-batch of the file source finds them in its log, one of
    the listing source (:mod:`app.sources.bronze_source`) in the batch's end offset.

    Returns:
        File URIs; empty for a DataFrame that is neither a file read nor a bronze micro-batch.
    """
    files = _scanned_files(df)
    if files:
        return files
    located = _running_batch(df)
    if located is None:
        return []
    return offset_log_files(df.sparkSession, *located)


def _scanned_files(df: DataFrame) -> list[str]:
    """The files a file scan behind ``df`` read or skipped (a static read, or the file source's batch).

    Empty for a batch of the listing source: it reads zero-byte files itself, so
    :func:`with_empty_files` has nothing to add.
    """
    files = df.inputFiles()
    if files:
        return list(files)
    located = _running_batch(df)
    if located is None:
        return []
    return source_log_files(df.sparkSession, *located)


def _running_batch(df: DataFrame) -> tuple[str, int] | None:
    """``(checkpoint, batch_id)`` of the micro-batch running on this thread, None outside one."""
    sc = df.sparkSession.sparkContext
    batch_id, query_id = sc.getLocalProperty(_BATCH_ID_PROPERTY), sc.getLocalProperty(_QUERY_ID_PROPERTY)
    if batch_id is None or query_id is None:
        return None
    return _checkpoint_root(df.sparkSession, query_id), int(batch_id)


def offset_log_files(spark: SparkSession, checkpoint: str, batch_id: int) -> list[str]:
    """The files of batch ``batch_id`` of the listing source, from ``<checkpoint>/offsets/<batch>``.

    The offset log file is a ``v1`` line, the batch's metadata, then one line per source (this
    query has one) holding the source's end offset.

    Returns:
        The batch's file URIs; empty when the batch is not logged or another source wrote it.
    """
    from app.sources.bronze_source import batch_offset_files

    text = _read_text(spark, f"{checkpoint.rstrip('/')}/offsets/{batch_id}")
    if text is None:
        return []
    lines = text.splitlines()
    if len(lines) < 3:
        return []
    try:
        return batch_offset_files(json.loads(lines[2]))
    except ValueError:
        return []  # the file source's {"logOffset": N}


def source_log_files(spark: SparkSession, checkpoint: str, batch_id: int) -> list[str]:
    """The files of batch ``batch_id`` in the file source's log under ``checkpoint``.

    The log (``<checkpoint>/sources/0/<batch>``, every tenth one ``<batch>.compact`` holding all
    earlier entries too) is a ``v1`` line followed by one JSON entry per file:
    ``{"path": ..., "timestamp": ..., "batchId": ...}``.

    Returns:
        The batch's file URIs; empty when the log has no file for the batch.
    """
    for name in (str(batch_id), f"{batch_id}.compact"):
        text = _read_text(spark, f"{checkpoint.rstrip('/')}/{_SOURCE_LOG}/{name}")
        if text is None:
            continue
        lines = text.splitlines()
        if not lines or not lines[0].startswith("v"):
            raise ValueError(f"unexpected file source log format in {name}: {lines[:1]}")
        entries = [json.loads(line) for line in lines[1:] if line.strip()]
        return [e["path"] for e in entries if int(e["batchId"]) == batch_id]
    return []


def _checkpoint_root(spark: SparkSession, query_id: str) -> str:
    """The checkpoint folder of the running query ``query_id`` (through the JVM).

    A micro-batch runs in a clone of the session that started the query, whose query manager is
    empty, so the session's own manager is asked first and then the default session's.
    """
    candidates = [spark._jsparkSession]
    jvm: Any = spark.sparkContext._jvm  # py4j view: Optional in the stubs, set on a live session
    default = jvm.org.apache.spark.sql.SparkSession.getDefaultSession()
    if default.isDefined():
        candidates.append(default.get())
    for jsession in candidates:
        jquery = jsession.streams().get(query_id)
        if jquery is not None:
            return str(jquery.streamingQuery().resolvedCheckpointRoot())
    raise LookupError(f"streaming query {query_id} is not active")


def _hadoop_fs(spark: SparkSession, uri: str):  # noqa: ANN202 - py4j objects
    jvm: Any = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(jvm.java.net.URI(uri))
    return path, path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def _read_text(spark: SparkSession, uri: str) -> str | None:
    """A small file's UTF-8 text through Hadoop's file system (any scheme), None if it does not exist."""
    path, fs = _hadoop_fs(spark, uri)
    if not fs.exists(path):
        return None
    stream = fs.open(path)
    try:
        jvm: Any = spark.sparkContext._jvm
        return str(jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
    finally:
        stream.close()


def _file_sizes(spark: SparkSession, uris: list[str]) -> list[tuple[str, int]]:
    """``(uri, size)`` per file, the URI in the form ``_metadata.file_path`` has (``file:/x``)."""
    out = []
    for uri in uris:
        path, fs = _hadoop_fs(spark, uri)
        out.append((_as_file_path(uri), int(fs.getFileStatus(path).getLen())))
    return out


def _as_file_path(uri: str) -> str:
    """``file:///x`` (checkpoint log, ``inputFiles()``) as ``file:/x`` (``_metadata.file_path``)."""
    parts = urlsplit(uri)
    return uri if parts.netloc or not parts.scheme else f"{parts.scheme}:{parts.path}"
