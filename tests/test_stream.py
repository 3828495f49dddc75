"""Integration: the real streaming query over bronze files in tmp_path (availableNow)."""

from __future__ import annotations

import json

from chispa import assert_df_equality

from app.config import load_settings
from app.paths import Layout
from app.stream import run_stream
from tests.helpers import (
    T0,
    assert_scd2_invariants,
    coin_record,
    minutes,
    silver_content,
    write_bronze_page,
    write_raw_bronze,
)

COINS = ("bitcoin", "ethereum", "tether", "usd-coin", "dai")
# dai at T0+2m: pages 2 and 4 say 1.0, page 3 says 1.02; the earliest fetch (page 2) wins.
DAI = (1.0, 0.99, 1.0, 1.02, 1.0)


def _page_records(i: int) -> list[dict]:
    # Pages 2-4 re-serve page 2's observations (same last_updated, same values: duplicates, as
    # CoinGecko's cache does); tether keeps its values from page 0 to 1 (unchanged). usd-coin has
    # X at T0 and T0+2m and Y at T0+1m: in run (c) X@T0 and X@T0+2m land before the late Y, so
    # silver must remember the collapsed X@T0+2m. dai has two values at the same last_updated.
    j = min(i, 2)
    t = T0 + minutes(j)
    return [
        coin_record("bitcoin", 100.0 + j, t),
        coin_record("ethereum", 10.0 + j, t),
        coin_record("tether", 1.0 if j < 2 else 1.01, t),
        coin_record("usd-coin", 1.0 if j != 1 else 0.98, t),
        coin_record("dai", DAI[i], t),
    ]


def _write_pages(layout: Layout, indexes) -> None:
    for i in indexes:
        write_bronze_page(layout.bronze_root, T0 + minutes(i), _page_records(i))


def _silver(spark, layout):
    return spark.read.format("delta").load(layout.table("silver_crypto_clean"))


def _run(spark, root, per_trigger):
    layout = Layout.from_root(str(root))
    settings = load_settings(data_dir=str(root), max_files_per_trigger=per_trigger)
    return layout, settings


def test_stream_is_order_independent_and_processes_each_file_once(spark, tmp_path):
    # (a) all files in one batch
    layout_a, settings_a = _run(spark, tmp_path / "a", 100)
    _write_pages(layout_a, range(5))
    res_a = run_stream(spark, settings_a, layout_a, stages=[])
    assert len(res_a.batches) == 1
    # (b) one file per batch
    layout_b, settings_b = _run(spark, tmp_path / "b", 1)
    _write_pages(layout_b, range(5))
    res_b = run_stream(spark, settings_b, layout_b, stages=[])
    assert len(res_b.batches) == 5
    # (c) newer files first, older ones arrive later (restart on the same checkpoint)
    layout_c, settings_c = _run(spark, tmp_path / "c", 2)
    _write_pages(layout_c, [3, 4])
    first = run_stream(spark, settings_c, layout_c, stages=[])
    _write_pages(layout_c, [0, 2, 1])
    second = run_stream(spark, settings_c, layout_c, stages=[])
    third = run_stream(spark, settings_c, layout_c, stages=[])
    assert first.query_id == second.query_id == third.query_id
    assert third.batches == []
    assert sum(b.files for b in first.batches + second.batches) == 5

    silver_a = _silver(spark, layout_a)
    for layout in (layout_a, layout_b, layout_c):
        assert_scd2_invariants(_silver(spark, layout))
    for layout in (layout_b, layout_c):
        assert_df_equality(
            silver_content(silver_a),
            silver_content(_silver(spark, layout)),
            ignore_row_order=True,
            ignore_column_order=True,
        )
    for res in (res_a, res_b, first, second):
        assert all(b.reconciles and b.status == "ok" for b in res.batches)
    assert sum(b.records_read for b in res_b.batches) == 25
    assert {r["coin_id"] for r in silver_a.filter("is_current").collect()} == set(COINS)
    t = [(T0 + minutes(n)).replace(tzinfo=None) for n in range(3)]
    usdc = silver_a.filter("coin_id = 'usd-coin'").orderBy("valid_from").collect()
    assert [(r["valid_from"], r["current_price"]) for r in usdc] == [(t[0], 1.0), (t[1], 0.98), (t[2], 1.0)]
    assert usdc[2]["extracted_at"] == t[2]  # page 2's fetch, not the later duplicate pages'
    dai = silver_a.filter("coin_id = 'dai'").orderBy("valid_from").collect()
    assert [(r["valid_from"], r["current_price"], r["extracted_at"]) for r in dai] == [
        (t[0], 1.0, t[0]),
        (t[1], 0.99, t[1]),
        (t[2], 1.0, t[2]),
    ]


def test_stream_quarantines_bad_files_and_records_and_keeps_running(spark, tmp_path):
    layout, settings = _run(spark, tmp_path, 3)
    root = layout.bronze_root
    good = [coin_record(c, 5.0 + n, T0) for n, c in enumerate(COINS)]
    bad_records = [
        coin_record("neg", -3.0, T0, market_cap=1, low_24h=0.1, high_24h=2.0),
        coin_record("nullid", 1.0, T0, id=None),
        coin_record("future", 1.0, T0 + minutes(60 * 48)),
        coin_record("types", 1.0, T0, current_price="not-a-number", total_volume={"v": 1}),
    ]
    write_bronze_page(root, T0, good + bad_records + [good[0]])  # good[0] twice: a duplicate
    write_bronze_page(root, T0 + minutes(1), [good[1]], page=2)  # same record in another file: duplicate
    write_raw_bronze(root, T0, "not_json.json", "this is not json")
    write_raw_bronze(root, T0, "truncated.json", json.dumps({"data": good})[:40])
    write_raw_bronze(root, T0, "html.json", "<!DOCTYPE html><html><body>rate limited</body></html>")
    write_raw_bronze(root, T0, "empty_object.json", "{}")
    write_raw_bronze(root, T0, ".in_flight.json.tmp", "{partial")

    res = run_stream(spark, settings, layout, stages=[])

    assert sum(b.files for b in res.batches) == 6
    assert all(b.reconciles for b in res.batches)
    totals = {
        k: sum(getattr(b, k) for b in res.batches)
        for k in ("records_read", "new_versions", "duplicates", "quarantined")
    }
    assert totals == {"records_read": 15, "new_versions": len(COINS), "duplicates": 2, "quarantined": 8}
    silver = _silver(spark, layout)
    assert_scd2_invariants(silver)
    assert {r["coin_id"] for r in silver.collect()} == set(COINS)
    quarantine = spark.read.format("delta").load(layout.table("bronze_quarantine")).collect()
    reasons = sorted(r["failed_rules"][0] for r in quarantine)
    assert reasons == sorted(
        ["current_price_not_positive", "coin_id_is_null", "last_updated_in_future", "wrong_type"]
        + ["unparseable"] * 4
    )
    assert all(r["errors"] and r["raw_record"] and r["source_file"] for r in quarantine)
    md = (
        spark.read.format("delta")
        .load(layout.table("pipeline_metadata"))
        .filter("kind = 'stream_batch'")  # the progress listener adds kind='progress' rows
        .collect()
    )
    assert len(md) == len(res.batches) and all(r["status"] == "ok" for r in md)


def test_summary_line_counts_every_batch_when_only_the_latest_are_kept():
    from collections import deque
    from datetime import UTC, datetime

    from app.batch.handler import BatchTotals
    from app.commands.stream import summary_line
    from app.sinks.delta.metadata import BatchMetadata
    from app.stream import StreamResult

    kept: deque[BatchMetadata] = deque(maxlen=2)
    totals = BatchTotals()
    for batch_id in range(5):
        meta = BatchMetadata(
            run_id="r", batch_id=batch_id, app_id="a", started_at=datetime(2026, 1, 1, tzinfo=UTC)
        )
        meta.files, meta.records_read, meta.new_versions = 1, 10, 3
        meta.unchanged, meta.duplicates, meta.quarantined = 4, 2, 1
        kept.append(meta)
        totals.add(meta)
    assert (totals.batches, totals.files, totals.records_read, totals.new_versions) == (5, 5, 50, 15)
    assert (totals.unchanged, totals.duplicates, totals.quarantined) == (20, 10, 5)
    result = StreamResult(query_id="q", app_id="a", run_id="r", batches=list(kept), totals=totals)
    assert [b.batch_id for b in result.batches] == [3, 4]
    assert result.batch_count == 5 and result.records_read == 50
    assert summary_line(result).startswith("stream: 5 batches, 5 files, 50 records, 15 new versions")
