from __future__ import annotations

import subprocess
import sys

import pytest
from chispa import assert_df_equality
from delta.tables import DeltaTable

from app import spark as spark_mod
from app.errors import EnvironmentSetupError


def test_build_spark_delta_merge_roundtrip(spark, tmp_path):
    path = str(tmp_path / "t")
    spark.createDataFrame([("a", 1.0), ("b", None)], "k string, v double").write.format("delta").save(path)
    updates_df = spark.createDataFrame([("b", 2.0), ("c", 3.0)], "k string, v double")
    (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(updates_df.alias("s"), "t.k = s.k")
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
        .execute()
    )
    expected_df = spark.createDataFrame([("a", 1.0), ("b", 2.0), ("c", 3.0)], "k string, v double")
    assert_df_equality(spark.read.format("delta").load(path), expected_df, ignore_row_order=True)
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"


def test_delta_maven_coordinate_matches_installed_pair():
    coord = spark_mod.delta_maven_coordinate()
    assert coord.startswith("io.delta:delta-spark_4.2_2.13:")


def test_java_major_version_missing_java_is_one_line(monkeypatch):
    monkeypatch.setattr(spark_mod, "_java_executable", lambda: None)
    with pytest.raises(EnvironmentSetupError, match="Java 17\\+ is required but was not found"):
        spark_mod.java_major_version()


def test_java_major_version_old_java_refused(monkeypatch, tmp_path):
    fake = tmp_path / "java"
    fake.write_text("#!/bin/sh\necho 'openjdk version \"1.8.0_392\"' >&2\n")
    fake.chmod(0o755)
    assert spark_mod.java_major_version(str(fake)) == 8
    monkeypatch.setattr(spark_mod, "_java_executable", lambda: str(fake))
    monkeypatch.setattr("pyspark.sql.SparkSession.getActiveSession", staticmethod(lambda: None))
    with pytest.raises(EnvironmentSetupError, match="found Java 8"):
        spark_mod.build_spark()


def test_import_app_has_no_side_effects(tmp_path):
    code = (
        "import sys, os, app, app.config, app.cli, app.spark, app.paths, app.tables, app.logs\n"
        "assert 'pyspark.sql.session' not in sys.modules\n"
        "from pyspark.sql import SparkSession\n"
        "assert SparkSession.getActiveSession() is None\n"
        "assert os.listdir('.') == []\n"
        "assert 'requests' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)


def test_jar_manifest_roundtrip_and_stale_files(monkeypatch, tmp_path):
    monkeypatch.setenv("COINLAKE_CACHE_DIR", str(tmp_path / "cache"))
    jar_a, jar_b = tmp_path / "a.jar", tmp_path / "b.jar"
    jar_a.write_bytes(b"x")
    jar_b.write_bytes(b"y")
    spark_mod._remember_jars("io.delta:x:1", f"file://{jar_a},file://{jar_b}")
    assert spark_mod._cached_jars("io.delta:x:1") == [str(jar_a), str(jar_b)]
    assert spark_mod._cached_jars("io.delta:other:1") == []
    jar_b.unlink()  # a cleaned Ivy cache makes the manifest stale: resolve again
    assert spark_mod._cached_jars("io.delta:x:1") == []


def test_resolved_jars_that_spark_ships_are_not_shipped_again(tmp_path):
    spark_jars = tmp_path / "spark_jars"
    spark_jars.mkdir()
    for name in ("jackson-core-2.21.2.jar", "parquet-hadoop-1.17.0.jar", "zstd-jni-1.5.7-7.jar"):
        (spark_jars / name).write_bytes(b"")
    resolved = [
        "/ivy/io.delta_delta-spark_4.2_2.13-4.4.0.jar",
        "/ivy/io.delta_delta-storage-4.4.0.jar",
        "/ivy/com.fasterxml.jackson.core_jackson-core-2.13.5.jar",
        "/ivy/org.apache.parquet_parquet-hadoop-1.16.0.jar",
        "/ivy/com.github.luben_zstd-jni-1.5.7-3.jar",
        "/ivy/org.locationtech.jts_jts-core-1.20.0.jar",
    ]
    assert spark_mod.without_spark_provided(resolved, str(spark_jars)) == [
        "/ivy/io.delta_delta-spark_4.2_2.13-4.4.0.jar",
        "/ivy/io.delta_delta-storage-4.4.0.jar",
        "/ivy/org.locationtech.jts_jts-core-1.20.0.jar",
    ]
    # without Spark's jar folder nothing is dropped
    assert spark_mod.without_spark_provided(resolved, str(tmp_path / "missing")) == resolved


class _FakeSession:
    stopped = False

    def stop(self):
        self.stopped = True


def test_resolve_jars_starts_spark_only_without_a_manifest(monkeypatch, tmp_path):
    monkeypatch.setenv("COINLAKE_CACHE_DIR", str(tmp_path / "cache"))
    started: list[dict] = []
    session = _FakeSession()

    def fake_build(**kwargs):
        started.append(kwargs)
        return session

    monkeypatch.setattr(spark_mod, "build_spark", fake_build)
    assert spark_mod.resolve_jars() is True
    assert [s["master"] for s in started] == ["local[1]"] and session.stopped
    jar = tmp_path / "delta.jar"
    jar.write_bytes(b"x")
    spark_mod._remember_jars(spark_mod.delta_maven_coordinate(), f"file://{jar}")
    assert spark_mod.resolve_jars() is False
    assert len(started) == 1  # resolved before: no second start


def test_build_spark_turns_adaptive_execution_off(spark):
    # measured: on local[N] with few shuffle partitions AQE doubled the jobs per batch (BENCHMARKS.md).
    # Turn it on in the running session; build_spark's options are applied to the session it returns.
    spark.conf.set("spark.sql.adaptive.enabled", "true")
    try:
        session = spark_mod.build_spark(app_name="coinlake-tests", master="local[2]", shuffle_partitions=2)
        assert session.conf.get("spark.sql.adaptive.enabled") == "false"
    finally:
        spark.conf.set("spark.sql.adaptive.enabled", "false")


def test_build_spark_turns_dataframe_call_sites_off(spark):
    # measured: capturing each Column function's Python call site cost ~3,000 py4j round trips per
    # batch (BENCHMARKS.md); the switch is read once per process, so the session must start with it.
    from pyspark.errors.utils import is_debugging_enabled

    assert spark.conf.get(spark_mod.DATAFRAME_DEBUGGING_CONF) == "false"
    assert not is_debugging_enabled()


def test_build_spark_keeps_only_small_arrow_frames_in_the_plan(spark):
    # measured: a 104,000-row silver MERGE source held in the plan cost ~6 s of driver time (BENCHMARKS.md)
    import pyarrow as pa

    def logical(rows: int) -> str:
        table = pa.table({"coin_id": [f"coin-{i:06d}" for i in range(rows)], "price": [1.5] * rows})
        return spark.createDataFrame(table)._jdf.queryExecution().logical().toString()

    assert spark.conf.get(spark_mod.ARROW_LOCAL_RELATION_CONF) == spark_mod.ARROW_LOCAL_RELATION_MAX
    assert "LocalRelation" in logical(2_000)  # a steady batch's outputs: ~0.04 MB here
    assert "LocalRelation" not in logical(400_000)  # ~7 MB: above the threshold


def test_build_spark_forces_utc_on_a_reused_databricks_session(monkeypatch):
    class FakeConf:
        def __init__(self):
            self.values = {"spark.sql.session.timeZone": "America/Los_Angeles"}

        def set(self, key, value):
            self.values[key] = value

    class FakeSession:
        conf = FakeConf()

    session = FakeSession()
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "15.4")
    monkeypatch.setattr("pyspark.sql.SparkSession.getActiveSession", staticmethod(lambda: session))
    assert spark_mod.build_spark() is session
    assert session.conf.values["spark.sql.session.timeZone"] == "UTC"
    assert session.conf.values[spark_mod.DATAFRAME_DEBUGGING_CONF] == "false"
    assert session.conf.values[spark_mod.ARROW_LOCAL_RELATION_CONF] == spark_mod.ARROW_LOCAL_RELATION_MAX
