"""The ``age`` section: what a trigger and the checkpoint cost on an old lake, per bronze source.

* idle trigger: a lake holding N bronze files already processed (zero-byte synthetic files, one a
  minute with landing names, so N = 500,000 is about a year), an interval stream with nothing new:
  the wall time of its idle triggers (Spark's ``triggerExecution``, and ``latestOffset``, the
  listing). The listing source starts from the offset a run that read all N files ends with
  (:func:`app.sources.bronze_offsets.seed_offset`, the migration's seed), so no Spark time goes
  into reading them first; the file source has to read them once (a first batch into ``noop``).
* freshness: the full pipeline on an interval trigger; after one warm-up page, a new page of
  ``coins`` records lands and the time to its batch's end (``batch.done``) is taken, on a fresh
  lake and on the lake of the largest N.
* checkpoint growth: ``batches`` one-file batches (``foreachBatch`` doing nothing), checkpoint
  bytes after the first ``warmup`` batches and at the end, per 100 batches (Spark keeps the
  offsets and commits of the last 100 batches, so only what outlives them grows).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from app.paths import Layout
from app.sources.bronze import read_bronze_stream
from app.sources.landing import bronze_file_name

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

START = datetime(2025, 1, 1, tzinfo=UTC)
IDLE_INTERVAL = "1 second"


@dataclass
class IdleResult:
    """Idle triggers of one source over a lake of ``files`` processed files."""

    source: str
    files: int
    trigger_s: list[float] = field(default_factory=list)
    listing_s: list[float] = field(default_factory=list)


def synthetic_bronze(layout: Layout, files: int, *, start: datetime = START) -> datetime:
    """``files`` zero-byte bronze files, one a minute from ``start``; returns the last one's time.

    Each file's and folder's modification time is the file's fetch time, as if it had landed then
    (the listing source looks into a folder by its time).
    """
    at = start
    newest: dict[str, float] = {}
    for i in range(files):
        at = start + timedelta(minutes=i)
        folder = layout.bronze_day(at.date().isoformat())
        if i == 0 or at.hour == at.minute == 0:
            os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, bronze_file_name(at, "usd", 1, "synthetic"))
        with open(path, "wb"):
            pass
        os.utime(path, (at.timestamp(), at.timestamp()))
        newest[folder] = at.timestamp()
    for folder, stamp in newest.items():
        os.utime(folder, (stamp, stamp))
    return at


def synthetic_lake(root: str, files: int) -> tuple[Layout, datetime]:
    """A data root whose bronze holds ``files`` synthetic files and nothing else (no table, no checkpoint).

    The bronze of the last call is kept when it has the same size (500,000 files take minutes to
    write), so one size's idle triggers of both sources and its freshness run share it.
    """
    layout = Layout.from_root(root)
    marker = os.path.join(root, ".synthetic_files")
    last = START + timedelta(minutes=max(files - 1, 0))
    if os.path.exists(marker) and open(marker, encoding="utf-8").read() == str(files):
        for folder in ("checkpoints", "tables", "logs", "alerts"):
            shutil.rmtree(os.path.join(root, folder), ignore_errors=True)
        return layout, last
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(layout.bronze_root, exist_ok=True)
    synthetic_bronze(layout, files)
    with open(marker, "w", encoding="utf-8") as fh:
        fh.write(str(files))
    return layout, last


def listing_seed(layout: Layout, checkpoint: str, *, late_minutes: float = 60.0) -> str:
    """Write the listing source's seed for ``checkpoint``: every bronze file counts as read."""
    import json

    from app.sources.bronze_migration import seed_file, seed_for
    from app.sources.bronze_source import list_day, list_days

    keys = [k for day in list_days(layout.bronze_root) for k in list_day(layout.bronze_root, day)]
    seed = seed_for(layout.bronze_root, keys, keys, late_minutes=late_minutes)
    path = seed_file(checkpoint)
    os.makedirs(checkpoint, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(seed.to_json(), fh)
    return path


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"age: timed out waiting for {what}")
        time.sleep(0.2)


def idle_triggers(spark: SparkSession, root: str, files: int, *, source: str, triggers: int) -> IdleResult:
    """Idle trigger times of ``source`` (``listing`` or ``files``) over ``files`` processed files."""
    layout, _ = synthetic_lake(root, files)
    checkpoint = os.path.join(root, "checkpoints", f"idle_{source}")
    seed = listing_seed(layout, checkpoint) if source == "listing" else None
    previous = spark.conf.get("spark.sql.streaming.noDataProgressEventInterval", None)
    spark.conf.set("spark.sql.streaming.noDataProgressEventInterval", "0")  # report every idle trigger
    try:
        query = (
            read_bronze_stream(
                spark,
                layout.bronze_root,
                max_files_per_trigger=max(files, 1),
                source=source,  # type: ignore[arg-type]
                seed_file=seed,
            )
            .writeStream.format("noop")
            .option("checkpointLocation", checkpoint)
            .trigger(processingTime=IDLE_INTERVAL)
            .start()
        )
        result = IdleResult(source=source, files=files)
        try:

            def idle() -> list[dict[str, Any]]:
                # a trigger that ran no batch has no addBatch time (zero-byte files give 0 rows either way)
                return [p for p in query.recentProgress if "addBatch" not in p["durationMs"]]

            # the file source's first batch reads the files (that is "already processed")
            _wait(
                lambda: len(idle()) >= triggers + 1 or not query.isActive, 600 + files / 100, "idle triggers"
            )
        finally:
            query.stop()
        if query.exception() is not None:
            raise RuntimeError(f"age: the {source} stream failed: {query.exception()}")
        for p in idle()[1 : triggers + 1]:  # the first one also starts the source (and its Python worker)
            result.trigger_s.append(p["durationMs"].get("triggerExecution", 0) / 1000)
            result.listing_s.append(p["durationMs"].get("latestOffset", 0) / 1000)
        return result
    finally:
        if previous is None:
            spark.conf.unset("spark.sql.streaming.noDataProgressEventInterval")
        else:
            spark.conf.set("spark.sql.streaming.noDataProgressEventInterval", previous)


def checkpoint_growth(
    spark: SparkSession, root: str, *, source: str, batches: int, warmup: int
) -> tuple[int, int, float]:
    """Checkpoint bytes after ``warmup`` and after ``batches`` one-file batches; growth per 100 batches."""
    shutil.rmtree(root, ignore_errors=True)
    layout = Layout.from_root(root)
    checkpoint = os.path.join(root, "checkpoints", f"growth_{source}")

    def land(first: int, count: int) -> None:
        for i in range(first, first + count):
            at = START + timedelta(minutes=i)
            folder = layout.bronze_day(at.date().isoformat())
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, bronze_file_name(at, "usd", 1, "growth")), "w") as fh:
                fh.write("{}")

    def run() -> None:
        query = (
            read_bronze_stream(spark, layout.bronze_root, max_files_per_trigger=1, source=source)  # type: ignore[arg-type]
            .writeStream.foreachBatch(lambda df, batch_id: None)
            .option("checkpointLocation", checkpoint)
            .trigger(availableNow=True)
            .start()
        )
        query.awaitTermination()
        if query.exception() is not None:
            raise RuntimeError(f"age: the {source} stream failed: {query.exception()}")

    land(0, warmup)
    run()
    after_warmup = _tree_bytes(checkpoint)
    land(warmup, batches - warmup)
    run()
    at_end = _tree_bytes(checkpoint)
    return after_warmup, at_end, (at_end - after_warmup) * 100 / (batches - warmup)


def _tree_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(path) for n in names)


def freshness(
    spark: SparkSession, root: str, *, processed: int, coins: int, shuffle_partitions: int, snapshots: int = 3
) -> list[float]:
    """Seconds from a new ``coins``-record snapshot landing to its batch's end, over ``processed`` old
    files: one per snapshot after a warm-up one."""
    from app.batch.handler import BatchHandler
    from app.config import load_settings
    from app.stream import default_stages, start_stream
    from bench.workload import generate

    layout, last = synthetic_lake(root, processed)
    os.remove(os.path.join(root, ".synthetic_files"))  # the snapshots landed below make it another lake
    if processed:
        listing_seed(layout, layout.checkpoint())
    settings = load_settings(
        data_dir=root, warehouse="none", shuffle_partitions=shuffle_partitions, optimize_every_batches=0
    )
    done: list[tuple[float, int]] = []  # (batch end, records read so far)
    lock = threading.Condition()

    def on_batch(meta: Any) -> None:
        with lock:
            done.append((time.monotonic(), (done[-1][1] if done else 0) + int(meta.records_read)))
            lock.notify_all()

    handler = BatchHandler(
        layout=layout,
        settings=settings,
        checkpoint=layout.checkpoint(),
        stages=default_stages(settings),
        on_batch=on_batch,
    )
    query = start_stream(spark, settings, layout, handler, trigger="interval", every="1s")
    try:
        seconds = []
        for cycle in range(snapshots + 1):  # a warm-up snapshot, then the measured ones
            time.sleep(2.0)  # let an idle trigger pass first
            landed = time.monotonic()
            generate(layout, coins=coins, snapshots=1, start=last + timedelta(hours=1), first_cycle=cycle)

            def read_all(n: int = cycle) -> bool:
                return (bool(done) and done[-1][1] >= coins * (n + 1)) or not query.isActive

            with lock:
                if not lock.wait_for(read_all, timeout=900):
                    raise RuntimeError("age: the snapshot was not read within 900 s")
            if query.exception() is not None:
                raise RuntimeError(f"age: the pipeline failed: {query.exception()}")
            if cycle:
                seconds.append(done[-1][0] - landed)
        return seconds
    finally:
        query.stop()
