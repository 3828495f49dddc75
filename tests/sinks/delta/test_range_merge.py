"""The range replacement: diff staging and the MERGE that applies it, with its own counts."""

from __future__ import annotations

from app.sinks.delta.range_merge import merge_staged, stage_replacement
from tests.sinks.silver_builders import table_version

DDL = "k string, v double, b bigint"


def _table(spark, path, rows):
    spark.createDataFrame(rows, DDL).write.format("delta").save(path)


def _rows(spark, path):
    return sorted(tuple(r) for r in spark.read.format("delta").load(path).collect())


def test_merge_staged_applies_the_diff_and_returns_the_merge_counts(spark, tmp_path):
    path = str(tmp_path / "t")
    _table(spark, path, [("a", 1.0, 0), ("b", 2.0, 0), ("gone", 3.0, 0)])
    fresh_df = spark.createDataFrame([("a", 1.0, 0), ("b", 2.5, 1), ("new", 4.0, 1)], DDL)
    existing_df = spark.read.format("delta").load(path)
    staged_df = stage_replacement(fresh_df, existing_df, ["k"], ["v", "b"]).cache()
    assert sorted((r["k"], r["_action"]) for r in staged_df.collect()) == [
        ("b", "update"),
        ("gone", "delete"),
        ("new", "insert"),
    ]

    def merge():
        return merge_staged(
            spark,
            path,
            staged_df,
            ["k"],
            columns=fresh_df.columns,
            update_columns=["v", "b"],
            target_filter="TRUE",
            app_id="test-app",
            batch_id=7,
        )

    assert merge() == {"insert": 1, "update": 1, "delete": 1}
    assert _rows(spark, path) == [("a", 1.0, 0), ("b", 2.5, 1), ("new", 4.0, 1)]
    version = table_version(spark, path)
    # The same (app_id, batch_id) again: Delta skips the MERGE; nothing is counted or committed.
    assert merge() == {"insert": 0, "update": 0, "delete": 0}
    assert table_version(spark, path) == version
    assert _rows(spark, path) == [("a", 1.0, 0), ("b", 2.5, 1), ("new", 4.0, 1)]
