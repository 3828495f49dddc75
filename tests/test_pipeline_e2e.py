"""End-to-end acceptance: the streaming query with every stage wired (anomalies, gold, warehouse emulator).

(a) the same bronze processed all at once, three files per batch, and in a shuffled arrival order
    (older files landing after newer ones, across restarts on one checkpoint) gives identical
    silver, anomalies and gold; (b) after each run the emulator's tables equal the Delta tables on
    the mirrored columns, also after late data rewrote old silver rows; (c) ``coinlake run``
    against the simulator lands silver rows for every simulated coin; (d) ``coinlake stream
    --trigger interval`` in a subprocess processes files and exits 0 on SIGTERM.
"""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from chispa import assert_df_equality
from delta.tables import DeltaTable

from app.config import Settings, load_settings
from app.paths import STREAM_QUERY_NAME, Layout
from app.sinks.warehouse.connector import emulator_connector
from app.sinks.warehouse.sql import TARGETS, TargetTable, prepare_frame
from app.sinks.warehouse.stage import to_pandas
from app.stream import StreamResult, run_stream
from tests.helpers import assert_scd2_invariants, coin_record, silver_content, write_bronze_page

pytestmark = pytest.mark.filterwarnings("ignore:Arrow output")

START = datetime(2026, 3, 1, 22, 30, 0, 250000, tzinfo=UTC)  # the run crosses midnight: two days
SNAPSHOTS = 24
STEP = timedelta(minutes=10)
JUMP_AT = 17  # bitcoin's price and volume jump here: something for the detector to flag
# Compared without the columns that depend on batching (and silver's files, on the bronze root).
BATCH_COLUMNS = {
    "crypto_anomalies": ("detected_batch_id",),
    "gold_crypto_metrics": ("updated_batch_id",),
    "gold_coin_ohlc": ("updated_batch_id",),
}
MIRRORED = ("silver_crypto_clean", "crypto_anomalies", "gold_crypto_metrics", "gold_coin_ohlc")


def _snapshot(i: int) -> list[dict[str, Any]]:
    """The four coins at snapshot ``i`` (deterministic random walks; tether mostly repeats itself)."""
    rng = random.Random(1000 + i)
    t = START + i * STEP
    out = []
    for n, (coin, base) in enumerate((("bitcoin", 60000.0), ("ethereum", 3000.0), ("solana", 150.0))):
        walk = math.exp(sum(random.Random(7 * k + n).gauss(0, 0.004) for k in range(i + 1)))
        price = round(base * walk, 6)
        volume = 2e9 * (1 + 0.05 * rng.random())
        if coin == "bitcoin" and i >= JUMP_AT:
            price, volume = round(price * 1.4, 6), volume * (8 if i == JUMP_AT else 1)
        out.append(coin_record(coin, price, t, total_volume=round(volume, 2), market_cap=round(price * 1e7)))
    # tether: the same values for runs of snapshots, so versions collapse and late files split them
    peg = 1.0 if (i // 3) % 2 == 0 else 1.001
    out.append(coin_record("tether", peg, t, total_volume=5e10, market_cap=11e10))
    return out


def _write_snapshots(layout: Layout, indexes: list[int]) -> None:
    for i in indexes:
        write_bronze_page(layout.bronze_root, START + i * STEP + timedelta(seconds=20), _snapshot(i))


def _settings(root: Path, per_trigger: int, optimize_every: int = 0) -> Settings:
    return load_settings(
        data_dir=str(root),
        max_files_per_trigger=per_trigger,
        optimize_every_batches=optimize_every,
        zscore_window=10,
        zscore_min_periods=5,
        zscore_threshold=3.0,
        warehouse="emulator",
    )


def _table(spark, layout: Layout, name: str):
    return spark.read.format("delta").load(layout.table(name))


def _content(spark, layout: Layout, name: str):
    df = _table(spark, layout, name)
    return silver_content(df) if name == "silver_crypto_clean" else df.drop(*BATCH_COLUMNS[name])


def _normalized(df: pd.DataFrame, target: TargetTable) -> list[tuple[Any, ...]]:
    out, _ = prepare_frame(df, target.columns, target.key, nullable_key=target.nullable_key)
    out = out.astype(object).where(out.notna(), None)
    return sorted((tuple(r) for r in out.itertuples(index=False)), key=repr)


def assert_warehouse_equals_delta(spark, layout: Layout) -> None:
    """Every mirrored table: the emulator's rows equal the Delta rows on the mirrored columns."""
    loader = emulator_connector(layout.warehouse_dir).loader()
    for target in TARGETS:
        if target.delta_name not in MIRRORED:
            continue
        delta = to_pandas(_table(spark, layout, target.delta_name))
        cols, rows = loader.query(f'SELECT * FROM "{target.name}"')
        warehouse = pd.DataFrame(rows, columns=cols)
        assert len(warehouse) == len(delta), target.name
        assert _normalized(warehouse, target) == _normalized(delta, target), target.name


def _run(spark, layout: Layout, settings: Settings) -> StreamResult:
    result = run_stream(spark, settings, layout)
    assert all(b.status == "ok" and b.reconciles for b in result.batches)
    for b in result.batches:
        stages = b.details.get("stages", {})
        assert set(stages) == {"anomalies", "gold", "warehouse"}, stages
        assert stages["warehouse"].get("warehouse_failed", 0) == 0
    return result


@pytest.mark.slow
def test_all_stages_are_order_independent_and_mirrored(spark, tmp_path):
    everything = list(range(SNAPSHOTS))
    # (a) all at once
    layout_a = Layout.from_root(str(tmp_path / "a"))
    _write_snapshots(layout_a, everything)
    res_a = _run(spark, layout_a, _settings(tmp_path / "a", 1000))
    assert len(res_a.batches) == 1
    assert_warehouse_equals_delta(spark, layout_a)

    # (b) small batches: three files each (eight batches; the jump and the z-score windows span them)
    layout_b = Layout.from_root(str(tmp_path / "b"))
    _write_snapshots(layout_b, everything)
    res_b = _run(spark, layout_b, _settings(tmp_path / "b", 3))
    assert len(res_b.batches) == SNAPSHOTS // 3

    # (c) shuffled: newer files first, older ones land later, across restarts on one checkpoint;
    # compacting every second batch, so late data also rewrites compacted files
    layout_c = Layout.from_root(str(tmp_path / "c"))
    settings_c = _settings(tmp_path / "c", 4, optimize_every=2)
    order = everything[:]
    random.Random(5).shuffle(order)
    late_first = sorted(order[: SNAPSHOTS // 2], reverse=True)
    runs = [late_first, order[SNAPSHOTS // 2 : 3 * SNAPSHOTS // 4], order[3 * SNAPSHOTS // 4 :]]
    assert min(runs[0]) < max(runs[1])  # older than already processed data arrives later
    query_ids = set()
    batches_c = []
    for n, indexes in enumerate(runs):
        _write_snapshots(layout_c, indexes)
        res = _run(spark, layout_c, settings_c)
        query_ids.add(res.query_id)
        batches_c.extend(res.batches)
        assert sum(b.files for b in res.batches) == len(indexes)
        # (b) the warehouse follows every run, including late data that rewrote old silver rows
        assert_warehouse_equals_delta(spark, layout_c)
        if n == 1:
            changed = sum(
                b.details["silver"]["inserts"] + b.details["silver"]["updates"] for b in res.batches
            )
            assert changed > 0
    assert len(query_ids) == 1
    compactions = [b.details["optimize"] for b in batches_c if "optimize" in b.details]
    assert [b.batch_id for b in batches_c if "optimize" in b.details] == [1, 3, 5]
    assert all("errors" not in c and c["tables"] == 6 for c in compactions), compactions
    operations = DeltaTable.forPath(spark, layout_c.table("silver_crypto_clean")).history().collect()
    assert "OPTIMIZE" in {r["operation"] for r in operations}

    anomalies = _table(spark, layout_a, "crypto_anomalies").collect()
    assert any(r["coin_id"] == "bitcoin" and r["metric"] == "price_return" for r in anomalies), anomalies
    silver_a = _table(spark, layout_a, "silver_crypto_clean")
    assert_scd2_invariants(silver_a)
    assert silver_a.filter("size(collapsed_observations) > 0").count() > 0  # tether's repeats
    assert {
        r["metric_date"].isoformat() for r in _table(spark, layout_a, "gold_crypto_metrics").collect()
    } == {
        "2026-03-01",
        "2026-03-02",
    }
    for layout in (layout_b, layout_c):
        assert_scd2_invariants(_table(spark, layout, "silver_crypto_clean"))
        for name in MIRRORED:
            assert_df_equality(
                _content(spark, layout_a, name),
                _content(spark, layout, name),
                ignore_row_order=True,
                ignore_column_order=True,
                ignore_nullable=True,
            )
    assert_warehouse_equals_delta(spark, layout_b)


@pytest.mark.slow
def test_coinlake_run_against_the_simulator_lands_every_coin(spark, simulator, tmp_path, monkeypatch):
    import app.commands.run as run_command
    from app.cli import main

    for key, value in {
        "COINLAKE_DATA_DIR": str(tmp_path),
        "COINLAKE_API_BASE_URL": simulator.base_url,
        "COINLAKE_TOP_N": "50",
        "COINLAKE_PER_PAGE": "25",
        "COINLAKE_WAREHOUSE": "emulator",
        "COINLAKE_ZSCORE_WINDOW": "10",
        "COINLAKE_ZSCORE_MIN_PERIODS": "5",
    }.items():
        monkeypatch.setenv(key, value)
    # the command's session is the test session (one JVM per test process)
    monkeypatch.setattr(run_command, "spark_from_settings", lambda settings, app_name="coinlake": spark)

    assert main(["run"]) == 0
    simulator.advance(300)
    assert main(["run"]) == 0

    layout = Layout.from_root(str(tmp_path))
    silver = _table(spark, layout, "silver_crypto_clean")
    assert_scd2_invariants(silver)
    coins = {c.id for c in simulator.model.coins}
    assert len(coins) == 50
    assert {r["coin_id"] for r in silver.select("coin_id").distinct().collect()} == coins
    assert {r["coin_id"] for r in silver.filter("is_current").collect()} == coins
    assert_warehouse_equals_delta(spark, layout)


def _wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"coinlake stream exited early ({proc.returncode}): {err[-3000:]}")
        time.sleep(1)
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"timed out waiting for the stream; stderr: {err[-3000:]}")


@pytest.mark.slow
@pytest.mark.process
def test_stream_interval_subprocess_processes_files_and_stops_on_sigterm(spark, tmp_path):
    layout = Layout.from_root(str(tmp_path))
    _write_snapshots(layout, [0, 1])
    commits = Path(layout.checkpoint(STREAM_QUERY_NAME)) / "commits"
    env = {
        **os.environ,
        "COINLAKE_DATA_DIR": str(tmp_path),
        "COINLAKE_WAREHOUSE": "none",
        "COINLAKE_MAX_FILES_PER_TRIGGER": "10",
        "COINLAKE_SPARK_MASTER": "local[1]",
        "COINLAKE_SHUFFLE_PARTITIONS": "1",
        "COINLAKE_DRIVER_MEMORY": "1g",
    }

    def committed() -> int:
        return len([p for p in commits.glob("*") if p.name.isdigit()]) if commits.exists() else 0

    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "stream", "--trigger", "interval", "--every", "1s"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: committed() >= 1, 600, proc)
        # a file landing while the query runs is picked up by a later trigger
        before = committed()
        _write_snapshots(layout, [2])
        _wait_for(lambda: committed() > before, 300, proc)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    silver = _table(spark, layout, "silver_crypto_clean")
    assert_scd2_invariants(silver)
    assert silver.select("valid_from").distinct().count() == 3
    md = _table(spark, layout, "pipeline_metadata").filter("kind = 'stream_batch'").collect()
    assert sum(r["files"] or 0 for r in md if r["status"] == "ok") == 3
