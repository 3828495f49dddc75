"""The silver MERGE on Delta, fed by the kernels' SCD2 plan as the handler feeds it.

The plan's own properties (collapsing, same-instant conflicts, the bound, any batching) are pandas
tests of the kernels (``tests/batch/kernels/test_scd2.py``); these tests are about what the one
MERGE does to a Delta table with such a plan: late rows, one commit, a re-run, the scope's SQL.
"""

from __future__ import annotations

import json

import pytest
from chispa import assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from app.batch.frames import Rows, collect
from app.batch.handler import with_observation_columns
from app.batch.kernels.batch import OBSERVATION_COLUMNS, plan_batch
from app.batch.placement import output_schemas
from app.quality.expectations import default_rules, split_valid_invalid
from app.quality.parsing import parse_bronze
from app.sinks.delta.scd2 import DEFAULT_MAX_COLLAPSED, MergeScope, apply_scd2_merge
from app.spark import ARROW_LOCAL_RELATION_CONF
from app.tables import ensure_table
from tests.helpers import T0, assert_scd2_invariants, coin_record, iso, minutes, silver_content

FILES_DDL = "value string, source_file string"


def _obs_files(spark, files: list[tuple[str, object, list[dict]]]):
    """Observations of bronze files given as ``(name, fetched_at, records)``."""
    rows = [
        (json.dumps({"request": {"vs_currency": "usd"}, "fetched_at": iso(fetched), "data": recs}), name)
        for name, fetched, recs in files
    ]
    valid, _ = split_valid_invalid(parse_bronze(spark.createDataFrame(rows, FILES_DDL)), default_rules())
    return valid.transform(with_observation_columns)


def _obs(spark, records_by_file: dict[str, list[dict]], fetched=T0):
    return _obs_files(spark, [(name, fetched, recs) for name, recs in records_by_file.items()])


def _apply(spark, path, obs_df, batch_id):
    """What the handler does for silver on the driver placement, for a table at ``path``.

    Returns:
        ``(plan, touched)`` of the kernels.
    """
    before = collect(spark.read.format("delta").load(path))
    obs = collect(obs_df.select(*OBSERVATION_COLUMNS))
    plan, touched = plan_batch(obs, before, batch_id=batch_id, max_collapsed=DEFAULT_MAX_COLLAPSED)
    staged = plan.loc[plan["_action"] != "none"].reset_index(drop=True)
    source_df = Rows(output_schemas()["silver_staged"], pdf=staged).spark(spark)
    mins = obs_df.agg(F.date_format(F.min("valid_from"), "yyyy-MM-dd HH:mm:ss.SSSSSS")).first()[0]
    apply_scd2_merge(
        spark,
        path,
        source_df,
        MergeScope(("usd",), mins),
        app_id="test-app",
        batch_id=batch_id,
        source_ready=True,
    )
    return plan, touched


def _naive(ts):
    return ts.replace(tzinfo=None)


@pytest.fixture(params=["local relation", "arrow batches"])
def source_form(request, spark):
    """How the MERGE source enters Spark: held in the plan (a steady batch's), or as Arrow batches
    (an RDD: a large batch's, above ``ARROW_LOCAL_RELATION_CONF``)."""
    before = spark.conf.get(ARROW_LOCAL_RELATION_CONF)
    if request.param == "arrow batches":
        spark.conf.set(ARROW_LOCAL_RELATION_CONF, "1b")
    yield request.param
    spark.conf.set(ARROW_LOCAL_RELATION_CONF, before)


def test_late_observation_is_inserted_and_neighbours_fixed(spark, tmp_path, source_form):
    path = str(tmp_path / "silver")
    ensure_table(spark, "silver_crypto_clean", path)
    plan, _ = _apply(
        spark,
        path,
        _obs(spark, {"f1.json": [coin_record("btc", 1.0, T0), coin_record("btc", 3.0, T0 + minutes(10))]}),
        0,
    )
    source = Rows(output_schemas()["silver_staged"], pdf=plan.loc[plan["_action"] != "none"]).spark(spark)
    in_plan = "LocalRelation" in source._jdf.queryExecution().logical().toString()
    assert in_plan == (source_form == "local relation")
    _, touched = _apply(spark, path, _obs(spark, {"f2.json": [coin_record("btc", 2.0, T0 + minutes(5))]}), 1)

    silver = spark.read.format("delta").load(path)
    assert_scd2_invariants(silver)
    rows = silver.orderBy("valid_from").collect()
    assert [r["current_price"] for r in rows] == [1.0, 2.0, 3.0]
    assert rows[0]["valid_to"] == rows[1]["valid_from"]
    assert [r["updated_batch_id"] for r in rows] == [1, 1, 0]
    assert [r["batch_id"] for r in rows] == [0, 1, 0]
    assert touched["from_ts"].tolist() == [_naive(T0)]
    metrics = DeltaTable.forPath(spark, path).history(1).first()["operationMetrics"]
    assert metrics["numTargetRowsInserted"] == "1"
    assert metrics["numTargetRowsUpdated"] == "1"


def test_merge_is_a_function_of_the_set_of_records(spark, tmp_path):
    files = {
        "f1.json": [coin_record("btc", 1.0, T0), coin_record("eth", 10.0, T0)],
        "f2.json": [coin_record("btc", 2.0, T0 + minutes(1)), coin_record("eth", 10.0, T0 + minutes(1))],
        "f3.json": [coin_record("btc", 3.0, T0 + minutes(2)), coin_record("eth", 11.0, T0 + minutes(2))],
    }
    results = []
    # all at once, and one file per batch in an order that brings the latest first (the plan's
    # order independence in every batching is the kernels' test; this is the MERGE applying it)
    for i, batches in enumerate(
        [[["f1.json", "f2.json", "f3.json"]], [["f3.json"], ["f1.json"], ["f2.json"]]]
    ):
        path = str(tmp_path / f"silver{i}")
        ensure_table(spark, "silver_crypto_clean", path)
        for batch_id, names in enumerate(batches):
            _apply(spark, path, _obs(spark, {name: files[name] for name in names}), batch_id)
        df = spark.read.format("delta").load(path)
        assert_scd2_invariants(df)
        results.append(silver_content(df))
    assert_df_equality(results[0], results[1], ignore_row_order=True, ignore_nullable=True)
    assert results[0].count() == 5  # btc 1, 2, 3; eth 10 (twice: collapsed), 11


def test_rerun_of_committed_batch_changes_nothing(spark, tmp_path):
    path = str(tmp_path / "silver")
    ensure_table(spark, "silver_crypto_clean", path)
    obs = _obs(spark, {"f1.json": [coin_record("btc", 1.0, T0)]})
    _apply(spark, path, obs, 0)
    version = DeltaTable.forPath(spark, path).history(1).first()["version"]
    _apply(spark, path, _obs(spark, {"f1.json": [coin_record("btc", 9.0, T0 + minutes(1))]}), 0)

    assert DeltaTable.forPath(spark, path).history(1).first()["version"] == version
    assert [tuple(r) for r in spark.read.format("delta").load(path).select("current_price").collect()] == [
        (1.0,)
    ]


def test_merge_splits_collapsed_version_in_one_commit(spark, tmp_path):
    path = str(tmp_path / "silver")
    ensure_table(spark, "silver_crypto_clean", path)
    t1, t2, t3 = T0, T0 + minutes(1), T0 + minutes(2)
    obs0 = _obs_files(
        spark,
        [("f1.json", t1, [coin_record("btc", 1.0, t1)]), ("f3.json", t3, [coin_record("btc", 1.0, t3)])],
    )
    _apply(spark, path, obs0, 0)
    before = DeltaTable.forPath(spark, path).history(1).first()["version"]
    plan, touched = _apply(
        spark, path, _obs_files(spark, [("f2.json", t2, [coin_record("btc", 2.0, t2)])]), 1
    )

    assert DeltaTable.forPath(spark, path).history(1).first()["version"] == before + 1
    silver = spark.read.format("delta").load(path)
    assert_scd2_invariants(silver)
    # the same records in one batch on a fresh table
    at_once = str(tmp_path / "at_once")
    ensure_table(spark, "silver_crypto_clean", at_once)
    _apply(
        spark,
        at_once,
        _obs_files(
            spark,
            [
                ("f1.json", t1, [coin_record("btc", 1.0, t1)]),
                ("f2.json", t2, [coin_record("btc", 2.0, t2)]),
                ("f3.json", t3, [coin_record("btc", 1.0, t3)]),
            ],
        ),
        0,
    )
    expected = silver_content(spark.read.format("delta").load(at_once))
    assert_df_equality(expected, silver_content(silver), ignore_row_order=True, ignore_nullable=True)
    assert expected.count() == 3
    assert sorted(zip(plan["_origin"], plan["_outcome"], plan["_action"], strict=True)) == [
        ("batch", "kept", "insert"),  # Y@t2 inserted
        ("existing", "kept", "insert"),  # X@t3 back as its own version (was collapsed into X@t1)
        ("existing", "kept", "update"),  # X@t1: valid_to and collapsed list changed
    ]
    assert list(zip(touched["from_ts"], touched["to_ts"], strict=True)) == [(_naive(t1), _naive(t2))]


def test_scope_condition_quotes_hostile_currency_literally(spark):
    from app.sinks.delta.scd2 import MergeScope, scope_condition

    scope = MergeScope(currencies=("us'd", "eur\\"), min_valid_from="2026-01-01 00:00:00.000000")
    target_df = spark.createDataFrame(
        [("us'd", None), ("usd", None), ("eur\\", None)], "vs_currency string, valid_to timestamp"
    )
    kept = {r["vs_currency"] for r in target_df.alias("t").filter(scope_condition(scope)).collect()}
    assert kept == {"us'd", "eur\\"}
