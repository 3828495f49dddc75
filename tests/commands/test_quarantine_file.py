"""``coinlake quarantine-file``: a bronze file set aside whole; the stream skips it; bronze unchanged.

And a failed batch names its bronze files and that command.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import functions as F

from app.batch.handler import BatchHandler
from app.config import load_settings
from app.paths import Layout
from app.sinks.delta.quarantine import OPERATOR_RULE, canonical_path, quarantine_file
from app.sources.bronze import read_bronze_files
from app.stream import QUARANTINE_FILE_COMMAND, failure_message
from app.tables import ensure_table
from tests.helpers import T0, coin_record, minutes, write_bronze_page


def test_quarantined_file_is_recorded_whole_and_skipped_by_the_stream(spark, tmp_path):
    layout = Layout.from_root(str(tmp_path))
    settings = load_settings(data_dir=str(tmp_path))
    poison = write_bronze_page(layout.bronze_root, T0, [coin_record("poison", 1.0, T0)])
    good = write_bronze_page(layout.bronze_root, T0 + minutes(1), [coin_record("good", 1.0, T0)])
    before = Path(canonical_path(poison)).read_bytes()
    table = layout.table("bronze_quarantine")
    ensure_table(spark, "bronze_quarantine", table)

    quarantine_file(spark, table, poison, reason="fails the batch every time")
    quarantine_file(spark, table, poison, reason="twice is harmless")

    rows = spark.read.format("delta").load(table).collect()
    assert len(rows) == 1
    assert rows[0]["failed_rules"] == [OPERATOR_RULE]
    assert rows[0]["errors"] == [f"{OPERATOR_RULE}: fails the batch every time"]
    assert rows[0]["raw_record"].encode("utf-8") == before
    assert Path(canonical_path(poison)).read_bytes() == before

    handler = BatchHandler(layout=layout, settings=settings, app_id="test-app")
    meta = handler.process(read_bronze_files(spark, [poison, good]), 0)
    assert (meta.files, meta.records_read, meta.quarantined) == (1, 1, 0)
    silver = spark.read.format("delta").load(layout.table("silver_crypto_clean"))
    assert [r["coin_id"] for r in silver.select("coin_id").collect()] == ["good"]
    assert spark.read.format("delta").load(table).filter(F.col("batch_id") == 0).count() == 0


def test_failed_batch_names_its_bronze_files(spark, tmp_path):
    layout = Layout.from_root(str(tmp_path))
    settings = load_settings(data_dir=str(tmp_path))
    page = write_bronze_page(layout.bronze_root, T0, [coin_record("btc", 1.0, T0)])

    def broken_stage(ctx):
        raise ValueError("a bug that this data triggers")

    handler = BatchHandler(layout=layout, settings=settings, app_id="a", stages=[broken_stage])
    with pytest.raises(ValueError):
        handler.process(read_bronze_files(spark, [page]), 0)
    assert [canonical_path(f) for f in handler.failed_files] == [canonical_path(page)]


def test_failure_message_names_files_and_the_command():
    msg = failure_message("ValueError: boom", [f"file:/b/{i}.json" for i in range(12)])
    assert "ValueError: boom" in msg
    assert "file:/b/0.json, file:/b/1.json" in msg and "and 2 more" in msg
    assert QUARANTINE_FILE_COMMAND in msg and "\n" not in msg
    assert failure_message("x", []).endswith(": x")
