from __future__ import annotations

from delta.tables import DeltaTable

from app.batch.handler import BatchHandler
from app.config import load_settings
from app.paths import Layout
from app.sources.bronze import read_bronze_files
from app.tables import METADATA
from tests.helpers import (
    T0,
    assert_scd2_invariants,
    coin_record,
    minutes,
    write_bronze_page,
    write_raw_bronze,
)


def _versions(spark, layout):
    return {
        name: DeltaTable.forPath(spark, layout.table(name)).history(1).first()["version"]
        for name in ("silver_crypto_clean", "bronze_quarantine", "pipeline_metadata")
    }


def test_handler_writes_silver_quarantine_metadata_and_runs_stages(spark, tmp_path):
    layout = Layout.from_root(str(tmp_path))
    settings = load_settings(data_dir=str(tmp_path))
    files = [
        write_bronze_page(
            layout.bronze_root,
            T0,
            [
                coin_record("btc", 1.0, T0),
                coin_record("eth", 10.0, T0),
                coin_record("bad", -1.0, T0, market_cap=1, low_24h=0.1, high_24h=2.0),
            ],
        ),
        write_bronze_page(
            layout.bronze_root,
            T0 + minutes(1),
            [coin_record("btc", 2.0, T0 + minutes(1)), coin_record("eth", 10.0, T0)],
        ),
        write_raw_bronze(layout.bronze_root, T0, "broken.json", "<html>oops</html>"),
    ]
    seen = []

    def probe(ctx):
        seen.append(sorted((r["coin_id"], r["from_ts"], r["to_ts"]) for r in ctx.touched_df.collect()))
        return {"probed": 1}

    handler = BatchHandler(layout=layout, settings=settings, app_id="test-app", stages=[probe])
    meta = handler.process(read_bronze_files(spark, files), 0)

    assert (meta.files, meta.records_read, meta.new_versions, meta.duplicates, meta.quarantined) == (
        3,
        6,
        3,
        1,
        2,
    )
    assert meta.reconciles
    assert meta.quarantined_by_rule == {"current_price_not_positive": 1, "unparseable": 1}
    assert meta.details["stages"] == {"probe": {"probed": 1}}
    silver = spark.read.format("delta").load(layout.table("silver_crypto_clean"))
    assert_scd2_invariants(silver)
    assert silver.count() == 3
    t0 = T0.replace(tzinfo=None)
    assert seen == [[("btc", t0, (T0 + minutes(1)).replace(tzinfo=None)), ("eth", t0, t0)]]
    quarantine = spark.read.format("delta").load(layout.table("bronze_quarantine")).collect()
    assert sorted(r["failed_rules"][0] for r in quarantine) == ["current_price_not_positive", "unparseable"]
    assert all(r["batch_id"] == 0 and r["raw_record"] for r in quarantine)
    md = spark.read.format("delta").load(layout.table("pipeline_metadata")).collect()
    assert [(r["batch_id"], r["status"], r["records_read"]) for r in md] == [(0, "ok", 6)]

    # re-running the committed batch changes no table, and still hands the stages the same touched set
    before = _versions(spark, layout)
    again = handler.process(read_bronze_files(spark, files), 0)
    assert _versions(spark, layout) == before
    assert seen[1] == seen[0]
    assert (again.new_versions, again.duplicates, again.quarantined) == (3, 1, 2)
    assert again.details["silver"]["already_committed"] is True


def test_handler_next_batch_with_only_duplicates_adds_no_versions(spark, tmp_path):
    layout = Layout.from_root(str(tmp_path))
    settings = load_settings(data_dir=str(tmp_path))
    f1 = write_bronze_page(layout.bronze_root, T0, [coin_record("btc", 1.0, T0)])
    f2 = write_bronze_page(
        layout.bronze_root,
        T0 + minutes(1),
        [coin_record("btc", 1.0, T0), coin_record("btc", 1.0, T0 + minutes(1))],
    )
    handler = BatchHandler(layout=layout, settings=settings, app_id="test-app")
    handler.process(read_bronze_files(spark, [f1]), 0)
    meta = handler.process(read_bronze_files(spark, [f2]), 1)

    assert (meta.records_read, meta.new_versions, meta.unchanged, meta.duplicates) == (2, 0, 1, 1)
    # no new version, but the current one records the collapsed observation at T0+1m
    assert meta.details["silver"]["inserts"] + meta.details["silver"]["updates"] == 1
    assert spark.read.format("delta").load(layout.table("silver_crypto_clean")).count() == 1


def test_handler_scores_each_batch_and_alerts_once_when_below_the_minimum(spark, tmp_path):
    layout = Layout.from_root(str(tmp_path))
    settings = load_settings(data_dir=str(tmp_path), dq_min_score=0.9, dq_max_rule_failures=5)
    page = write_bronze_page(
        layout.bronze_root,
        T0,
        [
            coin_record("btc", 1.0, T0),
            coin_record("eth", 10.0, T0),
            coin_record("sol", 3.0, T0, name=None),  # warn: kept, but fails an expectation
            coin_record("bad", -1.0, T0, market_cap=1, low_24h=0.1, high_24h=2.0),  # quarantined
        ],
    )
    handler = BatchHandler(layout=layout, settings=settings, app_id="test-app")

    meta = handler.process(read_bronze_files(spark, [page]), 0)

    assert (meta.records_read, meta.dq_passed, meta.dq_score) == (4, 2, 0.5)
    assert meta.dq_score_by_rule == {"current_price_not_positive": 0.75, "name_is_null": 0.75}
    alert = meta.details["dq_alert"]
    assert alert["dq_alerts_raised"] == 1 and alert["reasons"][0].startswith("score 0.5000 is below")
    row = spark.read.format("delta").load(layout.table(METADATA)).first()
    assert (row["dq_passed"], row["dq_score"], row["dq_score_by_rule"]) == (
        2,
        0.5,
        {"current_price_not_positive": 0.75, "name_is_null": 0.75},
    )
    with open(tmp_path / "alerts" / "delivered.jsonl") as fh:
        assert fh.read().splitlines() == ["dq|test-app|0"]

    # the same batch re-run (a crash before the checkpoint commit) does not alert again
    again = handler.process(read_bronze_files(spark, [page]), 0)
    assert again.dq_score == 0.5 and again.details["dq_alert"]["dq_alerts_raised"] == 0

    # a batch without records has no score, and no alert
    empty = handler.process(read_bronze_files(spark, [page]).limit(0), 1)
    assert (empty.records_read, empty.dq_passed, empty.dq_score, empty.dq_score_by_rule) == (0, 0, None, {})
    assert "dq_alert" not in empty.details


def test_handler_truncates_a_huge_error_before_it_crosses_into_the_stream(spark, tmp_path):
    import pytest

    from app.batch.handler import MAX_RAISED_MESSAGE, BatchFailedError

    layout = Layout.from_root(str(tmp_path))
    settings = load_settings(data_dir=str(tmp_path))
    files = [write_bronze_page(layout.bronze_root, T0, [coin_record("btc", 1.0, T0)])]

    def loud(ctx):
        raise RuntimeError("row data " * 100_000)

    def quiet(ctx):
        raise RuntimeError("short")

    handler = BatchHandler(layout=layout, settings=settings, app_id="test-app", stages=[loud])
    with pytest.raises(BatchFailedError) as info:
        handler.process(read_bronze_files(spark, files), 0)
    assert str(info.value).startswith("RuntimeError: row data") and len(str(info.value)) <= MAX_RAISED_MESSAGE
    assert isinstance(info.value.__cause__, RuntimeError)

    handler = BatchHandler(layout=layout, settings=settings, app_id="test-app", stages=[quiet])
    with pytest.raises(RuntimeError, match="^short$"):
        handler.process(read_bronze_files(spark, files), 1)


def _jobs_run(spark) -> int:
    return spark.sparkContext._jsc.sc().statusStore().jobsList(None).size()


def test_release_runs_no_spark_job_when_a_dependent_cache_was_never_loaded(spark, tmp_path):
    from pyspark.sql import functions as F

    from app.batch.handler import release

    path = str(tmp_path / "t")
    spark.range(100).withColumn("k", F.col("id") % 7).write.format("delta").save(path)
    loaded_df = spark.read.format("delta").load(path).filter("id > 3").persist()
    loaded_df.count()
    counted_df = loaded_df.groupBy("k").count().persist()  # like the touched set: never loaded
    filtered_df = counted_df.filter("count > 1").persist()
    chain = [loaded_df, counted_df, filtered_df]

    before = _jobs_run(spark)
    release(chain)

    # Oldest first, Spark re-plans the unloaded dependents over the Delta scan (6 jobs measured).
    assert _jobs_run(spark) == before
    assert not any(df.storageLevel.useMemory or df.storageLevel.useDisk for df in chain)
