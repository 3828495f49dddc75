"""``coinlake status``: bronze inventory, stream lag from the checkpoint, tables, ingest, warehouse."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import pytest

from app.cli import main
from app.commands.status import format_quality, format_status
from app.paths import Layout
from app.status import collect_status, ingest_summary, stream_progress, warehouse_summary
from tests.helpers import T0, coin_record, minutes, write_bronze_page
from tests.sample_lake import build_sample_lake


def _bronze(layout: Layout, day: str, name: str, size: int = 10) -> str:
    folder = layout.bronze_day(day)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "w") as fh:
        fh.write("x" * size)
    return path


def _checkpoint(layout: Layout, planned: dict[int, list[str]], committed: list[int]) -> None:
    ckpt = layout.checkpoint()
    os.makedirs(os.path.join(ckpt, "sources", "0"), exist_ok=True)
    os.makedirs(os.path.join(ckpt, "commits"), exist_ok=True)
    with open(os.path.join(ckpt, "metadata"), "w") as fh:
        fh.write(json.dumps({"id": "q-123"}) + "\n")
    for batch, paths in planned.items():
        with open(os.path.join(ckpt, "sources", "0", str(batch)), "w") as fh:
            fh.write("v1\n")
            for p in paths:
                fh.write(json.dumps({"path": "file://" + p, "timestamp": 1, "batchId": batch}) + "\n")
    for batch in committed:
        with open(os.path.join(ckpt, "commits", str(batch)), "w") as fh:
            fh.write('v1\n{"nextBatchWatermarkMs":0}\n')


def test_collect_status_on_a_missing_root_says_none_yet(tmp_path):
    layout = Layout.from_root(str(tmp_path / "nowhere"))

    status = collect_status(layout, spark_factory=lambda: pytest.fail("no Spark for an empty root"))

    assert status["bronze"] == {"days": [], "files": 0, "bytes": 0}
    assert status["stream"]["exists"] is False
    assert status["batches"]["last_batch_id"] is None
    assert not any(t["exists"] for t in status["tables"].values())
    assert status["ingest"]["cycles"] == 0
    assert status["warehouse"]["available"] is False
    text = format_status(status)
    assert "none yet" in text and "no checkpoint yet" in text and "no cycles yet" in text


def test_stream_progress_counts_processed_in_flight_and_pending(tmp_path):
    layout = Layout.from_root(str(tmp_path))
    a = _bronze(layout, "2026-01-01", "a.json")
    b = _bronze(layout, "2026-01-01", "b.json")
    c = _bronze(layout, "2026-01-02", "c.json")
    _bronze(layout, "2026-01-02", "d.json")
    _bronze(layout, "2026-01-02", ".e.json.tmp")  # an unfinished landing is not a file yet
    _checkpoint(layout, {0: [a, b], 1: [c]}, committed=[0])

    status = collect_status(layout)

    assert status["bronze"]["files"] == 4
    assert [(d["day"], d["files"], d["bytes"]) for d in status["bronze"]["days"]] == [
        ("2026-01-01", 2, 20),
        ("2026-01-02", 2, 20),
    ]
    stream = status["stream"]
    assert (stream["processed_files"], stream["in_flight_files"], stream["pending_files"]) == (2, 1, 1)
    assert stream["last_committed_batch"] == 0
    assert stream["query_id"] == "q-123"


def test_stream_progress_reads_compacted_logs(tmp_path):
    layout = Layout.from_root(str(tmp_path))
    files = [_bronze(layout, "2026-01-01", f"f{i}.json") for i in range(3)]
    _checkpoint(layout, {}, committed=[8, 9, 10])
    src = os.path.join(layout.checkpoint(), "sources", "0")
    with open(os.path.join(src, "9.compact"), "w") as fh:
        fh.write(
            "v1\n" + "".join(json.dumps({"path": "file://" + p, "batchId": 9}) + "\n" for p in files[:2])
        )
    with open(os.path.join(src, "10"), "w") as fh:
        fh.write("v1\n" + json.dumps({"path": "file://" + files[2], "batchId": 10}) + "\n")

    progress = stream_progress(layout, {os.path.abspath(p) for p in files})

    assert progress["processed_files"] == 3 and progress["pending_files"] == 0


def test_stream_progress_reads_the_listing_sources_offsets(tmp_path):
    from app.sources.bronze_offsets import BronzeOffset

    layout = Layout.from_root(str(tmp_path))
    a, b, c, d = (_bronze(layout, "2026-01-01", f"{n}.json") for n in "abcd")
    late = _bronze(layout, "2026-01-01", "aa.json")  # landed after b was read, below the high water
    ckpt = layout.checkpoint()
    os.makedirs(os.path.join(ckpt, "offsets"))
    os.makedirs(os.path.join(ckpt, "commits"))
    first = BronzeOffset(
        hw="2026-01-01/b.json",
        lb="2026-01-01/",
        seen=frozenset({"2026-01-01/a.json", "2026-01-01/b.json"}),
        batch=("2026-01-01/a.json", "2026-01-01/b.json"),
        seq=1,
    )
    second = BronzeOffset(
        hw="2026-01-01/c.json",
        lb="2026-01-01/",
        seen=first.seen | {"2026-01-01/c.json"},
        batch=("2026-01-01/c.json",),
        seq=2,
    )
    for batch, offset in enumerate((first, second)):
        with open(os.path.join(ckpt, "offsets", str(batch)), "w") as fh:
            fh.write("v1\n{}\n" + json.dumps(offset.to_json()) + "\n")
    with open(os.path.join(ckpt, "commits", "0"), "w") as fh:
        fh.write("v1\n{}\n")

    progress = stream_progress(layout, {os.path.abspath(p) for p in (a, b, c, d, late)})

    assert progress["last_committed_batch"] == 0
    assert (progress["processed_files"], progress["in_flight_files"], progress["pending_files"]) == (2, 1, 2)


def test_ingest_summary_finds_last_cycle_and_last_error(tmp_path):
    layout = Layout.from_root(str(tmp_path))
    os.makedirs(layout.logs_dir)
    rows = [
        {"run_id": "1", "finished_at": "2026-01-01T00:01:00Z", "status": "ok", "pages_failed": []},
        {
            "run_id": "2",
            "finished_at": "2026-01-01T00:02:00Z",
            "status": "partial",
            "pages_failed": [{"page": 2}],
        },
        {"run_id": "3", "finished_at": "2026-01-01T00:03:00Z", "status": "ok", "pages_failed": []},
    ]
    with open(os.path.join(layout.logs_dir, "ingest_runs.jsonl"), "w") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")

    summary = ingest_summary(layout)

    assert summary["cycles"] == 3 and summary["unreadable_lines"] == 1
    assert summary["last"]["run_id"] == "3"
    assert summary["last_error"]["run_id"] == "2"


def test_warehouse_summary_compares_ledger_with_the_stream():
    stream = {"query_id": "q-1", "last_committed_batch": 7}
    rows = [
        {"app_id": "coinlake-q-1", "batch_id": 5, "loaded_at": "2026-01-01 00:05:00"},
        {"app_id": "coinlake-old", "batch_id": 40, "loaded_at": "2025-12-01 00:00:00"},
    ]

    summary = warehouse_summary(lambda: rows, stream, "")

    assert summary["available"] is True
    assert (summary["ledger_last_batch"], summary["batches_behind"]) == (5, 2)


def test_warehouse_summary_is_unavailable_rather_than_failing():
    def broken():
        raise RuntimeError("connection refused\nstack")

    summary = warehouse_summary(broken, {"query_id": None, "last_committed_batch": None}, "")

    assert summary == {"available": False, "reason": "ledger unreadable: connection refused"}


def test_collect_status_counts_delta_tables_and_finds_last_batch_and_error(spark, tmp_path):
    layout = Layout.from_root(str(tmp_path))
    build_sample_lake(spark, layout)

    status = collect_status(layout, spark=spark)

    tables = status["tables"]
    assert tables["silver_crypto_clean"]["rows"] == 320
    assert tables["silver_crypto_clean"]["latest"] == "2026-01-02 05:45:00"
    assert tables["crypto_anomalies"]["rows"] == 2
    assert status["batches"]["last_batch_id"] == 7  # progress rows are not batches
    assert status["last_error"]["message"] == "warehouse unreachable"
    assert "320 rows" in format_status(status)
    assert status["quarantine_by_rule"] == {"price_not_negative": 4}
    assert "price_not_negative" in format_status(status).split("quarantined by rule", 1)[1]


def test_quality_summary_scores_the_last_batch_and_the_last_24_hours(spark, tmp_path):
    from app.status import quality_summary
    from tests.sample_lake import START

    layout = Layout.from_root(str(tmp_path))
    build_sample_lake(spark, layout)

    quality = quality_summary(spark, layout, now=START.replace(tzinfo=UTC) + timedelta(hours=1))

    last = quality["last_batch"]
    # batch 7: 470 records, 1 quarantined, 60 failing a warn rule
    assert (last["batch_id"], last["records"], last["passed"], last["status"]) == (7, 470, 409, "ok")
    assert last["score"] == pytest.approx(409 / 470)
    day = quality["last_24h"]
    # the 8 ok batches (the failed row of run-0 has no score); records 3480, quarantined 7, warned 120
    assert (day["batches"], day["records"], day["passed"]) == (8, 3480, 3353)
    assert day["score"] == pytest.approx(3353 / 3480)
    assert day["failures_by_rule"] == {"coin_id_present": 4, "price_not_negative": 4}
    assert day["by_rule"] == pytest.approx(
        {"coin_id_present": 1 - 4 / 3480, "price_not_negative": 1 - 4 / 3480}
    )

    later = quality_summary(spark, layout, now=datetime(2026, 1, 3, tzinfo=UTC))
    assert later["last_batch"]["batch_id"] == 7
    assert later["last_24h"]["batches"] == 0 and later["last_24h"]["score"] is None
    text = "\n".join(format_quality({"last_batch": last, "last_24h": later["last_24h"]}))
    assert f"{409 / 470:.2%}" in text and "(0 of 0 records, 0 batches)" in text
    assert format_quality({"last_batch": None, "last_24h": None})[-1] == "  none yet"


def test_status_command_prints_json_for_an_empty_root(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COINLAKE_WAREHOUSE", "none")

    code = main(["--data-dir", str(tmp_path / "empty"), "status", "--json"])

    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["warehouse"] == {"available": False, "reason": "disabled (COINLAKE_WAREHOUSE=none)"}
    assert out["bronze"]["files"] == 0


def _status_json(capsys, root: str) -> tuple[int, dict]:
    code = main(["--data-dir", root, "status", "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_status_exits_1_with_the_lag_when_bronze_is_unprocessed_and_ingest_is_late(
    tmp_path, capsys, monkeypatch
):
    root = str(tmp_path)
    layout = Layout.from_root(root)
    monkeypatch.setenv("COINLAKE_WAREHOUSE", "none")
    monkeypatch.setenv("COINLAKE_STATUS_MAX_LAG_FILES", "2")
    monkeypatch.setenv("COINLAKE_STATUS_MAX_INGEST_LAG_SECONDS", "600")
    for minute, currency in ((0, "usd"), (5, "usd"), (3, "eur")):
        write_bronze_page(
            layout.bronze_root, T0 + minutes(minute), [coin_record("bitcoin", 1.0, T0)], vs_currency=currency
        )
    os.makedirs(layout.logs_dir)
    two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    with open(os.path.join(layout.logs_dir, "ingest_runs.jsonl"), "w") as fh:
        fh.write(json.dumps({"run_id": "r1", "status": "ok", "finished_at": two_hours_ago}) + "\n")

    code, status = _status_json(capsys, root)

    assert code == 1
    lag = status["lag"]
    assert lag["files_behind"] == 3
    assert lag["by_currency"] == {
        "eur": {"bronze_newest": "2026-01-05T12:03:00+00:00", "silver_newest": None, "lag_seconds": None},
        "usd": {"bronze_newest": "2026-01-05T12:05:00+00:00", "silver_newest": None, "lag_seconds": None},
    }
    assert 7190 < lag["ingest_lag_seconds"] < 7300
    assert lag["exceeded"] == [
        "3 bronze files not committed by the stream (limit 2)",
        "eur: bronze up to 2026-01-05 12:03:00 and no silver rows",
        "usd: bronze up to 2026-01-05 12:05:00 and no silver rows",
        f"last ingest cycle {lag['ingest_lag_seconds']:.0f} s ago (limit 600 s)",
    ]
    assert main(["--data-dir", root, "status"]) == 1
    text = capsys.readouterr().out
    assert "lag         3 files behind; silver behind bronze: eur no silver, usd no silver" in text
    assert "LAG EXCEEDED: 3 bronze files not committed by the stream (limit 2)" in text


def test_status_refuses_a_negative_lag_limit_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COINLAKE_STATUS_MAX_LAG_SECONDS", "-5")

    assert main(["--data-dir", str(tmp_path), "status", "--json"]) == 2

    err = capsys.readouterr().err
    assert err.startswith("coinlake: error: invalid setting COINLAKE_STATUS_MAX_LAG_SECONDS='-5'")


def test_config_show_lists_the_lag_limits(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COINLAKE_STATUS_MAX_LAG_FILES", "7")

    assert main(["--data-dir", str(tmp_path), "config", "show", "--json"]) == 0

    shown = json.loads(capsys.readouterr().out)
    assert shown["COINLAKE_STATUS_MAX_LAG_FILES"] == 7
    assert shown["COINLAKE_STATUS_MAX_LAG_SECONDS"] == 900.0
    assert shown["COINLAKE_STATUS_MAX_INGEST_LAG_SECONDS"] == 0.0


def test_status_of_a_caught_up_lake_exits_0_and_exits_1_once_bronze_moves_ahead(
    spark, tmp_path, capsys, monkeypatch
):
    root = str(tmp_path)
    layout = Layout.from_root(root)
    monkeypatch.setenv("COINLAKE_WAREHOUSE", "none")
    monkeypatch.setenv("COINLAKE_STATUS_MAX_LAG_SECONDS", "3600")
    monkeypatch.setenv("COINLAKE_STATUS_MAX_LAG_FILES", "0")
    # CoinGecko's last_updated trails the fetch: 30 s here, a lag the limit tolerates.
    observed = T0 - timedelta(seconds=30)
    write_bronze_page(
        layout.bronze_root,
        T0,
        [coin_record("bitcoin", 100.0, observed), coin_record("ethereum", 10.0, observed)],
    )
    # An unchanged observation collapses into the version: it still counts as seen.
    write_bronze_page(
        layout.bronze_root, T0 + minutes(1), [coin_record("ethereum", 10.0, observed + minutes(1))]
    )
    assert main(["--data-dir", root, "stream", "--trigger", "available-now"]) == 0
    capsys.readouterr()

    code, status = _status_json(capsys, root)

    assert code == 0, status["lag"]
    assert status["lag"]["files_behind"] == 0
    assert status["lag"]["by_currency"]["usd"]["lag_seconds"] == 30.0
    assert status["lag"]["exceeded"] == []

    later = T0 + timedelta(hours=2)
    write_bronze_page(layout.bronze_root, later, [coin_record("bitcoin", 101.0, later)], page=2)

    code, status = _status_json(capsys, root)

    assert code == 1
    assert status["lag"]["files_behind"] == 1
    assert status["lag"]["by_currency"]["usd"] == {
        "bronze_newest": "2026-01-05T14:00:00+00:00",
        "silver_newest": "2026-01-05T12:00:30+00:00",
        "lag_seconds": 7170.0,
    }
    assert status["lag"]["exceeded"] == [
        "1 bronze files not committed by the stream (limit 0)",
        "usd: silver 7170 s behind bronze (limit 3600 s)",
    ]
