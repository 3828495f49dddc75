"""Faults outside the data: the warehouse unavailable for a run, then back; bronze storage broken.

- Warehouse: the emulator's DuckDB file is held (locked) by this process during the first run
  (``COINLAKE_WAREHOUSE_ON_ERROR=continue``); the lakehouse must commit normally and remember the
  unsynced ranges. After the lock is released, the next run's batch catches up: Delta and the
  warehouse both equal the uninterrupted reference, and the ledger holds each batch at most once.
- Storage: ``coinlake ingest --once`` with a file where the bronze folder should be (root ignores
  chmod, so this is how a permission/storage failure is provoked): exit 2, one-line reason, no file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.paths import Layout
from app.sinks.warehouse.stage import read_pending
from app.sources.simulator import start_simulator
from tests.reliability.harness import (
    SNAPSHOTS,
    STREAM,
    delta_snapshot,
    diff_snapshots,
    ledger_rows,
    run_cli,
    stream_in_process,
    tail,
    warehouse_snapshot,
    write_fixed_bronze,
)


def test_ingest_on_broken_bronze_storage_fails_in_one_line_without_files(tmp_path: Path):
    root = tmp_path / "data"
    blocker = Path(Layout.from_root(str(root)).bronze_root)
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder\n", encoding="utf-8")
    sim = start_simulator(port=0, coins=20, seed=3)
    try:
        run = run_cli(
            "ingest",
            "--once",
            data_dir=root,
            COINLAKE_API_BASE_URL=sim.base_url,
            COINLAKE_TOP_N="20",
            COINLAKE_PER_PAGE="10",
        )
    finally:
        sim.stop()
    assert run.returncode == 2, tail(run)
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("coinlake: error: ingest cycle failed: cannot write bronze page usd p1"), last
    assert "Traceback" not in run.stderr
    files = [os.path.join(d, f) for d, _, fs in os.walk(root / "bronze") for f in fs]
    assert files == [str(blocker)]
    assert blocker.read_text(encoding="utf-8") == "not a folder\n"
    runs_log = (root / "logs" / "ingest_runs.jsonl").read_text(encoding="utf-8")
    assert '"status":"failed"' in runs_log.replace(" ", "")


@pytest.mark.slow
@pytest.mark.process
def test_warehouse_down_for_a_run_then_back_converges(tmp_path: Path, reference, spark):
    import duckdb

    _, ref_delta, ref_warehouse, _ = reference
    root = tmp_path / "data"
    layout = Layout.from_root(str(root))
    half = SNAPSHOTS // 2
    write_fixed_bronze(layout, snapshots=half)
    db_dir = Path(layout.warehouse_dir)
    db_dir.mkdir(parents=True)
    env = {"COINLAKE_WAREHOUSE_ON_ERROR": "continue"}

    lock = duckdb.connect(str(db_dir / "COINLAKE.db"))  # holds the file lock: the emulator cannot open it
    try:
        down = run_cli(*STREAM, data_dir=root, **env)
    finally:
        lock.close()
    assert down.returncode == 0, tail(down)
    assert "warehouse load failed, continuing" in down.stderr
    assert ledger_rows(layout) == []
    pending_files = list((db_dir / "pending").glob("*.json"))
    assert len(pending_files) == 1 and read_pending(str(pending_files[0]))["batches"] == [0]

    write_fixed_bronze(layout, start=half)
    stream_in_process(spark, root, **env)  # the warehouse is back: this run catches up

    assert not list((db_dir / "pending").glob("*.json"))
    assert diff_snapshots(ref_delta, delta_snapshot(spark, layout)) == []
    assert diff_snapshots(ref_warehouse, warehouse_snapshot(layout)) == []
    ledger = ledger_rows(layout)
    assert [b for _, b in ledger] == [1], ledger
