"""The progress listener with a tiny real stream (file source into a counting foreachBatch)."""

from __future__ import annotations

import json
from types import SimpleNamespace

from app.observability import PROGRESS_KIND, ProgressRecorder, progress_row, recording_progress
from app.paths import Layout


def _fake_progress(batch_id: int, rows: int) -> SimpleNamespace:
    return SimpleNamespace(
        id="q-1",
        runId="r-1",
        name="bronze_to_silver",
        timestamp="2026-01-02T03:04:05.678Z",
        batchId=batch_id,
        batchDuration=1500,
        durationMs={"triggerExecution": 1500, "addBatch": 1200},
        numInputRows=rows,
        inputRowsPerSecond=float("nan"),
        processedRowsPerSecond=12.5,
        sources=[SimpleNamespace(description="FileStreamSource[x]", numInputRows=rows)],
    )


def test_progress_row_maps_fields():
    row = progress_row(_fake_progress(3, 40), run_id="run-a")

    assert row["kind"] == PROGRESS_KIND
    assert row["batch_id"] == 3
    assert row["app_id"] == "coinlake-q-1"
    assert row["records_read"] == 40
    assert row["durations_ms"] == {"triggerExecution": 1500, "addBatch": 1200}
    assert (row["finished_at"] - row["started_at"]).total_seconds() == 1.5
    details = json.loads(row["details"])
    assert details["input_rows_per_second"] is None  # NaN is not stored
    assert details["processed_rows_per_second"] == 12.5


def test_recorder_keeps_last_event_per_batch_and_filters_by_name():
    recorder = ProgressRecorder(run_id="run-a")
    recorder.onQueryProgress(SimpleNamespace(progress=_fake_progress(0, 5)))
    recorder.onQueryProgress(SimpleNamespace(progress=_fake_progress(0, 7)))
    other = _fake_progress(1, 9)
    other.name = "someone_else"
    recorder.onQueryProgress(SimpleNamespace(progress=other))

    rows = recorder.pending()

    assert [(r["batch_id"], r["records_read"]) for r in rows] == [(0, 7)]


def test_recording_progress_writes_rows_for_a_real_stream(spark, tmp_path):
    layout = Layout.from_root(str(tmp_path / "root"))
    input_dir = tmp_path / "in"
    input_dir.mkdir()
    for i in range(3):
        (input_dir / f"f{i}.json").write_text(json.dumps({"n": i}) + "\n" + json.dumps({"n": i * 10}) + "\n")

    with recording_progress(
        spark, layout, run_id="run-test", query_name="obs_test", flush_interval_s=1.0
    ) as recorder:
        query = (
            spark.readStream.schema("n INT")
            .option("maxFilesPerTrigger", 1)
            .json(str(input_dir))
            .writeStream.queryName("obs_test")
            .foreachBatch(lambda batch_df, batch_id: batch_df.count())
            .option("checkpointLocation", str(tmp_path / "ckpt"))
            .trigger(availableNow=True)
            .start()
        )
        try:
            query.awaitTermination(120)
        finally:
            query.stop()

    meta_df = spark.read.format("delta").load(layout.table("pipeline_metadata"))
    rows = sorted(meta_df.collect(), key=lambda r: r["batch_id"])
    assert recorder.written == len(rows)
    assert [r["batch_id"] for r in rows] == [0, 1, 2]
    assert all(r["kind"] == "progress" and r["run_id"] == "run-test" for r in rows)
    assert [r["records_read"] for r in rows] == [2, 2, 2]
    assert all(r["durations_ms"]["triggerExecution"] >= 0 for r in rows)
    assert recorder.pending() == []


def test_flush_checks_the_metadata_table_once_and_appends_every_time(spark, tmp_path, monkeypatch):
    import app.tables

    layout = Layout.from_root(str(tmp_path / "root"))
    checks = []
    real_ensure = app.tables.ensure_table

    def counting_ensure(spark_, name, path):
        checks.append(name)
        real_ensure(spark_, name, path)

    monkeypatch.setattr(app.tables, "ensure_table", counting_ensure)
    recorder = ProgressRecorder(run_id="run-a")
    for batch_id in (0, 1):
        recorder.onQueryProgress(SimpleNamespace(progress=_fake_progress(batch_id, 5)))
        assert recorder.flush(spark, layout) == 1

    rows = spark.read.format("delta").load(layout.table("pipeline_metadata")).collect()
    assert sorted(r["batch_id"] for r in rows) == [0, 1]
    assert checks == ["pipeline_metadata"]  # describing the table on every flush was wasted work
