"""The full pipeline on a real multi-executor cluster equals the same pipeline in local mode.

One bronze set (60 simulated coins x 6 polling cycles, plus a file and records that must be
quarantined) is processed by ``coinlake stream --trigger available-now`` with the warehouse
emulator on: once in local mode, in the test session (``local[2]``, the same settings and code path
as the CLI, see ``harness.stream_in_process``), and once in a subprocess with
``local-cluster[2,1,1024]`` (a master, two workers and two executor JVMs, each with one core,
started by Spark on this machine), the latter with ``COINLAKE_KERNEL_DRIVER_MAX_ROWS=0`` so its
kernels run on the executors by key bucket while the local run keeps them on the driver. Every Delta table, the deterministic counts of
``pipeline_metadata`` and every emulator table must be equal. So nothing in a batch may depend on state only the driver process has.

Evidence that the cluster run really ran on two executors: it writes a Spark event log
(``spark.eventLog.*`` through ``PYSPARK_SUBMIT_ARGS``, so the command under test is unchanged), which
must show executors ``0`` and ``1`` added and every finished task on one of them (local mode runs
its tasks in the ``driver``, so the test cannot pass on local mode by accident).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pyspark
import pytest

from app.paths import Layout
from bench.scale import batch_placements
from bench.workload import generate
from tests.reliability.harness import (
    STREAM,
    delta_snapshot,
    diff_snapshots,
    ledger_rows,
    run_cli,
    stream_in_process,
    tail,
    warehouse_snapshot,
)

pytestmark = pytest.mark.filterwarnings("ignore:Arrow output")

CLUSTER_MASTER = "local-cluster[2,1,1024]"
COINS = 60
SNAPSHOTS = 6
START = datetime(2026, 3, 2, 23, 40, tzinfo=UTC)  # crosses midnight: two days of gold
# 6 good pages + 3 bad fixtures = 9 files at 5 per trigger: 2 batches.
FILES_PER_TRIGGER = "5"
EXPECTED_BATCHES = 2
# A file that is not JSON, records that fail expectations, and a zero-byte file (found by the
# driver in the stream's checkpoint log).
BAD_FIXTURES = ("not_json.json", "negative_and_zero_price.json", "empty.json")
CORPUS = Path(__file__).resolve().parent / "data" / "bad_bronze"
# pipeline_metadata columns that are a function of the bronze and the batching, not of the run.
METADATA_COUNTS = (
    "batch_id",
    "status",
    "files",
    "records_read",
    "new_versions",
    "unchanged",
    "duplicates",
    "quarantined",
    "quarantined_by_rule",
    "warned_by_rule",
)


def _spark_scripts_missing() -> str | None:
    """Why a local cluster cannot start here (no Java 17+, no Spark scripts or jars), else None."""
    from app.errors import EnvironmentSetupError
    from app.spark import MIN_JAVA, java_major_version

    try:
        if java_major_version() < MIN_JAVA:
            return f"Java {MIN_JAVA}+ is needed for a local Spark cluster"
    except EnvironmentSetupError as exc:
        return str(exc)
    home = os.environ.get("SPARK_HOME") or os.path.dirname(os.path.abspath(pyspark.__file__))
    if not os.access(os.path.join(home, "bin", "spark-class"), os.X_OK):
        return f"no executable {home}/bin/spark-class: Spark's launch scripts are missing"
    if not os.path.isdir(os.path.join(home, "jars")):
        return f"no {home}/jars: the workers cannot build an executor's classpath"
    return None


def _write_bronze(layout: Layout) -> int:
    """Land the simulated polling cycles as the ingester does, plus the bad fixtures; returns the file count."""
    workload = generate(layout, coins=COINS, snapshots=SNAPSHOTS, seed=11, start=START)
    assert workload.files == SNAPSHOTS
    folder = Path(layout.bronze_day(START.date().isoformat()))
    for name in BAD_FIXTURES:
        shutil.copyfile(CORPUS / name, folder / name)
    return SNAPSHOTS + len(BAD_FIXTURES)


def _metadata_counts(spark, layout: Layout) -> list[str]:
    rows = (
        spark.read.format("delta")
        .load(layout.table("pipeline_metadata"))
        .filter("kind = 'stream_batch'")
        .select(*METADATA_COUNTS)
        .collect()
    )
    return sorted(json.dumps(r.asDict(recursive=True), sort_keys=True, default=str) for r in rows)


def _event_log_submit_args(folder: Path) -> str:
    """``PYSPARK_SUBMIT_ARGS`` that make the driver write one plain-JSON event log into ``folder``."""
    folder.mkdir()
    conf = {
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": folder.as_uri(),
        "spark.eventLog.rolling.enabled": "false",
        "spark.eventLog.compress": "false",
    }
    return " ".join(f"--conf {k}={v}" for k, v in conf.items()) + " pyspark-shell"


def _event_log_executors(folder: Path) -> tuple[set[str], set[str], dict[str, str]]:
    """From the one Spark event log in ``folder``: executor ids added, executor ids that ran tasks,
    and why each removed executor went (Spark's own reason: a lost heartbeat, an exit code, ...)."""
    logs = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    assert len(logs) == 1, f"expected one Spark event log in {folder}, found {logs}"
    added, ran, removed = set(), set(), {}
    with open(logs[0], encoding="utf-8") as fh:
        for line in fh:
            # Most lines are big SQL plan events: parse only the kinds wanted.
            if '"SparkListenerExecutorAdded"' in line[:60]:
                added.add(str(json.loads(line)["Executor ID"]))
            elif '"SparkListenerTaskEnd"' in line[:60]:
                ran.add(str(json.loads(line)["Task Info"]["Executor ID"]))
            elif '"SparkListenerExecutorRemoved"' in line[:60]:
                event = json.loads(line)
                removed[str(event["Executor ID"])] = str(event.get("Removed Reason", ""))
    return added, ran, removed


def _run_pipeline(root: Path, master: str, **env: str):
    return run_cli(
        *STREAM,
        data_dir=root,
        COINLAKE_SPARK_MASTER=master,
        COINLAKE_WAREHOUSE="emulator",
        COINLAKE_MAX_FILES_PER_TRIGGER=FILES_PER_TRIGGER,
        COINLAKE_DRIVER_MEMORY="2g",
        **env,
    )


def test_local_cluster_conf_sizes_executors_and_keeps_work_files_out_of_pyspark(monkeypatch):
    from app.errors import EnvironmentSetupError
    from app.spark import _local_cluster_conf

    monkeypatch.setenv("SPARK_HOME", "unset-after-the-test")  # so monkeypatch restores the original
    monkeypatch.delenv("SPARK_HOME")
    conf = _local_cluster_conf("local-cluster[3, 2, 512]")
    assert conf["spark.executor.memory"] == "512m"
    assert conf["spark.cores.max"] == "6"
    assert conf["spark.scheduler.minRegisteredResourcesRatio"] == "1.0"
    home = Path(os.environ["SPARK_HOME"])
    package = Path(pyspark.__file__).resolve().parent
    assert home.resolve() != package
    assert (home / "jars").resolve() == package / "jars"
    assert os.access(home / "bin" / "spark-class", os.X_OK)
    shutil.rmtree(home)

    monkeypatch.setenv("SPARK_HOME", "/opt/spark")
    _local_cluster_conf("local-cluster[2,1,1024]")
    assert os.environ["SPARK_HOME"] == "/opt/spark"  # a user's Spark home is left alone
    with pytest.raises(EnvironmentSetupError, match="local-cluster"):
        _local_cluster_conf("local-cluster[2]")


@pytest.mark.slow
@pytest.mark.process
def test_local_cluster_equals_local_mode(spark, tmp_path):
    reason = _spark_scripts_missing()
    if reason:
        pytest.skip(reason)

    local_root, cluster_root = tmp_path / "local" / "data", tmp_path / "cluster" / "data"
    local, cluster = Layout.from_root(str(local_root)), Layout.from_root(str(cluster_root))
    files = _write_bronze(local)
    # The same files, with the same modification times (the stream's file order).
    shutil.copytree(local.bronze_root, cluster.bronze_root)

    assert spark.sparkContext.master == "local[2]"
    started = time.monotonic()
    stream_in_process(
        spark, local_root, COINLAKE_WAREHOUSE="emulator", COINLAKE_MAX_FILES_PER_TRIGGER=FILES_PER_TRIGGER
    )
    local_seconds = time.monotonic() - started
    events, scratch = tmp_path / "events", tmp_path / "tmp"
    scratch.mkdir()
    cluster_run = _run_pipeline(
        cluster_root,
        CLUSTER_MASTER,
        PYSPARK_SUBMIT_ARGS=_event_log_submit_args(events),
        TMPDIR=str(scratch),  # where the run's temporary SPARK_HOME goes
        # Above the driver threshold: the cluster runs the kernels on its executors, by key bucket.
        COINLAKE_KERNEL_DRIVER_MAX_ROWS="0",
    )
    assert cluster_run.returncode == 0, tail(cluster_run)
    # The executors' work files (a copy of every jar each) went with the temporary SPARK_HOME.
    assert list(scratch.glob("coinlake-spark-home-*")) == []
    assert not (Path(pyspark.__file__).parent / "work").exists()
    print(f"\nlocal[2] (in process): {local_seconds:.0f}s, {CLUSTER_MASTER}: {cluster_run.seconds:.0f}s")

    # The cluster really had two executor JVMs, and every task ran on one of them (none in the driver).
    # An executor lost during the run (and replaced) names its reason here, so a failure says
    # whether it was memory, a heartbeat missed under load, or something else.
    added, ran, removed = _event_log_executors(events)
    assert added == {"0", "1"}, f"executors added: {added}; removed during the run: {removed}"
    assert ran == {"0", "1"}, f"tasks ran on: {ran}; removed during the run: {removed}"

    assert set(batch_placements(spark, local)) == {"driver"}
    assert set(batch_placements(spark, cluster)) == {"executors"}
    expected = _metadata_counts(spark, local)
    assert len(expected) == EXPECTED_BATCHES
    assert sum(json.loads(r)["files"] for r in expected) == files
    assert _metadata_counts(spark, cluster) == expected

    local_delta = delta_snapshot(spark, local)
    for name in ("silver_crypto_clean", "crypto_anomalies", "gold_crypto_metrics", "gold_coin_ohlc"):
        assert local_delta[name], f"{name} is empty: the comparison would prove nothing"
    assert local_delta["bronze_quarantine"], "nothing quarantined: the bad fixtures were not read"
    assert diff_snapshots(local_delta, delta_snapshot(spark, cluster)) == []

    local_warehouse = warehouse_snapshot(local)
    assert all(local_warehouse.values()), {k: len(v) for k, v in local_warehouse.items()}
    assert diff_snapshots(local_warehouse, warehouse_snapshot(cluster)) == []
    assert (
        [b for _, b in ledger_rows(cluster)]
        == [b for _, b in ledger_rows(local)]
        == list(range(EXPECTED_BATCHES))
    )
