"""The bronze streaming source: a Spark Python Data Source whose cost follows what landed, not bronze's age.

Spark's file source lists every ``dt=`` folder on every trigger (idle ones too) and logs every file
it ever read in its checkpoint, so a year-old lake pays for the whole year on each trigger
(docs/BENCHMARKS.md, section ``age``). This source (format :data:`FORMAT`) keeps an offset
(:mod:`app.sources.bronze_offsets`) instead: a trigger lists the bronze root's ``dt=`` names and the
folders from the admission window's day on, and the offset holds the window's keys and the batch's
files, both bounded.

Listing and reading use plain Python file I/O through :func:`app.paths.local_path`: a local root, a
``dbfs:/`` root (the ``/dbfs`` mount) or a Unity Catalog volume (``/Volumes/...``). Other URI
schemes (``s3://``) need ``COINLAKE_BRONZE_SOURCE=files``.

Rows are ``value`` (the file's whole text, UTF-8 with malformed bytes replaced, a BOM kept) and
``source_file`` (the file's URI as Spark's ``_metadata.file_path`` spells it), zero-byte files
included (their ``value`` is ``""``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import (
    ReadAllAvailable,
    ReadLimit,
    ReadMaxFiles,
    SupportsTriggerAvailableNow,
)

from app.paths import local_path
from app.sources.bronze_offsets import (
    LANDING_SLACK_SECONDS,
    BronzeOffset,
    days_to_list,
    file_key,
    plan_next,
    split_key,
)

logger = logging.getLogger(__name__)

FORMAT = "coinlake_bronze"
SCHEMA = "value STRING, source_file STRING"
# Files per read task: Spark's file source packs small files about this densely (4 MB open cost
# against 128 MB splits), so a 100-file batch keeps the same parallelism.
FILES_PER_PARTITION = 32
DAY_PREFIX = "dt="
# Written into the checkpoint folder by a migration from the file source (app.sources.bronze_migration).
SEED_FILE = "bronze_source_seed.json"


def is_listable(bronze_root: str) -> bool:
    """Whether plain Python file I/O reaches ``bronze_root`` (a local path, ``dbfs:/`` or a volume)."""
    return "://" not in bronze_root and (not bronze_root.startswith(("file:", "s3:", "gs:", "abfss:")))


def file_uri(bronze_root: str, key: str) -> str:
    """The URI Spark's ``_metadata.file_path`` gives the file of ``key`` (``file:/x/a%20b/...``)."""
    day, name = split_key(key)
    path = f"{bronze_root.rstrip('/')}/{DAY_PREFIX}{day}/{name}"
    if path.startswith("dbfs:/"):
        return path
    return "file:" + quote(os.path.abspath(path), safe="/:@!$&'()*+,;=-._~")


def list_days(bronze_root: str) -> list[str]:
    """The days (``YYYY-MM-DD``) of the ``dt=`` folders under ``bronze_root``; one directory read."""
    return sorted(day_times(bronze_root))


def day_times(bronze_root: str) -> dict[str, float]:
    """Each ``dt=`` folder's day and modification time: one directory read and one stat per folder.

    A file landing in a folder is renamed into it, which sets the folder's time, so a folder whose
    time is older than a listing has had no file land in it since. Storage that keeps no folder
    times (0) gives ``inf``: such a folder counts as changed at every listing.
    """
    root = local_path(bronze_root)
    try:
        entries = os.scandir(root)
    except FileNotFoundError:
        return {}
    with entries:
        return {
            e.name[len(DAY_PREFIX) :]: (e.stat().st_mtime or math.inf)
            for e in entries
            if e.name.startswith(DAY_PREFIX) and e.is_dir()
        }


def list_day(bronze_root: str, day: str) -> list[str]:
    """Keys of the bronze files of ``dt=<day>``: ``*.json``, not dot- or underscore-prefixed (temp files)."""
    try:
        entries = os.scandir(os.path.join(local_path(bronze_root), f"{DAY_PREFIX}{day}"))
    except FileNotFoundError:
        return []
    with entries:
        return [
            file_key(day, e.name)
            for e in entries
            if e.name.endswith(".json") and not e.name.startswith((".", "_")) and e.is_file()
        ]


@dataclass
class Listing:
    """What a trigger's listing found (:func:`list_bronze`).

    Attributes:
        unread: keys unread by name (:meth:`BronzeOffset.is_unread`), in key order.
        late: keys below the admission window that landed since the offset's listing
            (:meth:`BronzeOffset.landed_late`).
        mtimes: landing times of the late files.
        at: the file system time of this listing (the newest ``dt=`` folder's time).
        known: on a new checkpoint's first listing (no ``at`` yet), the files below the window
            that landed within the slack of ``at`` and are not to be read (a lookback's older
            days), with their landing times (:func:`plan_next`'s ``known``).
    """

    unread: list[str] = field(default_factory=list)
    late: list[str] = field(default_factory=list)
    mtimes: dict[str, float] = field(default_factory=dict)
    at: float | None = None
    known: dict[str, float] = field(default_factory=dict)

    @property
    def keys(self) -> list[str]:
        """Every key to read, in key order."""
        return sorted({*self.unread, *self.late})


def list_bronze(
    bronze_root: str, start: BronzeOffset, *, enough: int | None, only: frozenset[str] | None = None
) -> Listing:
    """The files a trigger may read: unread by name from ``start.lb``'s day on, and late ones below.

    Folders from the window's day on are listed in day order, and the listing stops after the
    folder that brings the count above ``enough`` (later folders only hold greater keys), so a
    backlog of a year costs one folder per batch, not the year. A folder before the window's day
    is listed only when its time says a file landed in it since ``start``'s listing (or it holds a
    pending late file); in a listed folder, files below the window are stat'ed only then too
    (:meth:`BronzeOffset.landed_late`).

    Args:
        bronze_root: ``Layout.bronze_root``.
        start: the offset of the trigger.
        enough: stop once more than this many are found; None lists every folder.
        only: keep only these keys (the snapshot of an available-now run).
    """
    days = day_times(bronze_root)
    known = [t for t in days.values() if t != math.inf]
    listing = Listing(at=max(known) if known else None)
    since = start.since()
    first = days_to_list(start, days)
    changed = [d for d in sorted(days) if since is not None and days[d] >= since]
    if since is None and listing.at is not None:  # the first listing: note what it leaves behind
        listing.known = recent_file_times(bronze_root, days, listing.at - LANDING_SLACK_SECONDS)
        listing.known = {k: t for k, t in listing.known.items() if not start.is_unread(k)}
    pending = [split_key(k)[0] for k in start.pending if split_key(k)[0] in days]
    root = local_path(bronze_root)
    for day in sorted({*first, *changed, *pending}):
        look_late = since is not None and days[day] >= since
        unread: list[str] = []
        for k in list_day(bronze_root, day):
            if only is not None and k not in only:
                continue
            if start.is_unread(k):
                unread.append(k)
            elif look_late and k < start.lb and k not in start.recent:
                mtime = _mtime(root, k)
                if mtime is not None and start.landed_late(k, mtime):
                    listing.late.append(k)
                    listing.mtimes[k] = mtime
        listing.unread.extend(sorted(unread))
        if enough is not None and day in first and len(listing.unread) > enough:
            break
    listing.late.sort()
    return listing


def list_unread(
    bronze_root: str, start: BronzeOffset, *, enough: int | None, only: frozenset[str] | None = None
) -> list[str]:
    """Every key a trigger may read (:func:`list_bronze`), in key order."""
    return list_bronze(bronze_root, start, enough=enough, only=only).keys


def file_times(bronze_root: str, keys: Sequence[str]) -> dict[str, float]:
    """Landing times of the files of ``keys`` (:mod:`app.sources.bronze_offsets`: the later of the
    modification and status-change times; one stat each; a vanished file is left out)."""
    root = local_path(bronze_root)
    times = {k: _mtime(root, k) for k in keys}
    return {k: t for k, t in times.items() if t is not None}


def recent_file_times(bronze_root: str, days: Mapping[str, float], since: float) -> dict[str, float]:
    """Times of the files at least as new as ``since``, looking only into folders changed since then
    (a file is renamed into its folder after it is written, so it is never newer than its folder)."""
    keys = [k for day, t in sorted(days.items()) if t >= since for k in list_day(bronze_root, day)]
    return {k: t for k, t in file_times(bronze_root, keys).items() if t >= since}


def _mtime(root: str, key: str) -> float | None:
    day, name = split_key(key)
    try:
        st = os.stat(os.path.join(root, f"{DAY_PREFIX}{day}", name))
    except FileNotFoundError:
        return None
    return max(st.st_mtime, st.st_ctime)


class BronzePartition(InputPartition):
    """The files one read task reads: ``(local path, URI)`` pairs."""

    def __init__(self, files: list[tuple[str, str]]) -> None:
        super().__init__(files)
        self.files = files


def batch_offset_files(offset_json: dict[str, Any]) -> list[str]:
    """The URIs of the files of the batch that ends at ``offset_json`` (an offset of this source)."""
    root = str(offset_json.get("root", ""))
    return [file_uri(root, k) for k in BronzeOffset.from_json(offset_json).batch]


def read_files(files: Sequence[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """``(text, uri)`` per file: the whole file decoded as UTF-8 (bad bytes replaced), ``""`` when empty."""
    for path, uri in files:
        with open(path, "rb") as fh:
            yield fh.read().decode("utf-8", errors="replace"), uri


class BronzeStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """Offsets, planning and reading of :class:`BronzeDataSource` (runs in Spark's Python workers)."""

    def __init__(self, options: Mapping[str, str]) -> None:
        opts = {str(k).lower(): str(v) for k, v in options.items()}  # Spark's options ignore case
        self.root = opts["path"]
        self.max_files = int(opts.get("maxfilespertrigger", "100"))
        self.late_minutes = float(opts.get("lateminutes", "60"))
        self.start_key = opts.get("startkey", "")
        self.seed = opts.get("seedfile", "")
        self.available_now = False
        self.snapshot: frozenset[str] | None = None  # the files of an available-now run

    def initialOffset(self) -> dict[str, Any]:  # noqa: N802 - Spark's API
        """A new checkpoint starts at ``startKey``, or at a migration's seed when there is one."""
        if self.seed and os.path.exists(local_path(self.seed)):
            with open(local_path(self.seed), encoding="utf-8") as fh:
                return self._json(BronzeOffset.from_json(json.load(fh)))
        return self._json(BronzeOffset.starting_at(self.start_key))

    def getDefaultReadLimit(self) -> ReadLimit:  # noqa: N802 - Spark's API
        """``maxFilesPerTrigger`` files per batch."""
        return ReadMaxFiles(self.max_files)

    def prepareForTriggerAvailableNow(self) -> None:  # noqa: N802 - Spark's API
        """Read only the files present now: the first listing of the run becomes its snapshot."""
        self.available_now = True

    def latestOffset(self, start: dict[str, Any], limit: ReadLimit) -> dict[str, Any]:  # noqa: N802
        """The offset ending the next batch: the smallest unread keys, at most the limit's files."""
        began = time.monotonic()
        offset = BronzeOffset.from_json(start)
        max_files = limit.max_files if isinstance(limit, ReadMaxFiles) else None
        if isinstance(limit, ReadAllAvailable):
            max_files = None
        if self.available_now and self.snapshot is None:
            self.snapshot = frozenset(list_unread(self.root, offset, enough=None))
        listing = list_bronze(self.root, offset, enough=max_files, only=self.snapshot)
        keys = listing.keys
        # the times of the files this batch can take (for ``recent``), one stat each
        mtimes = {**file_times(self.root, keys if max_files is None else keys[:max_files]), **listing.mtimes}
        end = plan_next(
            offset,
            listing.unread,
            max_files=max_files,
            late_minutes=self.late_minutes,
            late=listing.late,
            mtimes=mtimes,
            at=listing.at,
            known=listing.known,
        )
        if listing.late:
            logger.warning(
                "bronze.late_files below the admission window, read by this trigger: %d (first %s)",
                len(listing.late),
                listing.late[0],
            )
        logger.debug(
            "bronze.listed unread=%d late=%d batch=%d seconds=%.3f",
            len(listing.unread),
            len(listing.late),
            len(end.batch),
            time.monotonic() - began,
        )
        return start if end is offset else self._json(end)

    def partitions(self, start: dict[str, Any], end: dict[str, Any]) -> Sequence[InputPartition]:
        """The batch's files (from the end offset, so a re-run reads the same ones), in read tasks."""
        if start == end:
            return []
        keys = BronzeOffset.from_json(end).batch
        files = [(self._local(k), file_uri(self.root, k)) for k in keys]
        return [
            BronzePartition(files[i : i + FILES_PER_PARTITION])
            for i in range(0, len(files), FILES_PER_PARTITION)
        ]

    def read(self, partition: InputPartition) -> Iterator[tuple[str, str]]:
        """The rows of one read task."""
        assert isinstance(partition, BronzePartition)
        return read_files(partition.files)

    def commit(self, end: dict[str, Any]) -> None:
        """Nothing to release: the offset is the whole state."""

    def _json(self, offset: BronzeOffset) -> dict[str, Any]:
        # The root rides along so the checkpoint alone names a batch's files (batch_offset_files).
        return {**offset.to_json(), "root": self.root}

    def _local(self, key: str) -> str:
        day, name = split_key(key)
        return os.path.join(local_path(self.root), f"{DAY_PREFIX}{day}", name)


class BronzeDataSource(DataSource):
    """``spark.readStream.format("coinlake_bronze").option("path", bronze_root)``.

    Options: ``path`` (``Layout.bronze_root``), ``maxFilesPerTrigger``, ``lateMinutes`` (the
    admission window), ``startKey`` (where a new checkpoint starts: ``""`` all of bronze,
    ``YYYY-MM-DD/`` a day) and ``seedFile`` (a migrated checkpoint's first offset).
    """

    @classmethod
    def name(cls) -> str:
        """The format name."""
        return FORMAT

    def schema(self) -> str:
        """``value STRING, source_file STRING``."""
        return SCHEMA

    def streamReader(self, schema: Any) -> DataSourceStreamReader:  # noqa: N802 - Spark's API
        """The reader of this source."""
        return BronzeStreamReader(self.options)
