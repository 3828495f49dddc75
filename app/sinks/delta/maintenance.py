"""Delta maintenance as settings: log and file retention, checkpoint interval, and ``coinlake maintain``.

The three table properties come from the settings (``COINLAKE_DELTA_LOG_RETENTION_DAYS``,
``COINLAKE_DELTA_DELETED_FILE_RETENTION_HOURS``, ``COINLAKE_DELTA_CHECKPOINT_INTERVAL``). They reach
the tables through Delta's session defaults (``spark.databricks.delta.properties.defaults.*``, set
by :func:`maintenance_conf` when a command builds its session): a new table is created with them,
and :func:`app.tables.ensure_table` gives an existing table the ones it lacks when the stream
starts (:func:`session_maintenance_properties`).

:func:`maintain` is what ``coinlake maintain`` runs: ``OPTIMIZE`` (the stream's own compaction,
:mod:`app.sinks.delta.compaction`), then ``VACUUM`` with each table's
``deletedFileRetentionDuration``. VACUUM deletes only files no version within the retention
references, so it is safe beside a running stream. OPTIMIZE changes no row, but a batch that
commits after it and had read a file it compacted fails with Delta's ``Concurrent*`` error and
re-runs on restart (exactly once, just later): next to a running stream use ``--no-optimize``
(the stream compacts its tables itself every ``COINLAKE_OPTIMIZE_EVERY_BATCHES`` batches).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from app.logs import log_event

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from app.config import Settings

logger = logging.getLogger(__name__)

DEFAULTS_PREFIX = "spark.databricks.delta.properties.defaults."
# The table properties maintenance sets (``delta.<name>``); each has a session default.
MAINTENANCE_KEYS = ("logRetentionDuration", "deletedFileRetentionDuration", "checkpointInterval")


def maintenance_properties(settings: Settings) -> dict[str, str]:
    """The Delta table properties of the settings: ``delta.logRetentionDuration`` and the others."""
    return {
        "delta.logRetentionDuration": f"interval {settings.delta_log_retention_days} days",
        "delta.deletedFileRetentionDuration": f"interval {settings.delta_deleted_file_retention_hours} hours",
        "delta.checkpointInterval": str(settings.delta_checkpoint_interval),
    }


def maintenance_conf(settings: Settings) -> dict[str, str]:
    """Spark settings making :func:`maintenance_properties` the defaults of tables created in the session."""
    return {
        DEFAULTS_PREFIX + key.removeprefix("delta."): value
        for key, value in maintenance_properties(settings).items()
    }


def session_maintenance_properties(spark: SparkSession) -> dict[str, str]:
    """The maintenance properties the session's Delta defaults ask for (empty when none is set)."""
    out = {}
    for key in MAINTENANCE_KEYS:
        value = spark.conf.get(DEFAULTS_PREFIX + key, None)
        if value:
            out[f"delta.{key}"] = value
    return out


def vacuum_table(spark: SparkSession, path: str) -> int:
    """VACUUM the Delta table at ``path`` with its own ``deletedFileRetentionDuration``; files deleted.

    The count is that of a ``DRY RUN`` just before (VACUUM itself only prints it).
    """
    location = path.replace("`", "``")
    due = spark.sql(f"VACUUM delta.`{location}` DRY RUN").count()
    spark.sql(f"VACUUM delta.`{location}`").collect()
    return int(due)


def maintain(spark: SparkSession, paths: Iterable[str], *, optimize: bool = True) -> dict[str, Any]:
    """OPTIMIZE (unless ``optimize`` is False), then VACUUM each existing Delta table of ``paths``.

    Returns:
        Per table path: ``files_removed``/``files_added`` by OPTIMIZE, ``vacuumed`` (files deleted)
        and ``error`` when a step failed (the other tables are still maintained).
    """
    from delta.tables import DeltaTable

    from app.sinks.delta.compaction import compact_table

    report: dict[str, Any] = {}
    for path in paths:
        if not DeltaTable.isDeltaTable(spark, path):
            continue
        started = time.monotonic()
        entry: dict[str, Any] = {}
        try:
            if optimize:
                entry.update(compact_table(spark, path))
            entry["vacuumed"] = vacuum_table(spark, path)
        except Exception as exc:  # noqa: BLE001 - reported per table; the next table still runs
            entry["error"] = (
                f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:500]
            )
        entry["seconds"] = round(time.monotonic() - started, 3)
        log_event(logger, "maintain.table", table=path, **entry)
        report[path] = entry
    return report
