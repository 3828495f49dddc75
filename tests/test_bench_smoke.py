"""The benchmark harness at toy sizes: every section runs and reports what it measured.

Targets are not enforced here (speed belongs in ``python -m bench``, not in timed tests); this keeps
the harness itself working.
"""

from __future__ import annotations

import json
import math
import os

import pytest

from app.paths import Layout
from bench.__main__ import main


@pytest.mark.slow
def test_bench_smoke_runs_every_section(spark, tmp_path):
    out = tmp_path / "bench.json"
    assert main(["--smoke", "--work-dir", str(tmp_path / "work"), "--out", str(out)]) == 0
    res = json.loads(out.read_text())

    runs = res["throughput"]["runs"]
    workload = res["throughput"]["workload"]
    assert [r["name"][0] for r in runs] == ["a", "b", "c", "s"]
    assert [r["records"] for r in runs] == [workload["records"]] * 4 == [20 * 2] * 4
    assert all(r["records_per_second"] > 0 for r in runs)
    assert res["throughput"]["b_over_a"] > 0 and res["throughput"]["s_over_a"] > 0
    # the floor ran silver and nothing after it; the full pipeline ran every stage
    floor, full = (Layout.from_root(str(tmp_path / "work" / run)) for run in ("s", "b"))
    for name in ("silver_crypto_clean", "pipeline_metadata"):
        assert os.path.isdir(floor.table(name)) and os.path.isdir(full.table(name))
    for name in ("crypto_anomalies", "gold_crypto_metrics", "gold_coin_ohlc"):
        assert not os.path.isdir(floor.table(name)) and os.path.isdir(full.table(name))

    steady = res["steady"]
    assert len(steady["start_batches"]) == len(steady["end_batches"]) == 1
    assert steady["silver_rows_end"] > steady["silver_rows_start"] > 0
    assert not math.isnan(steady["end_over_start"])
    assert len(steady["floor_batches"]) == 1 and steady["p50_floor"] > 0

    wh = res["warehouse"]
    assert [w["rows"] for w in wh] == [10, 1_000, 10_000]
    assert len({w["statements"] for w in wh}) == 1  # constant in the changed rows

    ingest = res["ingest"]
    assert ingest["calls_per_vs_currency"] == 3 and ingest["records"] == 600
    assert ingest["self_caused_429"] == 0

    names = {c["name"] for c in res["checks"]}
    assert {"throughput b/a", "steady end/start", "warehouse statements constant"} <= names
    assert {"throughput s/a floor (reported)", "steady p50 floor (reported)"} <= names


def test_bench_exits_nonzero_when_a_target_is_missed(tmp_path, monkeypatch):
    monkeypatch.setattr(
        "bench.ingest_calls.measure_ingest",
        lambda root, coins: __import__("bench.ingest_calls", fromlist=["IngestResult"]).IngestResult(
            coins=coins,
            vs_currencies=1,
            calls=41,
            calls_per_vs_currency=41,
            records=coins,
            self_caused_429=1,
            rate_limit_per_minute=500,
            seconds=1.0,
        ),
    )
    assert main(["--sections", "ingest", "--work-dir", str(tmp_path), "--ingest-coins", "10000"]) == 1
