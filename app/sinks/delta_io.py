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
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

TXN_APP_ID_CONF = "spark.databricks.delta.write.txnAppId"
TXN_VERSION_CONF = "spark.databricks.delta.write.txnVersion"
_TXN_LOCK = threading.RLock()


@contextmanager
def delta_txn(spark: SparkSession, app_id: str, batch_id: int) -> Iterator[None]:
    """Make the Delta MERGE/UPDATE/DELETE run inside the block idempotent for ``(app_id, batch_id)``.

    The settings are session-wide, so the block holds a lock and always clears them afterwards.
    Run exactly one Delta command per table inside it.
    """
    with _TXN_LOCK:
        spark.conf.set(TXN_APP_ID_CONF, app_id)
        spark.conf.set(TXN_VERSION_CONF, str(batch_id))
        try:
            yield
        finally:
            spark.conf.unset(TXN_APP_ID_CONF)
            spark.conf.unset(TXN_VERSION_CONF)


def append_idempotent(df: DataFrame, path: str, app_id: str, batch_id: int) -> None:
    """Append ``df`` to the Delta table at ``path`` once per ``(app_id, batch_id)``."""
    (
        df.write.format("delta")
        .mode("append")
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
