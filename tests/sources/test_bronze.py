"""The bronze read side: the listing glob, the stream's batches, and zero-byte files.

Spark's file scan skips zero-byte files (they are listed and counted in a batch, never read);
``with_empty_files`` brings each back as one empty-text row so the parser can quarantine it.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from app.sources.bronze import (
    batch_input_files,
    bronze_glob,
    read_bronze_files,
    read_bronze_stream,
    source_log_files,
    with_empty_files,
)

BOM = b"\xef\xbb\xbf"


def test_bronze_glob_lists_every_day_or_only_the_lookback_window():
    assert bronze_glob("/d/bronze/") == "/d/bronze/dt=*/*.json"
    assert bronze_glob("/d/bronze", lookback_days=1, today=date(2026, 1, 5)) == (
        "/d/bronze/dt={2026-01-04,2026-01-05,2026-01-06}/*.json"
    )


def _write(folder: Path, name: str, data: bytes, mtime: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def _as_uri(path: Path) -> str:
    """How Spark's ``_metadata.file_path`` spells a local file."""
    return "file:" + str(path).replace(" ", "%20")


@pytest.fixture
def bronze_folder(tmp_path: Path):
    """11 readable files in today's folder (two of them empty, one the 10th), plus files never to be read."""
    root = tmp_path / "bron ze"  # a space: URIs are %-encoded, the empty-file rows must match
    today = root / f"dt={datetime.now(UTC).date().isoformat()}"
    old = root / f"dt={(datetime.now(UTC).date() - timedelta(days=30)).isoformat()}"
    base = 1_700_000_000.0
    names: list[str] = []
    for i in range(11):
        if i in (3, 9):  # the 10th file is batch 9, whose source log entry is a ``.compact`` file
            data = b""
        elif i == 5:
            data = BOM + b'{"data": [], "n": 5}'
        elif i == 6:
            data = b'{"name": "caf\xe9", "n": 6}'  # Latin-1, not UTF-8
        else:
            data = json.dumps({"data": [], "n": i}).encode()
        names.append(_write(today, f"f{i:02d}.json", data, base + i).name)
    _write(today, ".f99.json.tmp", b'{"partial', base)  # an unfinished landing
    _write(today, "notes.txt", b"not bronze", base)
    _write(old, "old.json", b'{"data": []}', base)  # outside a 1-day lookback
    return root, today, names


def _collector(batches: list):
    """A ``foreachBatch`` that records each batch's id, its files (offset log) and its rows."""

    def collect(df, batch_id):
        files = sorted(batch_input_files(df))
        rows = sorted((r["source_file"], r["value"]) for r in with_empty_files(df).collect())
        batches.append((batch_id, files, rows))

    return collect


def test_file_source_batches_include_zero_byte_files_once_each(spark, bronze_folder, tmp_path):
    root, today, names = bronze_folder
    batches: list[tuple[int, list[str], list[tuple[str, str]]]] = []
    collect = _collector(batches)

    query = (
        read_bronze_stream(spark, str(root), max_files_per_trigger=1, lookback_days=1, source="files")
        .writeStream.option("checkpointLocation", str(tmp_path / "ckpt"))
        .foreachBatch(collect)
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    assert query.exception() is None

    # one file per batch, oldest first (max_files_per_trigger=1), nothing twice, nothing else read
    assert [b for b, _, _ in batches] == list(range(11))
    expected = [_as_uri(today / n) for n in names]
    assert [rows[0][0] for _, _, rows in batches] == expected
    assert all(len(rows) == 1 for _, _, rows in batches)
    # the batch's file list (from the source log) names the same file as its row
    assert [files for _, files, _ in batches] == [[f"file://{today / n}".replace(" ", "%20")] for n in names]
    values = {Path(rows[0][0]).name: rows[0][1] for _, _, rows in batches}
    assert values["f03.json"] == "" and values["f09.json"] == ""
    assert values["f05.json"].startswith("\ufeff{")  # the BOM is still there for the parser
    assert json.loads(values["f06.json"].replace("\ufffd", "e"))["n"] == 6
    assert json.loads(values["f10.json"]) == {"data": [], "n": 10}


def test_listing_source_batches_every_file_once_in_name_order_zero_byte_files_included(
    spark, bronze_folder, tmp_path
):
    """The listing source (the default) reads zero-byte files itself: one row each, no extra row."""
    root, today, names = bronze_folder
    batches: list[tuple[int, list[str], list[tuple[str, str]]]] = []
    collect = _collector(batches)

    def run(per_trigger: int) -> None:
        query = (
            read_bronze_stream(spark, str(root), max_files_per_trigger=per_trigger, lookback_days=1)
            .writeStream.option("checkpointLocation", str(tmp_path / "ckpt"))
            .foreachBatch(collect)
            .trigger(availableNow=True)
            .start()
        )
        query.awaitTermination()
        assert query.exception() is None

    run(4)
    expected = [_as_uri(today / n) for n in names]
    assert [b for b, _, _ in batches] == [0, 1, 2]
    assert [s for _, _, rows in batches for s, _ in rows] == expected  # name order, each once
    assert [f for _, files, _ in batches for f in files] == expected  # from the offset log
    values = {Path(s).name: v for _, _, rows in batches for s, v in rows}
    assert values["f03.json"] == "" and values["f09.json"] == ""
    assert values["f05.json"].startswith("\ufeff{")
    assert json.loads(values["f06.json"].replace("\ufffd", "e"))["n"] == 6
    # a restart on the same checkpoint reads only what landed since
    _write(today, "f11.json", b"{}", 1_700_000_100.0)
    run(4)
    assert [(b, [s for s, _ in rows]) for b, _, rows in batches[3:]] == [(3, [_as_uri(today / "f11.json")])]


def test_source_log_lists_each_batchs_files(spark, bronze_folder, tmp_path):
    """A batch's files come from the checkpoint log, so a batch re-run after a crash sees the same list."""
    root, today, _ = bronze_folder
    ckpt = tmp_path / "ckpt"
    query = (
        read_bronze_stream(spark, str(root), max_files_per_trigger=6, lookback_days=1, source="files")
        .writeStream.option("checkpointLocation", str(ckpt))
        .foreachBatch(lambda df, batch_id: None)
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    first = source_log_files(spark, str(ckpt), 0)
    assert sorted(Path(f).name for f in first) == [
        "f00.json",
        "f01.json",
        "f02.json",
        "f03.json",
        "f04.json",
        "f05.json",
    ]
    assert source_log_files(spark, str(ckpt), 1)[0].endswith("/f06.json")
    assert source_log_files(spark, str(ckpt), 7) == []


def test_source_log_reads_a_compacted_batch(spark, tmp_path):
    log = tmp_path / "ckpt" / "sources" / "0"
    log.mkdir(parents=True)
    lines = ["v1"] + [
        json.dumps({"path": f"file:///b/f{i}.json", "timestamp": 1, "batchId": i // 2}) for i in range(20)
    ]
    (log / "9.compact").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (log / "10").write_text('v1\n{"path":"file:///b/x.json","timestamp":2,"batchId":10}\n', encoding="utf-8")
    assert source_log_files(spark, str(tmp_path / "ckpt"), 9) == ["file:///b/f18.json", "file:///b/f19.json"]
    assert source_log_files(spark, str(tmp_path / "ckpt"), 10) == ["file:///b/x.json"]
    (log / "11").write_text("not a log\n", encoding="utf-8")
    with pytest.raises(ValueError, match="file source log"):
        source_log_files(spark, str(tmp_path / "ckpt"), 11)


def test_static_read_gets_a_row_per_zero_byte_file(spark, bronze_folder):
    _, today, names = bronze_folder
    paths = [str(today / n) for n in names[:5]]
    rows = sorted(
        (r["source_file"], r["value"]) for r in with_empty_files(read_bronze_files(spark, paths)).collect()
    )
    assert [s for s, _ in rows] == [_as_uri(Path(p)) for p in paths]
    assert rows[3][1] == ""
    assert read_bronze_files(spark, paths).count() == 4  # what Spark alone gives


def test_a_dataframe_that_is_not_a_file_read_is_returned_as_is(spark):
    df = spark.createDataFrame([("{}", "a.json")], "value string, source_file string")
    assert with_empty_files(df) is df


def test_without_reachable_spark_internals_the_check_is_skipped_with_a_warning(spark, caplog):
    """Inside a micro-batch whose query cannot be found the batch goes on unchanged (one warning)."""
    import app.sources.bronze as bronze

    df = spark.createDataFrame([("{}", "a.json")], "value string, source_file string")
    sc = spark.sparkContext
    sc.setLocalProperty("streaming.sql.batchId", "0")
    sc.setLocalProperty("sql.streaming.queryId", "00000000-0000-0000-0000-000000000000")
    bronze._warned_unavailable = False
    try:
        with caplog.at_level(logging.WARNING, logger="app.sources.bronze"):
            assert with_empty_files(df) is df
            assert with_empty_files(df) is df
    finally:
        sc.setLocalProperty("streaming.sql.batchId", None)
        sc.setLocalProperty("sql.streaming.queryId", None)
        bronze._warned_unavailable = False
    warnings = [r for r in caplog.records if r.getMessage() == "bronze.empty_file_check_unavailable"]
    assert len(warnings) == 1
