"""Crash-point matrix: kill the real stream at every foreachBatch crash point, restart, compare.

Each case runs ``python -m app.cli stream --trigger available-now`` over the fixed bronze set
(:func:`tests.reliability.harness.write_fixed_bronze`: 8 pages, 4 files per trigger, so 2 batches)
with ``COINLAKE_CRASH_AT=<point>:2`` so the process dies (exit 137, ``os._exit``) in the second
batch, restarts it without the setting on the same checkpoint (in the test process, on its warm
JVM: the restart only has to be another process than the one that died), and compares every Delta
table and every warehouse (emulator) table with an uninterrupted reference run.

The crashed run starts its own JVM, so a case costs one to three minutes on a 2-core machine: the
two representative points run by default, the rest are marked ``slow``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.faults import CRASH_EXIT_CODE, CRASH_POINTS
from app.paths import Layout
from tests.reliability.harness import (
    EXPECTED_BATCHES,
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

CRASH_HIT = 2
STREAM_POINTS = tuple(p for p in CRASH_POINTS if p != "ingest_before_rename")
DEFAULT_POINTS = ("after_silver_merge", "after_warehouse_merge")
# Each point costs a crashed subprocess and an in-process restart (~2-4 min on 2 cores): the other
# five points are the "long variants" issue 7 allows outside the per-commit run (CI time).
_LONG_VARIANT = pytest.mark.skipif(
    os.environ.get("COINLAKE_HARNESS") != "full",
    reason="long crash-point variant; run with COINLAKE_HARNESS=full (docs/RELIABILITY.md)",
)


def _points() -> list:
    return [
        pytest.param(p, id=p, marks=() if p in DEFAULT_POINTS else (pytest.mark.slow, _LONG_VARIANT))
        for p in STREAM_POINTS
    ]


def test_reference_run_has_several_batches_and_anomalies(reference):
    _, delta, warehouse, ledger = reference
    assert len(ledger) == EXPECTED_BATCHES, ledger
    assert delta["silver_crypto_clean"] and delta["crypto_anomalies"] and delta["gold_coin_ohlc"]
    assert len(warehouse["SILVER_CRYPTO_CLEAN"]) == len(delta["silver_crypto_clean"])


@pytest.mark.process
@pytest.mark.parametrize("point", _points())
def test_crash_point_restart_matches_uninterrupted_run(point: str, reference, tmp_path: Path, spark):
    _, ref_delta, ref_warehouse, _ = reference
    root = tmp_path / "data"
    layout = Layout.from_root(str(root))
    write_fixed_bronze(layout)

    crashed = run_cli(*STREAM, data_dir=root, COINLAKE_CRASH_AT=f"{point}:{CRASH_HIT}")
    assert crashed.returncode == CRASH_EXIT_CODE, tail(crashed)
    assert f"crash point {point} reached" in crashed.stderr

    # The restart on the same checkpoint: in this process (a warm JVM; the kill is what is under test).
    stream_in_process(spark, root)

    assert diff_snapshots(ref_delta, delta_snapshot(spark, layout)) == []
    assert diff_snapshots(ref_warehouse, warehouse_snapshot(layout)) == []
    ledger = ledger_rows(layout)
    assert sorted(b for _, b in ledger) == list(range(EXPECTED_BATCHES)), ledger
    assert len({a for a, _ in ledger}) == 1, ledger
