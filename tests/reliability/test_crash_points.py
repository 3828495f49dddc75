"""Crash-point matrix: kill the real stream at every foreachBatch crash point, restart, compare.

Each case commits batch 0 of the fixed bronze set (:func:`tests.reliability.harness.write_fixed_bronze`:
8 pages, 4 files per trigger, so 2 batches) in the test process, lands the second half, and runs
``python -m app.cli stream --trigger available-now`` with ``COINLAKE_CRASH_AT=<point>:1``, so the
process dies (exit 137, ``os._exit``) in batch 1, its first batch. It restarts the stream without
the setting on the same checkpoint (in the test process, on its warm JVM: the restart only has to be
another process than the one that died) and compares every Delta table and every warehouse
(emulator) table with an uninterrupted reference run.

At the crash the data root holds what it held when the crashed process also ran batch 0 (until
issue 30, ``<point>:2``): batch 0 committed everywhere, batch 1 cut at the point. The crashed
process no longer pays a cold batch 0 in its fresh JVM first, which halved a case (measured in
docs/TESTING.md), so every point runs in CI.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.faults import CRASH_EXIT_CODE, CRASH_POINTS
from app.paths import Layout
from tests.reliability.harness import (
    EXPECTED_BATCHES,
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

CRASH_HIT = 1  # the crashed process's first batch: batch 1 (batch 0 ran in the test process)
STREAM_POINTS = tuple(p for p in CRASH_POINTS if p != "ingest_before_rename")


# The reference is a whole stream run (1.5-3 min on 2 cores) that only the process tests here use:
# outside --quick, with them.
@pytest.mark.slow
def test_reference_run_has_several_batches_and_anomalies(reference):
    _, delta, warehouse, ledger = reference
    assert len(ledger) == EXPECTED_BATCHES, ledger
    assert delta["silver_crypto_clean"] and delta["crypto_anomalies"] and delta["gold_coin_ohlc"]
    assert len(warehouse["SILVER_CRYPTO_CLEAN"]) == len(delta["silver_crypto_clean"])


@pytest.mark.process
@pytest.mark.parametrize("point", STREAM_POINTS)
def test_crash_point_restart_matches_uninterrupted_run(point: str, reference, tmp_path: Path, spark):
    _, ref_delta, ref_warehouse, _ = reference
    root = tmp_path / "data"
    layout = Layout.from_root(str(root))
    write_fixed_bronze(layout, snapshots=SNAPSHOTS // 2)
    stream_in_process(spark, root)  # batch 0, committed by another process than the one that crashes
    write_fixed_bronze(layout, start=SNAPSHOTS // 2)

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
