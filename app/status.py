"""Where everything stands for one data root: bronze, stream lag, tables, ingest, warehouse.

:func:`collect_status` returns a plain JSON-able dict; :func:`format_status` renders it for people.
Files are read with plain Python (``paths.local_path`` maps ``dbfs:/`` to the ``/dbfs`` mount).
Spark is started only when at least one Delta table exists, and only for row counts and the
latest timestamps, so ``coinlake status`` on an empty or missing root is instant.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from app.lag import LagLimits, bronze_newest_by_currency, compute_lag, parse_time, silver_newest_by_currency
from app.paths import Layout, local_path
from app.tables import METADATA, QUARANTINE, SILVER, TABLE_NAMES, TABLES

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

INGEST_LOG_NAME = "ingest_runs.jsonl"
# Ingest log fields that say when a cycle happened, in order of preference.
_TIME_FIELDS = ("finished_at", "ended_at", "ts", "started_at", "fetched_at")
_ERROR_STATUSES = {"error", "failed", "failure", "partial"}

LedgerReader = Callable[[], list[dict[str, Any]]]


def collect_status(
    layout: Layout,
    *,
    spark: SparkSession | None = None,
    spark_factory: Callable[[], SparkSession] | None = None,
    ledger_reader: LedgerReader | None = None,
    warehouse_reason: str = "no warehouse reader configured",
    lag_limits: LagLimits | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Gather the state of a data root.

    Args:
        layout: the storage layout of the data root.
        spark: a session to count Delta rows with; if None, ``spark_factory`` is called only when
            a Delta table exists. Without both, tables are listed without counts.
        spark_factory: builds a session lazily.
        ledger_reader: returns the warehouse ``LOAD_LEDGER`` position as rows with ``app_id``,
            ``batch_id`` (the highest loaded) and ``loaded_at``; None means unavailable.
        warehouse_reason: why the warehouse is unavailable when ``ledger_reader`` is None.
        lag_limits: the thresholds of the ``lag`` section (default: :class:`LagLimits` defaults).
        now: the time the ingest lag is measured against (default: the current time).

    Returns:
        A JSON-able dict with the keys ``data_root``, ``generated_at``, ``bronze``, ``stream``,
        ``lag``, ``batches``, ``tables``, ``quarantine_by_rule``, ``data_quality``, ``ingest``,
        ``last_error`` and ``warehouse``; ``lag["exceeded"]`` lists the limits exceeded (see
        :mod:`app.lag`).
    """
    now = now or datetime.now(UTC)
    bronze = bronze_inventory(layout)
    stream = stream_progress(layout, bronze["paths"])
    existing = [name for name in TABLE_NAMES if _is_delta_table(layout.table(name))]
    if existing and spark is None and spark_factory is not None:
        spark = spark_factory()
    tables = table_stats(spark, layout, existing) if spark is not None else _tables_without_spark(existing)
    batches: dict[str, Any] = {"last_batch_id": None, "last_batch_at": None, "last_status": None}
    last_error: dict[str, Any] | None = None
    if spark is not None and METADATA in existing:
        batches, last_error = metadata_summary(spark, layout)
    quality: dict[str, Any] = {"last_batch": None, "last_24h": None}
    if spark is not None and METADATA in existing:
        quality = quality_summary(spark, layout, now=datetime.now(UTC))
    quarantine: dict[str, int] = {}
    if spark is not None and QUARANTINE in existing:
        quarantine = quarantine_by_rule(spark, layout)
    # No silver table at all is "nothing processed"; a table without Spark is "not measured".
    silver_newest: dict[str, datetime] | None = {}
    if SILVER in existing:
        silver_newest = silver_newest_by_currency(spark, layout) if spark is not None else None
    ingest = ingest_summary(layout)
    lag = compute_lag(
        stream,
        bronze_newest_by_currency(bronze["paths"]),
        silver_newest,
        parse_time(record_time(ingest["last"])),
        now=now,
        limits=lag_limits or LagLimits(),
    )
    status = {
        "data_root": layout.root,
        "generated_at": now.isoformat(timespec="seconds"),
        "bronze": {k: v for k, v in bronze.items() if k != "paths"},
        "stream": stream,
        "lag": lag,
        "batches": batches,
        "tables": tables,
        "quarantine_by_rule": quarantine,
        "data_quality": quality,
        "ingest": ingest,
        "last_error": last_error,
        "warehouse": warehouse_summary(ledger_reader, stream, warehouse_reason),
    }
    return status


def bronze_inventory(layout: Layout) -> dict[str, Any]:
    """Bronze files and bytes per ``dt=`` day (temporary dot-files are not counted).

    Returns:
        ``{"days": [{"day", "files", "bytes"}], "files", "bytes", "paths"}``; ``paths`` is the set
        of absolute local file paths, used for the lag and dropped from the public status.
    """
    root = local_path(layout.bronze_root)
    days: list[dict[str, Any]] = []
    paths: set[str] = set()
    if os.path.isdir(root):
        for entry in sorted(os.listdir(root)):
            folder = os.path.join(root, entry)
            if not entry.startswith("dt=") or not os.path.isdir(folder):
                continue
            files = 0
            size = 0
            for name in os.listdir(folder):
                if name.startswith((".", "_")) or not name.endswith(".json"):
                    continue
                full = os.path.join(folder, name)
                files += 1
                size += os.path.getsize(full)
                paths.add(os.path.abspath(full))
            days.append({"day": entry[3:], "files": files, "bytes": size})
    return {
        "days": days,
        "files": sum(d["files"] for d in days),
        "bytes": sum(d["bytes"] for d in days),
        "paths": paths,
    }


def _uri_to_local(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return os.path.abspath(unquote(parsed.path))
    if parsed.scheme == "dbfs":
        return local_path("dbfs:" + unquote(parsed.path))
    return uri


def _numbered_files(folder: str) -> list[tuple[int, str]]:
    """``(batch, path)`` of a checkpoint log folder's ``N`` and ``N.compact`` files."""
    out: list[tuple[int, str]] = []
    if not os.path.isdir(folder):
        return out
    for name in os.listdir(folder):
        stem = name[: -len(".compact")] if name.endswith(".compact") else name
        if stem.isdigit():
            out.append((int(stem), os.path.join(folder, name)))
    return sorted(out)


def stream_progress(layout: Layout, bronze_paths: set[str]) -> dict[str, Any]:
    """Compare bronze files with the files the stream's file source has logged.

    The file source logs, per batch, the files it planned in ``<checkpoint>/sources/0/<batch>``
    (``v1`` then one JSON object per line with ``path`` and ``batchId``; every 10th batch a
    ``.compact`` file holds all entries so far). A file counts as processed when its batch is
    committed (``<checkpoint>/commits/<batch>``), as in flight when planned but not committed.

    Returns:
        checkpoint path, whether it exists, query id, last committed batch, and file counts
        ``processed_files``, ``in_flight_files`` and ``pending_files`` (not planned yet: the lag).
    """
    ckpt = local_path(layout.checkpoint())
    committed = [b for b, _ in _numbered_files(os.path.join(ckpt, "commits"))]
    last_commit = committed[-1] if committed else None
    if not os.path.isdir(os.path.join(ckpt, "sources", "0")):
        listing = _listing_progress(ckpt, last_commit, bronze_paths)
        if listing is not None:
            return {
                "checkpoint": layout.checkpoint(),
                "exists": True,
                "query_id": _query_id(ckpt),
                "last_committed_batch": last_commit,
                **listing,
            }
    planned: dict[str, int] = {}
    for _, path in _numbered_files(os.path.join(ckpt, "sources", "0")):
        try:
            with open(path, encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except OSError:
            continue
        for line in lines[1:]:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            planned[_uri_to_local(str(entry.get("path", "")))] = int(entry.get("batchId", -1))
    processed = {p for p, b in planned.items() if last_commit is not None and b <= last_commit}
    in_flight = set(planned) - processed
    return {
        "checkpoint": layout.checkpoint(),
        "exists": os.path.isdir(ckpt),
        "query_id": _query_id(ckpt),
        "last_committed_batch": last_commit,
        "processed_files": len(processed),
        "in_flight_files": len(in_flight),
        "pending_files": len(bronze_paths - set(planned)),
    }


def _listing_progress(ckpt: str, last_commit: int | None, bronze_paths: set[str]) -> dict[str, Any] | None:
    """File counts of a checkpoint of the listing source (:mod:`app.sources.bronze_source`).

    A file is processed when the committed offset no longer counts it unread, in flight when a
    logged but uncommitted batch holds it, pending otherwise. None when the offset log holds no
    offset of that source.
    """
    from app.sources.bronze_offsets import BronzeOffset, file_key

    offsets = _numbered_files(os.path.join(ckpt, "offsets"))
    if not offsets:
        return None
    parsed: dict[int, BronzeOffset] = {}
    for batch, path in offsets:
        try:
            with open(path, encoding="utf-8") as fh:
                lines = fh.read().splitlines()
            parsed[batch] = BronzeOffset.from_json(json.loads(lines[2]))
        except (OSError, ValueError, IndexError, KeyError):
            continue
    if not parsed:
        return None
    done = parsed.get(last_commit) if last_commit is not None else None
    in_flight_keys = {k for b, o in parsed.items() if last_commit is None or b > last_commit for k in o.batch}
    counts = {"processed_files": 0, "in_flight_files": 0, "pending_files": 0}
    for path in bronze_paths:
        folder, name = os.path.split(path)
        key = file_key(os.path.basename(folder).removeprefix("dt="), name)
        if key in in_flight_keys:
            counts["in_flight_files"] += 1
        elif done is not None and not done.is_unread(key):
            counts["processed_files"] += 1
        else:
            counts["pending_files"] += 1
    return counts


def _query_id(ckpt: str) -> str | None:
    try:
        with open(os.path.join(ckpt, "metadata"), encoding="utf-8") as fh:
            return str(json.loads(fh.readline())["id"])
    except (OSError, ValueError, KeyError):
        return None


def _is_delta_table(path: str) -> bool:
    return os.path.isdir(os.path.join(local_path(path), "_delta_log"))


def _tables_without_spark(existing: list[str]) -> dict[str, Any]:
    return {
        name: {
            "exists": name in existing,
            "rows": None,
            "latest": None,
            "latest_column": TABLES[name].time_column,
        }
        for name in TABLE_NAMES
    }


def table_stats(spark: SparkSession, layout: Layout, existing: list[str]) -> dict[str, Any]:
    """Row count and latest timestamp of each existing table (one small aggregate each)."""
    from pyspark.sql import functions as F

    out = _tables_without_spark(existing)
    for name in existing:
        col = TABLES[name].time_column
        row = (
            spark.read.format("delta")
            .load(layout.table(name))
            .agg(F.count(F.lit(1)).alias("rows"), F.max(col).alias("latest"))
            .first()
        )
        out[name]["rows"] = int(row["rows"]) if row else 0
        out[name]["latest"] = _iso(row["latest"]) if row else None
    return out


def quarantine_by_rule(spark: SparkSession, layout: Layout) -> dict[str, int]:
    """Quarantined records per failed rule (a record failing two rules counts under both)."""
    from pyspark.sql import functions as F

    rows = (
        spark.read.format("delta")
        .load(layout.table(QUARANTINE))
        .select(F.explode("failed_rules").alias("rule"))
        .groupBy("rule")
        .count()
        .collect()
    )
    return {r["rule"]: int(r["count"]) for r in sorted(rows, key=lambda r: (-r["count"], r["rule"]))}


def metadata_summary(spark: SparkSession, layout: Layout) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The last micro-batch and the last recorded error from ``pipeline_metadata``.

    Progress rows (``kind='progress'``, written by :mod:`app.observability`) and ingest rows are
    not batches of the handler; they are left out of "last batch" but not out of "last error".
    """
    from pyspark.sql import functions as F

    meta_df = spark.read.format("delta").load(layout.table(METADATA))
    when = F.coalesce("finished_at", "started_at")
    batch_row = (
        meta_df.where(F.col("batch_id").isNotNull())
        .where(~F.lower(F.coalesce("kind", F.lit(""))).isin("progress", "ingest", "ingest_cycle"))
        .orderBy(when.desc_nulls_last(), F.col("batch_id").desc())
        .select("batch_id", "kind", "status", when.alias("at"), "records_read", "run_id")
        .first()
    )
    batches: dict[str, Any] = {"last_batch_id": None, "last_batch_at": None, "last_status": None}
    # The bronze source's share of the last recorded trigger: Spark's latestOffset (the listing).
    trigger_row = (
        meta_df.where(F.lower(F.coalesce("kind", F.lit(""))) == "progress")
        .where(F.col("durations_ms").getItem("latestOffset").isNotNull())
        .orderBy(when.desc_nulls_last())
        .select(F.col("durations_ms").getItem("latestOffset").alias("ms"), when.alias("at"))
        .first()
    )
    source: dict[str, Any] = {"last_source_ms": None, "last_source_at": None}
    if trigger_row is not None:
        source = {"last_source_ms": int(trigger_row["ms"]), "last_source_at": _iso(trigger_row["at"])}
    if batch_row is not None:
        batches = {
            "last_batch_id": batch_row["batch_id"],
            "last_batch_at": _iso(batch_row["at"]),
            "last_status": batch_row["status"],
            "last_kind": batch_row["kind"],
            "last_records_read": batch_row["records_read"],
            "last_run_id": batch_row["run_id"],
        }
    batches.update(source)
    err_row = (
        meta_df.where(
            F.col("error_message").isNotNull()
            | F.lower(F.coalesce("status", F.lit(""))).isin(*sorted(_ERROR_STATUSES))
        )
        .orderBy(when.desc_nulls_last())
        .select("kind", "batch_id", "status", "error_message", when.alias("at"))
        .first()
    )
    last_error = None
    if err_row is not None:
        last_error = {
            "source": METADATA,
            "kind": err_row["kind"],
            "batch_id": err_row["batch_id"],
            "status": err_row["status"],
            "at": _iso(err_row["at"]),
            "message": err_row["error_message"],
        }
    return batches, last_error


def quality_summary(spark: SparkSession, layout: Layout, *, now: datetime) -> dict[str, Any]:
    """The data-quality score of the last scored batch and of the successful batches of the last 24 h.

    Only handler batches that recorded a score count (rows of older releases have no
    ``dq_passed``). Over 24 h the score is the records that passed every expectation over all
    records, and each rule's score is ``1 - failures / records`` (its failures are its counts in
    ``quarantined_by_rule`` and ``warned_by_rule``).

    Args:
        spark: the session.
        layout: the storage layout.
        now: the end of the 24 h window (UTC).

    Returns:
        ``{"last_batch": {batch_id, at, status, records, passed, score, by_rule} | None,
        "last_24h": {since, batches, records, passed, score, by_rule, failures_by_rule}}``; a score
        is None where there were no records.
    """
    from pyspark.sql import functions as F

    meta_df = spark.read.format("delta").load(layout.table(METADATA))
    if "dq_passed" not in meta_df.columns:  # written by a release without scores
        return {"last_batch": None, "last_24h": None}
    kind = F.lower(F.coalesce("kind", F.lit("")))
    scored_df = meta_df.where(
        F.col("dq_passed").isNotNull() & ~kind.isin("progress", "ingest", "ingest_cycle")
    )
    when = F.coalesce("finished_at", "started_at")
    last = (
        scored_df.orderBy(when.desc_nulls_last(), F.col("batch_id").desc())
        .select(
            "batch_id",
            "status",
            when.alias("at"),
            "records_read",
            "dq_passed",
            "dq_score",
            "dq_score_by_rule",
        )
        .first()
    )
    last_batch = None
    if last is not None:
        last_batch = {
            "batch_id": last["batch_id"],
            "at": _iso(last["at"]),
            "status": last["status"],
            "records": last["records_read"],
            "passed": last["dq_passed"],
            "score": last["dq_score"],
            "by_rule": dict(sorted((last["dq_score_by_rule"] or {}).items(), key=lambda kv: (kv[1], kv[0]))),
        }
    since = now.astimezone(UTC).replace(tzinfo=None) - timedelta(hours=24)
    day_df = scored_df.where(
        (F.col("status") == "ok") & (when >= F.lit(since.isoformat(sep=" ")).cast("timestamp"))
    )
    totals = day_df.agg(
        F.count(F.lit(1)).alias("batches"),
        F.sum("records_read").alias("records"),
        F.sum("dq_passed").alias("passed"),
    ).first()
    failures_rows = (
        day_df.select(
            F.explode(
                F.map_concat(
                    F.coalesce("quarantined_by_rule", F.create_map().cast("map<string,bigint>")),
                    F.coalesce("warned_by_rule", F.create_map().cast("map<string,bigint>")),
                )
            ).alias("rule", "n")
        )
        .groupBy("rule")
        .agg(F.sum("n").alias("n"))
        .collect()
    )
    records = int(totals["records"] or 0) if totals else 0
    passed = int(totals["passed"] or 0) if totals else 0
    failures = {r["rule"]: int(r["n"]) for r in sorted(failures_rows, key=lambda r: (-r["n"], r["rule"]))}
    return {
        "last_batch": last_batch,
        "last_24h": {
            "since": _iso(since),
            "batches": int(totals["batches"]) if totals else 0,
            "records": records,
            "passed": passed,
            "score": passed / records if records else None,
            "by_rule": {rule: 1.0 - n / records for rule, n in failures.items()} if records else {},
            "failures_by_rule": failures,
        },
    }


def ingest_summary(layout: Layout) -> dict[str, Any]:
    """The last ingest cycle and the last failed one, from ``<root>/logs/ingest_runs.jsonl``.

    The log is written by the ingester, one JSON object per cycle; unknown fields are passed
    through, unreadable lines are counted and skipped.
    """
    path = os.path.join(local_path(layout.logs_dir), INGEST_LOG_NAME)
    out: dict[str, Any] = {"log": path, "cycles": 0, "unreadable_lines": 0, "last": None, "last_error": None}
    if not os.path.isfile(path):
        return out
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                out["unreadable_lines"] += 1
                continue
            if not isinstance(record, dict):
                out["unreadable_lines"] += 1
                continue
            out["cycles"] += 1
            out["last"] = record
            if _is_error_record(record):
                out["last_error"] = record
    return out


def _is_error_record(record: dict[str, Any]) -> bool:
    if str(record.get("status", "")).lower() in _ERROR_STATUSES:
        return True
    if record.get("error") or record.get("error_message"):
        return True
    failed = record.get("pages_failed", record.get("failed_pages"))
    return bool(failed) and not isinstance(failed, str)


def record_time(record: dict[str, Any] | None) -> str | None:
    """The time an ingest log record refers to, by the first time-like field it has."""
    if not record:
        return None
    for key in _TIME_FIELDS:
        if record.get(key):
            return str(record[key])
    return None


def warehouse_summary(
    ledger_reader: LedgerReader | None, stream: dict[str, Any], reason: str
) -> dict[str, Any]:
    """The warehouse ledger's position compared with the stream's last committed batch.

    Never raises: a missing module, an unreachable warehouse or an unexpected ledger gives
    ``{"available": False, "reason": ...}``.
    """
    if ledger_reader is None:
        return {"available": False, "reason": reason}
    try:
        rows = ledger_reader()
    except Exception as exc:  # any warehouse failure is a status line, not a crash
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return {"available": False, "reason": f"ledger unreadable: {first}"}
    app_id = f"coinlake-{stream['query_id']}" if stream.get("query_id") else None
    mine = [r for r in rows if app_id is None or r.get("app_id") == app_id]
    last = max((int(r["batch_id"]) for r in mine if r.get("batch_id") is not None), default=None)
    lake = stream.get("last_committed_batch")
    return {
        "available": True,
        "app_id": app_id,
        "ledger_last_batch": last,
        "ledger_loaded_at": _iso(max((r["loaded_at"] for r in mine if r.get("loaded_at")), default=None)),
        "lakehouse_last_batch": lake,
        "batches_behind": None if lake is None else lake - (last if last is not None else -1),
        "apps_in_ledger": sorted({str(r.get("app_id")) for r in rows}),
    }


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return str(value)
