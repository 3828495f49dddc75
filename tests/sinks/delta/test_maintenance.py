"""Delta maintenance settings on new and existing tables, and ``coinlake maintain``'s OPTIMIZE + VACUUM."""

from __future__ import annotations

import os

import pytest

from app.config import load_settings
from app.sinks.delta.maintenance import maintain, maintenance_conf, maintenance_properties
from app.tables import QUARANTINE, ensure_table


@pytest.fixture
def maintenance_session(spark):
    """The session carrying non-default maintenance settings, restored after the test."""
    settings = load_settings(
        delta_log_retention_days=45, delta_deleted_file_retention_hours=200, delta_checkpoint_interval=25
    )
    conf = maintenance_conf(settings)
    for key, value in conf.items():
        spark.conf.set(key, value)
    yield settings
    for key in conf:
        spark.conf.unset(key)


def _properties(spark, path: str) -> dict[str, str]:
    from delta.tables import DeltaTable

    return dict(DeltaTable.forPath(spark, path).detail().first()["properties"])


def test_new_and_existing_tables_get_the_maintenance_settings(spark, tmp_path, maintenance_session):
    wanted = maintenance_properties(maintenance_session)
    assert wanted == {
        "delta.logRetentionDuration": "interval 45 days",
        "delta.deletedFileRetentionDuration": "interval 200 hours",
        "delta.checkpointInterval": "25",
    }
    new = str(tmp_path / "new")
    ensure_table(spark, QUARANTINE, new)
    assert wanted.items() <= _properties(spark, new).items()
    # a table made before the settings existed gets them at the next start (one ALTER)
    old = str(tmp_path / "old")
    conf = maintenance_conf(maintenance_session)
    for key in conf:  # an older release's session: Delta's own defaults, nothing on the table
        spark.conf.unset(key)
    spark.createDataFrame([], "batch_id bigint").write.format("delta").save(old)
    for key, value in conf.items():
        spark.conf.set(key, value)
    assert "delta.checkpointInterval" not in _properties(spark, old)
    ensure_table(spark, QUARANTINE, old)
    assert wanted.items() <= _properties(spark, old).items()


def test_maintain_compacts_then_vacuums_only_files_older_than_the_retention(
    spark, tmp_path, maintenance_session
):
    path = str(tmp_path / "t")
    for i in range(3):  # three small files
        spark.createDataFrame([(i,)], "n int").write.format("delta").mode("append").save(path)
    before = {n for n in os.listdir(path) if n.endswith(".parquet")}
    report = maintain(spark, [path, str(tmp_path / "not_a_table")])
    assert list(report) == [path]
    assert report[path]["files_removed"] == 3 and report[path]["files_added"] == 1
    assert report[path]["vacuumed"] == 0  # the compacted files are younger than the retention
    after = {n for n in os.listdir(path) if n.endswith(".parquet")}
    assert before < after and len(after - before) == 1  # nothing deleted, one compacted file added
    assert sorted(r["n"] for r in spark.read.format("delta").load(path).collect()) == [0, 1, 2]
    vacuum_only = maintain(spark, [path], optimize=False)
    assert "files_removed" not in vacuum_only[path] and "error" not in vacuum_only[path]
