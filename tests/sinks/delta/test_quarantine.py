"""bronze_quarantine: one row per (source file, record index), whatever the checkpoint."""

from __future__ import annotations

from app.sinks.delta.quarantine import write_quarantine
from app.tables import ensure_table

ROWS_DDL = (
    "batch_id BIGINT, source_file STRING, record_index INT, coin_id STRING, vs_currency STRING, "
    "raw_record STRING, failed_rules ARRAY<STRING>, errors ARRAY<STRING>, extracted_at TIMESTAMP"
)


def test_write_quarantine_is_idempotent_by_file_and_record_across_app_ids(spark, tmp_path):
    path = str(tmp_path / "bronze_quarantine")
    ensure_table(spark, "bronze_quarantine", path)
    rows = [
        (0, "a.json", 3, "x", "usd", "{}", ["coin_id_is_null"], ["coin_id_is_null: ..."], None),
        (0, "bad.json", None, None, None, "<html>", ["unparseable"], ["unparseable: ..."], None),
    ]
    df = spark.createDataFrame(rows, ROWS_DDL)
    write_quarantine(df, path, app_id="old-checkpoint", batch_id=0)
    write_quarantine(df, path, app_id="old-checkpoint", batch_id=0)  # a re-run batch
    write_quarantine(df, path, app_id="new-checkpoint", batch_id=0)  # replay over kept tables
    more = spark.createDataFrame([(1, "a.json", 4, "y", "usd", "{}", ["x"], ["x: y"], None)], ROWS_DDL)
    write_quarantine(more, path, app_id="new-checkpoint", batch_id=1)

    got = sorted(
        (r["source_file"], r["record_index"]) for r in spark.read.format("delta").load(path).collect()
    )
    assert got == [("a.json", 3), ("a.json", 4), ("bad.json", None)]
