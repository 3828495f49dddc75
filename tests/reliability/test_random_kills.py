"""kill -9 at random moments of a long available-now run, restart on the same checkpoint, compare.

16 bronze pages at 2 files per trigger give an 8-batch run. ``coinlake stream --trigger
available-now`` is started in its own process group and killed with SIGKILL (the Python driver and
its JVM together: no shutdown hook, no cleanup) at a random moment, then restarted on the same data
root and checkpoint. After ``KILLS`` kills, a last start runs to the end in the test process (on its
warm JVM, like the restarts of the crash-point matrix: what is under test is the state the killed
processes left, not the process that finishes the run).

A kill moment is drawn from a seeded RNG relative to the run's own progress, so it lands inside the
batches on a fast machine and on a loaded one alike: after the query started (``stream.started``)
or, one time in four, after the attempt's first finished batch (``batch.done``), wait a random
0.05 to 1.0 batch durations (the median measured so far; the first attempt measures one first, so
it always dies after at least one finished batch). Over many runs kills fall in every phase of a
batch (parse, silver MERGE, anomalies, gold, warehouse, metadata, Spark's own commit after
``batch.done``); every crash point is also hit deterministically by ``test_crash_points.py``.

Every kill costs a JVM start and a cold batch (one to three minutes on a shared 2-core machine), so
``./dev.sh test`` (CI) makes ``COINLAKE_TEST_KILLS`` kills (default 3) with a seed that changes
every run (``COINLAKE_TEST_SEED``, printed in pytest's header and in every assertion message: set
it to replay a run's kill schedule; the moments are relative to the measured batch time, so the
schedule repeats, not the exact instants). ``./dev.sh test --torture`` makes 10 kills.

Then every Delta table and every warehouse (emulator) table must equal an uninterrupted run over the
same bronze, the warehouse ledger must hold each of the 8 batches exactly once under one app id,
and ``pipeline_metadata`` one ``ok`` row per batch.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from app.paths import STREAM_QUERY_NAME, Layout
from tests.reliability.harness import (
    STREAM,
    cli_env,
    delta_snapshot,
    diff_snapshots,
    ledger_rows,
    stream_in_process,
    warehouse_snapshot,
    write_fixed_bronze,
)

# The default of COINLAKE_TEST_KILLS; ./dev.sh test --torture sets 10.
DEFAULT_KILLS = 3
PAGES = 16
FILES_PER_TRIGGER = 2
BATCHES = PAGES // FILES_PER_TRIGGER
KILL_AFTER_BATCHES = (0.05, 1.0)  # the random part of a kill moment, in batch durations
AFTER_FIRST_BATCH = 0.25  # how often the kill moment counts from the attempt's first batch.done
START_TIMEOUT_SECONDS = 900
FINAL_ENV = {"COINLAKE_MAX_FILES_PER_TRIGGER": str(FILES_PER_TRIGGER)}
PROGRESS_EVENTS = ('"event": "stream.started"', '"event": "batch.done"')


@dataclass
class Attempt:
    """One start of the stream: when it was to be killed, and what it got done."""

    after_batches: int | None = None
    delay: float | None = None
    killed: bool = False
    returncode: int | None = None
    seconds: float = 0.0  # from the start of the process to its end (its JVM start included)
    marks: list[float] = field(default_factory=list)  # stream.started, then each batch.done
    lines: list[str] = field(default_factory=list)

    @property
    def batches_done(self) -> int:
        return max(0, len(self.marks) - 1)

    @property
    def batch_seconds(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]


def _run_attempt(root: Path, attempt: Attempt, fraction: float, estimate: float | None) -> Attempt:
    """Start the stream in a subprocess; SIGKILL its process group at the attempt's kill moment.

    The kill moment is ``fraction * estimate`` seconds after progress mark ``attempt.after_batches``
    (0: the query started, 1: the first batch.done); without an estimate the attempt measures its
    first batch and uses that.
    """
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", *STREAM],
        cwd=str(root.parent),
        env=cli_env(root, COINLAKE_MAX_FILES_PER_TRIGGER=str(FILES_PER_TRIGGER)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if any(event in line for event in PROGRESS_EVENTS):
                attempt.marks.append(time.monotonic())
            attempt.lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        arm = attempt.after_batches or 0
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while len(attempt.marks) <= arm and proc.poll() is None:
            assert time.monotonic() < deadline, "no progress: " + "\n".join(attempt.lines[-20:])
            time.sleep(0.05)
        if proc.poll() is None:
            per_batch = estimate if estimate is not None else attempt.marks[1] - attempt.marks[0]
            attempt.delay = fraction * per_batch
            kill_at = attempt.marks[arm] + attempt.delay
            try:
                proc.wait(timeout=max(0.0, kill_at - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the driver and its JVM, at once
                attempt.killed = True
    finally:
        if proc.poll() is None and not attempt.killed:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=120)
        reader.join(timeout=30)
    attempt.returncode = proc.returncode
    attempt.seconds = time.monotonic() - started
    return attempt


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, spark):
    """The same pages in one batch, never interrupted, in this process (tables do not depend on the batching)."""
    root = tmp_path_factory.mktemp("kills_reference") / "data"
    layout = Layout.from_root(str(root))
    write_fixed_bronze(layout, snapshots=PAGES)
    stream_in_process(spark, root, COINLAKE_MAX_FILES_PER_TRIGGER=str(PAGES))
    return delta_snapshot(spark, layout), warehouse_snapshot(layout)


@pytest.mark.slow
@pytest.mark.process
def test_random_kill_9_then_restart_equals_an_uninterrupted_run(
    tmp_path: Path, uninterrupted, spark, test_seed: int
):
    ref_delta, ref_warehouse = uninterrupted
    kills = int(os.environ.get("COINLAKE_TEST_KILLS", DEFAULT_KILLS))
    assert kills >= 1, f"COINLAKE_TEST_KILLS must be at least 1, found {kills}"
    root = tmp_path / "data"
    layout = Layout.from_root(str(root))
    write_fixed_bronze(layout, snapshots=PAGES)
    rng = random.Random(test_seed)

    attempts: list[Attempt] = []
    while sum(a.killed for a in attempts) < kills:
        measured = sorted(x for a in attempts for x in a.batch_seconds)
        estimate = measured[len(measured) // 2] if measured else None
        after_first = rng.random() < AFTER_FIRST_BATCH or estimate is None
        attempt = Attempt(after_batches=1 if after_first else 0)
        _run_attempt(root, attempt, rng.uniform(*KILL_AFTER_BATCHES), estimate)
        attempts.append(attempt)
        if not attempt.killed:
            break  # finished before its kill moment: nothing left to kill (fails below)
        assert attempt.returncode == -signal.SIGKILL, attempt.lines[-20:]
    schedule = [
        (
            a.after_batches,
            round(a.delay, 2) if a.delay is not None else None,
            a.batches_done,
            round(a.seconds),
        )
        for a in attempts
    ]
    summary = (
        f"seed {test_seed} (COINLAKE_TEST_SEED), attempts (kill after batch, delay s, batches done,"
        f" process s) {schedule}"
    )
    assert all(a.killed for a in attempts), f"an attempt finished before its kill moment; {summary}"
    # The last start, in this process: every batch it runs must finish ok (stream_in_process checks
    # it). None is left when the last kill came after Spark committed the last batch.
    commits = Path(layout.checkpoint(STREAM_QUERY_NAME)) / "commits"
    finished = (commits / str(BATCHES - 1)).exists()
    started = time.monotonic()
    final_batches = 0 if finished else len(stream_in_process(spark, root, **FINAL_ENV).batches)
    summary += f", then {final_batches} batches in the test process in {time.monotonic() - started:.0f} s"
    print(summary)  # shown with -rP
    # kills happened inside batches, not only before the first one
    assert sum(a.batches_done for a in attempts) > 0, summary
    assert sum(a.batches_done for a in attempts) + final_batches >= BATCHES, summary

    assert diff_snapshots(ref_delta, delta_snapshot(spark, layout)) == [], summary
    assert diff_snapshots(ref_warehouse, warehouse_snapshot(layout)) == [], summary
    ledger = ledger_rows(layout)
    assert sorted(b for _, b in ledger) == list(range(BATCHES)), (ledger, summary)
    assert len({a for a, _ in ledger}) == 1, ledger
    meta = (
        spark.read.format("delta")
        .load(layout.table("pipeline_metadata"))
        .filter((F.col("kind") == "stream_batch") & (F.col("status") == "ok"))
        .groupBy("batch_id")
        .count()
        .collect()
    )
    assert sorted((r["batch_id"], r["count"]) for r in meta) == [(b, 1) for b in range(BATCHES)], summary
