from __future__ import annotations

import itertools
import json

from chispa import assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from app.quality.expectations import default_rules, split_valid_invalid
from app.quality.parsing import parse_bronze
from app.sinks.handler import with_observation_columns
from app.sinks.scd2 import (
    SILVER_COLUMNS,
    MergeScope,
    apply_scd2_merge,
    build_scd2_plan,
    build_touched,
    select_tail,
)
from app.tables import ensure_table
from tests.helpers import T0, assert_scd2_invariants, coin_record, iso, minutes, silver_content

FILES_DDL = "value string, source_file string"


def _obs(spark, records_by_file: dict[str, list[dict]], fetched=T0):
    rows = [
        (json.dumps({"request": {"vs_currency": "usd"}, "fetched_at": iso(fetched), "data": recs}), name)
        for name, recs in records_by_file.items()
    ]
    valid, _ = split_valid_invalid(parse_bronze(spark.createDataFrame(rows, FILES_DDL)), default_rules())
    return valid.transform(with_observation_columns)


def _empty_silver(spark):
    from app.tables import SILVER_DDL

    return spark.createDataFrame([], SILVER_DDL)


def _apply(spark, path, obs_df, batch_id):
    """What the handler does for silver, for a table at ``path``."""
    silver = spark.read.format("delta").load(path)
    plan = build_scd2_plan(obs_df, select_tail(silver, obs_df), batch_id=batch_id).localCheckpoint()
    mins = obs_df.agg(F.date_format(F.min("valid_from"), "yyyy-MM-dd HH:mm:ss.SSSSSS")).first()[0]
    scope = MergeScope(("usd",), mins)
    apply_scd2_merge(
        spark, path, plan.filter("_action != 'none'"), scope, app_id="test-app", batch_id=batch_id
    )
    return plan


def test_build_scd2_plan_versions_collapses_and_dedupes(spark):
    recs = [
        coin_record("btc", 1.0, T0),
        coin_record("btc", 1.0, T0 + minutes(1)),  # same values: unchanged
        coin_record("btc", 2.0, T0 + minutes(2)),
        coin_record("btc", 3.0, T0 + minutes(2)),  # same instant, same file, bigger hash or smaller: one wins
        coin_record("eth", 5.0, T0, symbol=None),  # quarantined before the plan
    ]
    obs = _obs(spark, {"a.json": recs})
    plan = build_scd2_plan(obs, select_tail(_empty_silver(spark), obs), batch_id=7)

    outcomes = sorted((r["_outcome"], r["_action"]) for r in plan.collect())
    assert outcomes == [("duplicate", "none"), ("kept", "upsert"), ("kept", "upsert"), ("unchanged", "none")]
    kept = plan.filter("_outcome = 'kept'").select(*SILVER_COLUMNS)
    assert_scd2_invariants(kept)
    assert {r["batch_id"] for r in kept.collect()} == {7}
    touched = build_touched(plan).collect()
    assert [(r["coin_id"], r["from_ts"], r["to_ts"]) for r in touched] == [
        ("btc", T0.replace(tzinfo=None), (T0 + minutes(2)).replace(tzinfo=None))
    ]


def test_late_observation_is_inserted_and_neighbours_fixed(spark, tmp_path):
    path = str(tmp_path / "silver")
    ensure_table(spark, "silver_crypto_clean", path)
    _apply(
        spark,
        path,
        _obs(spark, {"f1.json": [coin_record("btc", 1.0, T0), coin_record("btc", 3.0, T0 + minutes(10))]}),
        0,
    )
    plan = _apply(spark, path, _obs(spark, {"f2.json": [coin_record("btc", 2.0, T0 + minutes(5))]}), 1)

    silver = spark.read.format("delta").load(path)
    assert_scd2_invariants(silver)
    rows = silver.orderBy("valid_from").collect()
    assert [r["current_price"] for r in rows] == [1.0, 2.0, 3.0]
    assert rows[0]["valid_to"] == rows[1]["valid_from"]
    assert [r["updated_batch_id"] for r in rows] == [1, 1, 0]
    assert [r["batch_id"] for r in rows] == [0, 1, 0]
    touched = build_touched(plan).first()
    assert touched["from_ts"] == T0.replace(tzinfo=None)
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
    for i, order in enumerate(
        [
            ("f1.json", "f2.json", "f3.json"),
            ("f3.json", "f1.json", "f2.json"),
            ("f2.json", "f3.json", "f1.json"),
        ]
    ):
        path = str(tmp_path / f"silver{i}")
        ensure_table(spark, "silver_crypto_clean", path)
        for batch_id, name in enumerate(order):
            _apply(spark, path, _obs(spark, {name: files[name]}), batch_id)
        df = spark.read.format("delta").load(path)
        assert_scd2_invariants(df)
        results.append(silver_content(df))
    for other in results[1:]:
        assert_df_equality(results[0], other, ignore_row_order=True, ignore_nullable=True)
    assert results[0].count() == 5  # btc 1, 2, 3; eth 10 (twice: collapsed), 11


def test_rerun_of_committed_batch_changes_nothing(spark, tmp_path):
    path = str(tmp_path / "silver")
    ensure_table(spark, "silver_crypto_clean", path)
    obs = _obs(spark, {"f1.json": [coin_record("btc", 1.0, T0)]})
    _apply(spark, path, obs, 0)
    version = DeltaTable.forPath(spark, path).history(1).first()["version"]
    _apply(spark, path, _obs(spark, {"f1.json": [coin_record("btc", 9.0, T0 + minutes(1))]}), 0)

    assert DeltaTable.forPath(spark, path).history(1).first()["version"] == version
    assert list(itertools.chain(spark.read.format("delta").load(path).select("current_price").collect())) == [
        (1.0,)
    ]
