from __future__ import annotations

import itertools
import json

from chispa import assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from app.batch.handler import with_observation_columns
from app.quality.expectations import default_rules, split_valid_invalid
from app.quality.parsing import parse_bronze
from app.sinks.delta.scd2 import (
    DEFAULT_MAX_COLLAPSED,
    SILVER_COLUMNS,
    MergeScope,
    apply_scd2_merge,
)
from app.tables import ensure_table
from tests.helpers import T0, assert_scd2_invariants, coin_record, iso, minutes, silver_content
from tests.reference.scd2_spark import build_scd2_plan, build_touched, select_tail

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
    assert outcomes == [("duplicate", "none"), ("kept", "insert"), ("kept", "insert"), ("unchanged", "none")]
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


# --- order independence with collapsed observations and same-instant conflicts ---------------------

COMPARE_DROP = ("batch_id", "updated_batch_id", "source_file")


def _obs_files(spark, files: list[tuple[str, object, list[dict]]]):
    """Observations of bronze files given as ``(name, fetched_at, records)``."""
    rows = [
        (json.dumps({"request": {"vs_currency": "usd"}, "fetched_at": iso(fetched), "data": recs}), name)
        for name, fetched, recs in files
    ]
    valid, _ = split_valid_invalid(parse_bronze(spark.createDataFrame(rows, FILES_DDL)), default_rules())
    return valid.transform(with_observation_columns)


def _merge_in_memory(silver, plan):
    """What the silver MERGE does to a table, on DataFrames: drop the rows the plan writes, add inserts and updates."""
    changes = plan.filter("_action != 'none'")
    key = ["coin_id", "vs_currency", "valid_from"]
    return (
        silver.join(changes.select(*key), key, "left_anti")
        .unionByName(changes.filter("_action IN ('insert', 'update')").select(*SILVER_COLUMNS))
        .localCheckpoint()
    )


def _silver_in_batches(
    spark,
    files: dict[str, tuple[object, list[dict]]],
    batches: list[list[str]],
    max_collapsed: int = DEFAULT_MAX_COLLAPSED,
):
    silver = _empty_silver(spark)
    for batch_id, names in enumerate(batches):
        obs = _obs_files(spark, [(n, *files[n]) for n in names])
        plan = build_scd2_plan(obs, select_tail(silver, obs), batch_id=batch_id, max_collapsed=max_collapsed)
        silver = _merge_in_memory(silver, plan)
    return silver


def _assert_same_silver(expected, actual) -> None:
    assert_df_equality(
        expected.drop(*COMPARE_DROP),
        actual.drop(*COMPARE_DROP),
        ignore_row_order=True,
        ignore_column_order=True,
        ignore_nullable=True,
    )


def _naive(ts):
    return ts.replace(tzinfo=None)


def test_late_observation_splits_a_collapsed_version(spark):
    t1, t2, t3 = T0, T0 + minutes(1), T0 + minutes(2)
    files = {
        "f1.json": (t1, [coin_record("btc", 1.0, t1)]),
        "f3.json": (t3, [coin_record("btc", 1.0, t3)]),  # same values as t1: collapsed into it
        "f2.json": (t2, [coin_record("btc", 2.0, t2)]),  # fetched at t2, arrives last
    }
    at_once = _silver_in_batches(spark, files, [["f1.json", "f3.json", "f2.json"]])
    rows = at_once.orderBy("valid_from").collect()
    assert [(r["valid_from"], r["valid_to"], r["current_price"]) for r in rows] == [
        (_naive(t1), _naive(t2), 1.0),
        (_naive(t2), _naive(t3), 2.0),
        (_naive(t3), None, 1.0),
    ]
    assert [r["extracted_at"] for r in rows] == [_naive(t1), _naive(t2), _naive(t3)]
    assert all(r["collapsed_observations"] == [] for r in rows)

    first = _silver_in_batches(spark, files, [["f1.json", "f3.json"]]).collect()
    assert len(first) == 1
    assert [tuple(o) for o in first[0]["collapsed_observations"]] == [(_naive(t3), _naive(t3), "f3.json")]
    assert first[0]["is_current"] and first[0]["valid_to"] is None

    for batches in (
        [["f1.json", "f3.json"], ["f2.json"]],
        [["f3.json"], ["f1.json"], ["f2.json"]],
        [["f2.json"], ["f3.json"], ["f1.json"]],
    ):
        incremental = _silver_in_batches(spark, files, batches)
        assert_scd2_invariants(incremental)
        _assert_same_silver(at_once, incremental)


def test_same_instant_conflicts_resolve_by_the_set_of_records(spark):
    t0, t = T0, T0 + minutes(10)
    files = {
        "f0.json": (T0, [coin_record("btc", 5.0, t0), coin_record("eth", 9.0, t0)]),
        # btc at t: A (= t0's values) fetched at +5m and +1m, B fetched at +3m -> A wins (fetch +1m)
        # and collapses into t0; eth at t: 10 fetched at +5m, 11 fetched at +3m -> 11 wins.
        "fa.json": (T0 + minutes(15), [coin_record("btc", 5.0, t), coin_record("eth", 10.0, t)]),
        "fb.json": (T0 + minutes(13), [coin_record("btc", 6.0, t), coin_record("eth", 11.0, t)]),
        "fc.json": (T0 + minutes(11), [coin_record("btc", 5.0, t)]),
    }
    at_once = _silver_in_batches(spark, files, [sorted(files)])
    rows = {(r["coin_id"], r["valid_from"]): r for r in at_once.collect()}
    assert sorted(rows) == [("btc", _naive(t0)), ("eth", _naive(t0)), ("eth", _naive(t))]
    btc = rows[("btc", _naive(t0))]
    assert (btc["current_price"], btc["is_current"]) == (5.0, True)
    assert [tuple(o) for o in btc["collapsed_observations"]] == [
        (_naive(t), _naive(T0 + minutes(11)), "fc.json")
    ]
    eth = rows[("eth", _naive(t))]
    assert (eth["current_price"], eth["extracted_at"]) == (11.0, _naive(T0 + minutes(13)))

    for order in (
        ["f0.json", "fa.json", "fb.json", "fc.json"],
        ["fc.json", "fb.json", "fa.json", "f0.json"],
        ["fa.json", "f0.json", "fc.json", "fb.json"],
    ):
        incremental = _silver_in_batches(spark, files, [[name] for name in order])
        assert_scd2_invariants(incremental)
        _assert_same_silver(at_once, incremental)


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
    plan = _apply(spark, path, _obs_files(spark, [("f2.json", t2, [coin_record("btc", 2.0, t2)])]), 1)

    assert DeltaTable.forPath(spark, path).history(1).first()["version"] == before + 1
    silver = spark.read.format("delta").load(path)
    assert_scd2_invariants(silver)
    expected = _silver_in_batches(
        spark,
        {
            "f1.json": (t1, [coin_record("btc", 1.0, t1)]),
            "f2.json": (t2, [coin_record("btc", 2.0, t2)]),
            "f3.json": (t3, [coin_record("btc", 1.0, t3)]),
        },
        [["f1.json", "f2.json", "f3.json"]],
    )
    _assert_same_silver(expected, silver)
    assert sorted((r["_origin"], r["_outcome"], r["_action"]) for r in plan.collect()) == [
        ("batch", "kept", "insert"),  # Y@t2 inserted
        ("existing", "kept", "insert"),  # X@t3 back as its own version (was collapsed into X@t1)
        ("existing", "kept", "update"),  # X@t1: valid_to and collapsed list changed
    ]
    touched = build_touched(plan).first()
    assert (touched["from_ts"], touched["to_ts"]) == (_naive(t1), _naive(t2))


def test_scope_condition_quotes_hostile_currency_literally(spark):
    from app.sinks.delta.scd2 import MergeScope, scope_condition

    scope = MergeScope(currencies=("us'd", "eur\\"), min_valid_from="2026-01-01 00:00:00.000000")
    target_df = spark.createDataFrame(
        [("us'd", None), ("usd", None), ("eur\\", None)], "vs_currency string, valid_to timestamp"
    )
    kept = {r["vs_currency"] for r in target_df.alias("t").filter(scope_condition(scope)).collect()}
    assert kept == {"us'd", "eur\\"}


# --- the bound on collapsed_observations (COINLAKE_MAX_COLLAPSED_OBSERVATIONS) ---------------------


def _flat_files(n: int) -> dict[str, tuple[object, list[dict]]]:
    """``n`` fetches a minute apart of one coin whose values never change while last_updated moves."""
    return {f"f{i}.json": (T0 + minutes(i), [coin_record("btc", 1.0, T0 + minutes(i))]) for i in range(n)}


def _versions(silver):
    return [
        (
            r["valid_from"],
            r["valid_to"],
            r["current_price"],
            [o["observed_at"] for o in r["collapsed_observations"]],
        )
        for r in silver.orderBy("valid_from").collect()
    ]


def test_build_scd2_plan_keeps_the_latest_collapsed_observations_in_any_batching(spark):
    files = _flat_files(6)
    names = list(files)
    at_once = _silver_in_batches(spark, files, [names], max_collapsed=3)
    one_by_one = _silver_in_batches(spark, files, [[n] for n in names], max_collapsed=3)
    backwards = _silver_in_batches(spark, files, [[n] for n in reversed(names)], max_collapsed=3)
    expected = [(_naive(T0), None, 1.0, [_naive(T0 + minutes(i)) for i in (3, 4, 5)])]
    assert _versions(at_once) == expected
    _assert_same_silver(at_once, one_by_one)
    _assert_same_silver(at_once, backwards)


def test_order_independence_holds_within_the_bound(spark):
    files = _flat_files(5)  # btc 1.0 at T0..T0+4 min: four collapsed observations, the bound is 4
    files["late.json"] = (T0 + minutes(2.5), [coin_record("btc", 2.0, T0 + minutes(2.5))])
    names = sorted(files)
    at_once = _silver_in_batches(spark, files, [names], max_collapsed=4)
    assert [v[:3] for v in _versions(at_once)] == [
        (_naive(T0), _naive(T0 + minutes(2.5)), 1.0),
        (_naive(T0 + minutes(2.5)), _naive(T0 + minutes(3)), 2.0),
        (_naive(T0 + minutes(3)), None, 1.0),
    ]
    for order in (
        ["f0.json", "f1.json", "f2.json", "f3.json", "f4.json", "late.json"],  # late after the rest
        ["late.json", "f4.json", "f3.json", "f2.json", "f1.json", "f0.json"],
        ["f3.json", "f0.json", "late.json", "f4.json", "f1.json", "f2.json"],
    ):
        _assert_same_silver(at_once, _silver_in_batches(spark, files, [[n] for n in order], max_collapsed=4))


def test_a_late_change_beyond_the_bound_resumes_the_old_values_at_the_earliest_kept_observation(spark):
    files = _flat_files(6)  # collapsed t1..t5; the bound keeps t4, t5
    late_at = T0 + minutes(2.5)
    files["late.json"] = (late_at, [coin_record("btc", 2.0, late_at)])
    streamed = _silver_in_batches(
        spark, files, [[f"f{i}.json" for i in range(6)], ["late.json"]], max_collapsed=2
    )
    at_once = _silver_in_batches(spark, files, [sorted(files)], max_collapsed=2)
    t = [_naive(T0 + minutes(i)) for i in range(6)]
    # All at once: 1.0 resumes at the first observation after the late one (t3).
    assert _versions(at_once) == [
        (t[0], _naive(late_at), 1.0, [t[1], t[2]]),
        (_naive(late_at), t[3], 2.0, []),
        (t[3], None, 1.0, [t[4], t[5]]),
    ]
    # The late one arriving after t3 was forgotten: 1.0 resumes at the earliest kept one (t4).
    assert _versions(streamed) == [
        (t[0], _naive(late_at), 1.0, []),
        (_naive(late_at), t[4], 2.0, []),
        (t[4], None, 1.0, [t[5]]),
    ]
    # The current values and every instant from the earliest kept observation on agree.
    now_streamed, now_at_once = (df.filter("is_current").drop(*COMPARE_DROP) for df in (streamed, at_once))
    assert (
        now_streamed.select("current_price", "row_hash").collect()
        == now_at_once.select("current_price", "row_hash").collect()
    )
