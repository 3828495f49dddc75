"""Storage faults: permission denied and disk full, for the ingester and for the stream.

Each fault runs the real CLI in a subprocess and must end with exit 2 and one line
``coinlake: error: ...`` naming the cause, with no Python traceback on standard error. Then the
fault is removed and the run repeated: it must complete, leave no temp or partial file,
and (for the stream) give tables equal to the uninterrupted reference run, with every batch in
the warehouse ledger once. The stream's runs around the faulted one (batch 0 before it, the
re-run after it) run in the test process (:func:`harness.stream_in_process`); the ingester's
are cheap and stay subprocesses.

- Permission denied: the folder is made read-only (0555). The tests run as root here, which
  ignores file modes, so the CLI runs under ``setpriv`` without CAP_DAC_OVERRIDE /
  CAP_DAC_READ_SEARCH (``harness.unprivileged_prefix``): root is then held to the modes like any
  user, and gets a real EACCES.
- Disk full: the data root lives on a small tmpfs, filled with a filler file (skipped where
  mounting is not allowed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from app.paths import Layout
from app.sources.simulator import start_simulator
from tests.reliability.harness import (
    SNAPSHOTS,
    STREAM,
    delta_snapshot,
    diff_snapshots,
    fill_filesystem,
    ledger_rows,
    run_cli,
    small_tmpfs,
    stream_in_process,
    tail,
    traceback_lines,
    unprivileged_prefix,
    warehouse_snapshot,
    write_fixed_bronze,
    writes_denied,
)

INGEST_ENV = {"COINLAKE_TOP_N": "20", "COINLAKE_PER_PAGE": "10"}  # 2 pages


def _prefix() -> list[str]:
    prefix = unprivileged_prefix()
    if prefix is None:
        pytest.skip("running as root without setpriv: a chmod denial would not bind root")
    return prefix


def _assert_one_line_error(run, *needles: str) -> str:
    assert run.returncode == 2, tail(run)
    assert traceback_lines(run.stderr) == [], tail(run, 60)
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("coinlake: error: "), tail(run)
    for needle in needles:
        assert needle in last, last
    print(f"{run.args[0]} exit {run.returncode}: {last}")  # shown with -rP (docs/RELIABILITY.md)
    return last


def _files(root: Path) -> list[str]:
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)


def _bronze_pages(layout: Layout) -> list[dict]:
    return [
        json.loads(Path(p).read_text(encoding="utf-8"))
        for p in _files(Path(layout.bronze_root))
        if not os.path.basename(p).startswith(".")
    ]


def _ingest(root: Path, sim, **kwargs):
    return run_cli(
        "ingest", "--once", data_dir=root, COINLAKE_API_BASE_URL=sim.base_url, **INGEST_ENV, **kwargs
    )


def _runs_log(layout: Layout) -> list[dict]:
    path = Path(layout.logs_dir) / "ingest_runs.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_ingest_permission_denied_on_bronze_then_recovers(tmp_path: Path):
    prefix = _prefix()
    root = tmp_path / "data"
    layout = Layout.from_root(str(root))
    bronze = Path(layout.bronze_root)
    bronze.mkdir(parents=True)
    with start_simulator(port=0, coins=20, seed=3) as sim:
        with writes_denied(bronze):
            denied = _ingest(root, sim, prefix=prefix)
        last = _assert_one_line_error(
            denied, "ingest cycle failed: cannot write bronze page usd p1: Permission denied", str(bronze)
        )
        assert _files(bronze) == [], last
        again = _ingest(root, sim, prefix=prefix)
    assert again.returncode == 0, tail(again)
    assert [f for f in _files(bronze) if os.path.basename(f).startswith(".")] == []
    pages = _bronze_pages(layout)
    assert sorted(p["page"] for p in pages) == [1, 2] and all(len(p["data"]) == 10 for p in pages)
    assert [r["status"] for r in _runs_log(layout)] == ["failed", "ok"]


def test_ingest_disk_full_then_recovers(tmp_path: Path):
    with small_tmpfs(tmp_path / "mnt", "1m") as mnt:
        root = mnt / "data"
        layout = Layout.from_root(str(root))
        root.mkdir()
        filler = fill_filesystem(mnt)
        with start_simulator(port=0, coins=20, seed=3) as sim:
            full = _ingest(root, sim)
            _assert_one_line_error(
                full,
                "ingest cycle failed: cannot write bronze page usd p1: No space left on device",
                "cannot write the ingest run log: No space left on device",
            )
            # no temp, no partial page: at most empty folders and an empty run log
            leftovers = [f for f in _files(root) if os.path.getsize(f) > 0]
            assert leftovers == [], leftovers
            filler.unlink()
            again = _ingest(root, sim)
        assert again.returncode == 0, tail(again)
        assert [f for f in _files(root) if os.path.basename(f).startswith(".")] == []
        pages = _bronze_pages(layout)
        assert sorted(p["page"] for p in pages) == [1, 2] and all(len(p["data"]) == 10 for p in pages)
        assert [r["status"] for r in _runs_log(layout)] == ["ok"]  # the full disk could not log


def _first_half_then_rest(layout: Layout, root: Path, spark) -> None:
    """Batch 0 commits normally (in this process); the second half of the bronze set waits for the faulty run."""
    write_fixed_bronze(layout, snapshots=SNAPSHOTS // 2)
    stream_in_process(spark, root)
    write_fixed_bronze(layout, start=SNAPSHOTS // 2)


def _assert_equals_reference(layout: Layout, reference, spark) -> None:
    _, ref_delta, ref_warehouse, _ = reference
    assert diff_snapshots(ref_delta, delta_snapshot(spark, layout)) == []
    assert diff_snapshots(ref_warehouse, warehouse_snapshot(layout)) == []
    ledger = ledger_rows(layout)
    assert sorted(b for _, b in ledger) == [0, 1] and len({a for a, _ in ledger}) == 1, ledger


@pytest.mark.slow
@pytest.mark.process
def test_stream_permission_denied_on_a_delta_table_then_recovers(tmp_path: Path, reference, spark):
    """Gold's folder is read-only in batch 1: silver and anomalies commit, gold fails; the re-run converges."""
    prefix = _prefix()
    root = tmp_path / "data"
    layout = Layout.from_root(str(root))
    _first_half_then_rest(layout, root, spark)
    gold = Path(layout.table("gold_coin_ohlc"))
    with writes_denied(gold):
        denied = run_cli(*STREAM, data_dir=root, prefix=prefix)
    _assert_one_line_error(denied, "stream stopped by an error", "Permission denied", str(gold))
    assert sorted(b for _, b in ledger_rows(layout)) == [0]  # batch 1 never reached the warehouse

    stream_in_process(spark, root)  # the re-run: the fault is gone, the failed batch re-runs
    _assert_equals_reference(layout, reference, spark)


@pytest.mark.slow
@pytest.mark.process
def test_stream_disk_full_then_recovers(tmp_path: Path, reference, spark):
    """The data root is on a 64 MB tmpfs filled to its last 16 kB before batch 1."""
    with small_tmpfs(tmp_path / "mnt", "64m") as mnt:
        root = mnt / "data"
        layout = Layout.from_root(str(root))
        _first_half_then_rest(layout, root, spark)
        filler = fill_filesystem(mnt, leave_bytes=16 * 1024)
        full = run_cli(*STREAM, data_dir=root)
        _assert_one_line_error(full, "stream stopped by an error", "No space left on device")
        filler.unlink()

        stream_in_process(spark, root)  # the re-run: the fault is gone, the failed batch re-runs
        _assert_equals_reference(layout, reference, spark)
        temps = [f for f in _files(Path(layout.bronze_root)) if os.path.basename(f).startswith(".")]
        assert temps == []
