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
from bench.jobs import jobs_started, status_store_jobs
from bench.report import NAME_WIDTH, Report
from bench.spark_runs import SILVER_ALONE, pipeline_settings, run_pipeline
from bench.workload import generate


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
    for run in runs[1:]:  # the pipeline runs count their Spark jobs per batch; the ceiling does not
        assert len(run["batch_jobs"]) == len(run["batch_seconds"]) and min(run["batch_jobs"]) > 0
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
    assert len(steady["start_jobs"]) == len(steady["end_jobs"]) == len(steady["floor_jobs"]) == 1
    assert steady["jobs_p50_start"] == steady["jobs_max_start"] == steady["start_jobs"][0] > 0
    assert steady["jobs_p50_end"] > 0 and steady["jobs_p50_floor"] > 0

    scale = res["scale"]  # 200 coins x usd,eur: one page per currency, the whole snapshot one batch
    assert scale["vs_currencies"] == ["usd", "eur"] and scale["files_per_batch"] == 2
    assert scale["records_per_batch"] == 400 and len(scale["batch_seconds"]) == 2
    assert scale["p50"] > 0 and scale["p50_jobs"] > 0 and scale["silver_rows"] > 0
    assert scale["reference_batches"] == steady["start_batches"] and "steady" in scale["reference"]
    assert scale["ratio"] == pytest.approx(scale["p50"] / steady["p50_start"])
    # the same snapshots once more with every batch's kernels on the executors
    assert scale["placements"] == ["driver"] * 2 and scale["executors_placements"] == ["executors"] * 2
    assert len(scale["executors_batch_seconds"]) == 2 and scale["executors_p50"] > 0

    wh = res["warehouse"]
    assert [w["rows"] for w in wh] == [10, 1_000, 10_000]
    assert len({w["statements"] for w in wh}) == 1  # constant in the changed rows

    ingest = res["ingest"]
    assert ingest["calls_per_vs_currency"] == 3 and ingest["records"] == 600
    assert ingest["self_caused_429"] == 0

    names = {c["name"] for c in res["checks"]}
    assert {"throughput b/a", "throughput c/a", "steady end/start", "warehouse statements constant"} <= names
    assert {"steady jobs/batch start p50", "scale p50 / 1,000-coin p50"} <= names
    assert all(len(name) <= NAME_WIDTH for name in names)  # the table's name column
    assert {"throughput s/a floor (reported)", "steady p50 floor (reported)"} <= names


def test_run_pipeline_jobs_per_batch_match_the_status_store(spark, tmp_path):
    layout = Layout.from_root(str(tmp_path / "lake"))
    generate(layout, coins=20, snapshots=2)
    settings = pipeline_settings(layout, warehouse="none", max_files_per_trigger=1, shuffle_partitions=2)
    first = jobs_started(spark)
    run = run_pipeline(spark, layout, settings, name="jobs", stages=SILVER_ALONE)

    store = status_store_jobs(spark)
    bounds = [first]
    for n in run.batch_jobs:
        bounds.append(bounds[-1] + n)
    assert len(run.batch_jobs) == 2 and min(run.batch_jobs) > 0
    assert bounds[-1] - first <= 1000  # still all retained by the status store (spark.ui.retainedJobs)
    # every job id in a batch's window is one the store saw start, and no other
    for lo, hi, n in zip(bounds, bounds[1:], run.batch_jobs, strict=False):
        assert sum(lo <= job < hi for job in store) == n
    # after the first batch (whose window also holds the query's start), every counted job ran in
    # the stream's job group: the count holds the batch's jobs and nothing else
    groups = {store[job] for job in range(bounds[1], bounds[-1])}
    assert len(groups) == 1 and None not in groups


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


@pytest.mark.slow
def test_bench_soak_samples_every_batch_of_an_interval_stream(spark, tmp_path):
    from app.tables import SILVER

    out = tmp_path / "soak.json"
    argv = ["--smoke", "--sections", "soak", "--work-dir", str(tmp_path / "work"), "--out", str(out)]
    assert main(argv) == 0
    soak = json.loads(out.read_text())["soak"]
    samples = soak["samples"]
    assert [s["batch"] for s in samples] == [1, 2, 3]  # --smoke: 3 batches, a sample after each
    for s in samples:
        assert s["python_rss_mb"] > 0 and s["jvm_rss_mb"] > 0 and s["jvm_heap_after_gc_mb"] > 0
        assert s["python_fds"] > 0 and s["jvm_fds"] > 0
    # one commit per batch: the checkpoint and silver's log grow with the batches of this tiny run
    assert samples[0]["checkpoint_files"] < samples[1]["checkpoint_files"] < samples[2]["checkpoint_files"]
    logs = [s["delta_log_files"][SILVER] for s in samples]
    assert logs[0] < logs[1] < logs[2]
    # --smoke ages the logs after batch 2: too few commits for a checkpoint, so nothing is deleted yet
    assert soak["logs_aged_after"] == 2 and soak["logs_at_ageing"][SILVER] == logs[1]
    assert soak["log_cleanup"][SILVER] == [logs[1], logs[2]]
    growth = soak["growth_per_100"]
    assert {"jvm_heap_after_gc_mb", "jvm_fds", "checkpoint_bytes", f"delta_log_files:{SILVER}"} <= set(growth)
    # after the warm-up (batch 1): batches 2 and 3, so the slope is their difference per 100 batches
    assert growth["checkpoint_files"] == pytest.approx(
        100 * (samples[2]["checkpoint_files"] - samples[1]["checkpoint_files"])
    )


def test_soak_growth_per_100_is_the_least_squares_slope():
    from bench.soak import growth_per_100

    assert growth_per_100([(10, 5.0), (20, 6.0), (30, 7.0)]) == pytest.approx(10.0)
    assert growth_per_100([(10, 5.0), (20, 9.0), (30, 5.0)]) == pytest.approx(0.0)
    assert math.isnan(growth_per_100([(10, 5.0)]))


def test_bench_soak_refuses_more_coins_than_one_file_holds(capsys):
    with pytest.raises(SystemExit):
        main(["--sections", "soak", "--soak-coins", "251"])
    assert "--soak-coins must be 1..250" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--sections", "soak", "--soak-age-logs-at", "-1"])
    assert "--soak-age-logs-at must be 0 (never) or a batch number" in capsys.readouterr().err


def test_soak_ages_every_delta_log_file_by_the_same_amount_keeping_their_order(tmp_path):
    from app.tables import GOLD_METRICS, SILVER
    from bench.soak import LOG_AGE_DAYS, SoakResult, SoakSample, age_delta_logs

    layout = Layout.from_root(str(tmp_path / "lake"))
    now = 1_800_000_000
    for table, files in ((SILVER, 3), (GOLD_METRICS, 2)):
        log = os.path.join(layout.table(table), "_delta_log")
        os.makedirs(os.path.join(log, "_staged_commits"))  # a folder: left alone, not counted
        for version in range(files):
            path = os.path.join(log, f"{version:020d}.json")
            with open(path, "w") as fh:
                fh.write("{}")
            os.utime(path, (now + version, now + version))

    assert age_delta_logs(layout, LOG_AGE_DAYS) == {SILVER: 3, GOLD_METRICS: 2}
    log = os.path.join(layout.table(SILVER), "_delta_log")
    times = [os.stat(os.path.join(log, f"{v:020d}.json")).st_mtime for v in range(3)]
    assert times == [now - LOG_AGE_DAYS * 86_400 + v for v in range(3)]  # same shift, same order

    def sample(batch, silver, gold):
        return SoakSample(batch, 1.0, 1.0, 1.0, 1, 1, 1, 1, {SILVER: silver, GOLD_METRICS: gold})

    res = SoakResult(coins=1, batches=30, interval="1s", sample_every=10, warmup=0)
    res.samples = [sample(10, 40, 40), sample(20, 12, 80), sample(30, 50, 120)]
    assert res.log_cleanup() == {}  # never aged
    res.logs_aged_after, res.logs_at_ageing = 10, {SILVER: 40, GOLD_METRICS: 40}
    # silver's cleanup deleted files after the ageing; gold's log only grew
    assert res.log_cleanup() == {GOLD_METRICS: (40, 80), SILVER: (40, 12)}


def test_bare_stream_cycles_count_between_batch_ends_like_the_pipeline():
    from bench.spark_runs import cycle_seconds

    def progress(ts: str, ms: int, rows: int) -> dict:
        return {"timestamp": ts, "durationMs": {"triggerExecution": ms}, "numInputRows": rows}

    started = 1_700_000_000.0  # 2023-11-14T22:13:20Z
    runs = [
        progress("2023-11-14T22:13:22.000Z", 1_500, 10),  # ends at +3.5 s: the first cycle holds the start
        progress("2023-11-14T22:13:24.000Z", 1_000, 10),  # ends at +5.0 s: 0.5 s between triggers counts
        progress("2023-11-14T22:13:25.500Z", 200, 0),  # no data: not a batch, its time goes to the next
        progress("2023-11-14T22:13:26.000Z", 1_000, 10),  # ends at +7.0 s
    ]
    assert cycle_seconds(runs, started) == pytest.approx([3.5, 1.5, 2.0])
    assert cycle_seconds([], started) == []


def test_a_check_name_wider_than_the_table_column_is_refused():
    report = Report()
    report.check("x" * NAME_WIDTH, 1.0)
    with pytest.raises(ValueError, match="longer than 34"):
        report.check("x" * (NAME_WIDTH + 1), 1.0)
    assert [c.name for c in report.checks] == ["x" * NAME_WIDTH]
