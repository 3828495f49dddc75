"""Thin Delta I/O helpers shared by the writers: idempotent commits keyed to the batch id.

Delta records, per table, the highest ``(txnAppId, txnVersion)`` it has committed and skips a write
whose version is not newer. So every table gets **at most one commit per micro-batch**, made inside
:func:`delta_txn` (MERGE/UPDATE/DELETE) or with :func:`append_idempotent` (appends); a re-run of an
already committed batch then changes nothing.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

TXN_APP_ID_CONF = "spark.databricks.delta.write.txnAppId"
TXN_VERSION_CONF = "spark.databricks.delta.write.txnVersion"
# Held while a shared session carries transaction settings (:func:`delta_txn`); a writer of its
# own on the shared session (the progress recorder) holds it so its append never runs inside
# another writer's idempotent transaction.
SESSION_TXN_LOCK = threading.RLock()
# Sessions made by :func:`private_session`: one thread each, so their settings need no lock.
_PRIVATE_ATTR = "_coinlake_private"


def private_session(spark: SparkSession) -> SparkSession:
    """A session of its own for one writer thread: same SparkContext, cache and SQL settings.

    The transaction settings of :func:`delta_txn` are per session, so writers that run at the same
    time each need one. It is a clone of ``spark`` (its SQL settings, e.g. the session time zone),
    falling back to ``newSession()`` where the JVM session cannot be cloned.
    """
    from pyspark.sql import SparkSession as PySession

    try:
        clone = PySession(spark.sparkContext, spark._jsparkSession.cloneSession())  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - not a classic JVM session: a new one with default settings
        clone = spark.newSession()
    setattr(clone, _PRIVATE_ATTR, True)
    return clone


USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"


def batch_marker(app_id: str, batch_id: int) -> str:
    """The ``userMetadata`` of a batch's commits: lets a re-run find what it already committed."""
    return f"{app_id}/batch={batch_id}"


def marked_commit(spark: SparkSession, path: str, marker: str, *, depth: int = 20) -> int | None:
    """The version of the commit carrying ``marker`` among the table's last ``depth`` commits, or None."""
    from delta.tables import DeltaTable

    rows = DeltaTable.forPath(spark, path).history(depth).select("version", "userMetadata").collect()
    for row in rows:
        if row["userMetadata"] == marker:
            return int(row["version"])
    return None


MATERIALIZE_SOURCE_CONF = "spark.databricks.delta.merge.materializeSource"


def stable_source(df: DataFrame) -> DataFrame:
    """``df`` computed once and held by the executors, as a MERGE source with a trivial plan.

    A batch's MERGE sources are differences of two derived images: plans with dozens of windows,
    unions and joins. Delta analyses and optimises its source plan several times per MERGE (the
    materialisation, the touched-file join, the write join), which took most of a gold MERGE's
    time (measured: docs/BENCHMARKS.md); a local checkpoint's plan is one scan.
    """
    return df.localCheckpoint(eager=True)


@contextmanager
def source_not_rematerialized(spark: SparkSession) -> Iterator[None]:
    """Let a MERGE whose source is a :func:`stable_source` skip Delta's own copy of it.

    Delta materialises every source that is not a plain Delta scan, because a recomputed source
    could differ between its two passes. A local checkpoint cannot: it is computed already. Only
    on a ``local`` master, where an executor (and so a checkpoint block) cannot be lost on its own;
    on a cluster Delta keeps its copy, whose lost blocks it knows how to recover from.
    """
    if not spark.sparkContext.master.startswith("local"):
        yield
        return
    spark.conf.set(MATERIALIZE_SOURCE_CONF, "none")
    try:
        yield
    finally:
        spark.conf.unset(MATERIALIZE_SOURCE_CONF)


@contextmanager
def delta_txn(spark: SparkSession, app_id: str, batch_id: int, *, marked: bool = False) -> Iterator[None]:
    """Make the Delta MERGE/UPDATE/DELETE run inside the block idempotent for ``(app_id, batch_id)``.

    The settings are session-wide: on a shared session the block holds a lock (a
    :func:`private_session` belongs to one thread and needs none), and it always clears them
    afterwards. Run exactly one Delta command per table inside it. With ``marked`` the commit also
    carries :func:`batch_marker` as its ``userMetadata``.
    """
    lock = nullcontext() if getattr(spark, _PRIVATE_ATTR, False) else SESSION_TXN_LOCK
    with lock:
        spark.conf.set(TXN_APP_ID_CONF, app_id)
        spark.conf.set(TXN_VERSION_CONF, str(batch_id))
        if marked:
            spark.conf.set(USER_METADATA_CONF, batch_marker(app_id, batch_id))
        try:
            yield
        finally:
            spark.conf.unset(TXN_APP_ID_CONF)
            spark.conf.unset(TXN_VERSION_CONF)
            if marked:
                spark.conf.unset(USER_METADATA_CONF)


def append_idempotent(df: DataFrame, path: str, app_id: str, batch_id: int, *, marked: bool = False) -> None:
    """Append ``df`` to the Delta table at ``path`` once per ``(app_id, batch_id)``.

    With ``marked`` the commit carries :func:`batch_marker` as its ``userMetadata``.
    """
    writer = df.write.format("delta").mode("append").option("txnAppId", app_id).option("txnVersion", batch_id)
    if marked:
        writer = writer.option("userMetadata", batch_marker(app_id, batch_id))
    writer.save(path)


def replace_range_idempotent(df: DataFrame, path: str, predicate: str, *, app_id: str, batch_id: int) -> None:
    """Make the rows of ``path`` matching ``predicate`` be exactly ``df``, once per ``(app_id, batch_id)``.

    One ``replaceWhere`` overwrite: Delta removes the range's rows and writes ``df`` in the same
    commit, and checks that every row of ``df`` lies in the range. A re-run of a committed batch is
    skipped by its transaction id, like :func:`append_idempotent`.
    """
    (
        df.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", predicate)
        .option("txnAppId", app_id)
        .option("txnVersion", batch_id)
        .save(path)
    )


def read_checkpoint_query_id(spark: SparkSession, checkpoint_path: str) -> str:
    """The streaming query id stored in ``<checkpoint>/metadata`` (stable across restarts).

    Read through Hadoop's FileSystem so it works on ``dbfs:/`` and object stores too.
    """
    jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
    hconf = spark.sparkContext._jsc.hadoopConfiguration()  # type: ignore[attr-defined]
    path = jvm.org.apache.hadoop.fs.Path(checkpoint_path.rstrip("/") + "/metadata")
    fs = path.getFileSystem(hconf)
    stream = fs.open(path)
    try:
        reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(stream, "UTF-8"))
        first_line = reader.readLine()
    finally:
        stream.close()
    return str(json.loads(first_line)["id"])


def app_id_for(query_id: str) -> str:
    """The Delta/warehouse app id of a streaming query: new checkpoint, new id."""
    return f"coinlake-{query_id}"
