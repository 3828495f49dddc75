"""The bronze source's offset and the rule that picks a trigger's files (pure: no I/O, no Spark).

A bronze file is ordered by its **key** ``<YYYY-MM-DD>/<name>``: its ``dt=`` folder, then its name.
Landing names start with the fetch time (``coins_markets_<YYYYMMDDTHHMMSSfffZ>_...``,
:func:`app.sources.landing.bronze_file_name`) and never repeat, so within a day the key order is the
ingester's time order. The offset (:class:`BronzeOffset`) is

* ``hw``, the high-water key: the greatest key read so far. Every file above it is new.
* ``lb``, the admission window's lower bound: files with ``lb <= key <= hw`` that were not read
  are **late** (a second ingester with a slower clock, a copy restored by hand) and are admitted by
  the next trigger. ``lb`` trails ``hw`` by ``late_minutes`` of fetch time
  (:func:`window_start`), never moves back, and never moves past a file it knows is unread.
* ``seen``, the keys read in ``[lb, hw]``: bounded by the files landed in ``late_minutes``.
* ``batch``, the keys of the micro-batch that ends at this offset (at most ``maxFilesPerTrigger``),
  so a batch re-run after a crash reads exactly the same files, whatever landed since.
* ``seq``, a counter that makes every new offset differ from the previous one.
* ``at``, the bronze file system's time of the listing that made the offset: the newest
  modification time of a ``dt=`` folder (a file landing in a folder renames into it, which sets the
  folder's time). None until the first batch.
* ``recent``, the keys read whose landing time is within :data:`LANDING_SLACK_SECONDS` of ``at``
  (with those times): at most the files landed in those seconds. A file's **landing time** is the
  later of its modification and status-change times: a rename sets the status-change time, and a
  copy (even ``cp -p``) cannot set it back.
* ``pending``, keys below ``lb`` found late that the batch could not take (``maxFilesPerTrigger``).

**Below the window.** A file landing with a key below ``lb`` (more than ``late_minutes`` older
than the newest file read: a copy of an old page restored by hand, a clock hours slow) is found by
its landing time instead of its name: a trigger looks into every folder changed since ``at`` and
admits a file below ``lb`` whose landing time is at least ``at - LANDING_SLACK_SECONDS`` and which
is not in ``recent`` (read already). A file that lands after a listing has a landing time at least
that listing's ``at`` (both are the file system's own clock, whatever the writer's); one landed
before it was visible to it, and was read or is still unread by name. So no landed file is skipped
and none is read twice. The slack covers timestamps of a coarse clock tick and a file system that
keeps only the modification time (the write before the rename).

:func:`plan_next` takes the smallest unread keys first, so after a trigger no unread file that
was listed sorts below ``hw``; only a file that appears later can be late.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

OFFSET_VERSION = 1
# How much older than the last listing (file system time) a file found below the window may be and
# still count as landed since: a coarse clock tick, and the write-to-rename gap where a file system
# keeps no status-change time. ``recent`` holds the files read that landed within it.
LANDING_SLACK_SECONDS = 2.0
# ``coins_markets_<YYYYMMDDTHHMMSS><fff>Z_...`` (app.sources.landing.bronze_file_name).
_LANDING_STAMP = re.compile(r"^coins_markets_(\d{8}T\d{6})(\d{3})Z_")
LANDING_PREFIX = "coins_markets_"


def file_key(day: str, name: str) -> str:
    """The order key of the file ``dt=<day>/<name>``: ``<day>/<name>``."""
    return f"{day}/{name}"


def split_key(key: str) -> tuple[str, str]:
    """``(day, name)`` of a key; the inverse of :func:`file_key`."""
    day, _, name = key.partition("/")
    return day, name


def key_time(key: str) -> datetime:
    """The fetch time a key stands for: the landing name's stamp, or its day's midnight (UTC).

    A hand-placed name (``restored.json``) has no stamp; its day's start is the earliest time it
    can stand for, which only widens the admission window.
    """
    day, name = split_key(key)
    match = _LANDING_STAMP.match(name)
    if match:
        stamp, millis = match.groups()
        return datetime.strptime(stamp, "%Y%m%dT%H%M%S").replace(microsecond=int(millis) * 1000, tzinfo=UTC)
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), tzinfo=UTC)


def time_key(moment: datetime) -> str:
    """The smallest landing key at ``moment``: no landing file fetched at or after it sorts below."""
    ts = moment.astimezone(UTC)
    stamp = ts.strftime("%Y%m%dT%H%M%S") + f"{ts.microsecond // 1000:03d}Z"
    return file_key(ts.date().isoformat(), f"{LANDING_PREFIX}{stamp}")


def day_key(day: date) -> str:
    """A key below every file of ``dt=<day>`` and above every file of the days before."""
    return f"{day.isoformat()}/"


def window_start(hw: str, late_minutes: float) -> str:
    """The admission window's lower bound for the high-water key ``hw`` (``""`` when nothing was read).

    Args:
        hw: the greatest key read.
        late_minutes: how much older (in fetch time) than the newest file read a file may be and
            still be admitted when it lands late.

    Returns:
        A key at most ``hw``.
    """
    if not hw:
        return ""
    return min(time_key(key_time(hw) - timedelta(minutes=late_minutes)), hw)


@dataclass(frozen=True)
class BronzeOffset:
    """Where the bronze source stands; see the module docstring. Serialised by :meth:`to_json`."""

    hw: str = ""
    lb: str = ""
    seen: frozenset[str] = field(default_factory=frozenset)
    batch: tuple[str, ...] = ()
    seq: int = 0
    at: float | None = None
    recent: Mapping[str, float] = field(default_factory=dict)
    pending: tuple[str, ...] = ()

    @classmethod
    def starting_at(cls, key: str) -> BronzeOffset:
        """An offset that reads every file with a key at or above ``key`` (``""``: all of bronze)."""
        return cls(hw=key, lb=key)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict: ``seen`` grouped by day (names only), ``batch`` as keys."""
        by_day: dict[str, list[str]] = {}
        for key in sorted(self.seen):
            day, name = split_key(key)
            by_day.setdefault(day, []).append(name)
        return {
            "v": OFFSET_VERSION,
            "seq": self.seq,
            "hw": self.hw,
            "lb": self.lb,
            "seen": by_day,
            "batch": list(self.batch),
            "at": self.at,
            "recent": dict(sorted(self.recent.items())),
            "pending": list(self.pending),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BronzeOffset:
        """The offset of :meth:`to_json`.

        Raises:
            ValueError: ``data`` is not an offset of this source (e.g. a file source's
                ``{"logOffset": 12}``) or has another version.
        """
        if not isinstance(data, Mapping) or data.get("v") != OFFSET_VERSION:
            raise ValueError(f"not a bronze source offset (version {OFFSET_VERSION}): {str(data)[:200]}")
        seen = frozenset(file_key(day, name) for day, names in data.get("seen", {}).items() for name in names)
        return cls(
            hw=str(data["hw"]),
            lb=str(data["lb"]),
            seen=seen,
            batch=tuple(str(k) for k in data.get("batch", ())),
            seq=int(data["seq"]),
            at=None if data.get("at") is None else float(data["at"]),
            recent={str(k): float(v) for k, v in (data.get("recent") or {}).items()},
            pending=tuple(str(k) for k in data.get("pending", ())),
        )

    def is_unread(self, key: str) -> bool:
        """Whether a listed file with this key is to be admitted by its name: above ``hw``, late in
        the window, or found late below it and not taken yet (files found by their time:
        :meth:`landed_late`)."""
        return key > self.hw or (key >= self.lb and key not in self.seen) or key in self.pending

    def since(self) -> float | None:
        """The oldest landing time a file below the window may have to count as landed since
        this offset's listing; None when the offset has no listing time (nothing is found late)."""
        return None if self.at is None else self.at - LANDING_SLACK_SECONDS

    def landed_late(self, key: str, mtime: float) -> bool:
        """Whether a file below the window with this landing time landed after this offset's
        listing (and was not read already)."""
        since = self.since()
        return (
            since is not None
            and key < self.lb
            and mtime >= since
            and key not in self.recent
            and key not in self.pending
        )


def plan_next(
    start: BronzeOffset,
    listed: Iterable[str],
    *,
    max_files: int | None,
    late_minutes: float,
    late: Iterable[str] = (),
    mtimes: Mapping[str, float] | None = None,
    at: float | None = None,
    known: Mapping[str, float] | None = None,
) -> BronzeOffset:
    """The offset ending the next micro-batch, or ``start`` itself when nothing is to be read.

    Args:
        start: the offset the batch starts from.
        listed: keys of the bronze files listed (at least every folder from ``start.lb``'s day on,
            or a prefix of them in key order holding more than ``max_files`` unread files).
        max_files: most files in the batch; None reads every unread file listed.
        late_minutes: the admission window (:func:`window_start`).
        late: keys below the window that landed since ``start``'s listing
            (:meth:`BronzeOffset.landed_late`).
        mtimes: landing times of the listed and late keys (those missing count as old).
        at: this listing's file system time (:attr:`BronzeOffset.at`); None keeps ``start.at``.
        known: files below the window seen by this listing and not to be read (before a new
            checkpoint's start, on its first listing), with their landing times: those within
            the slack of ``at`` go into ``recent``, so a later listing does not take them for
            late ones.

    Returns:
        The new offset: its ``batch`` is the smallest unread keys, in key order (late ones below
        the window sort first).
    """
    found = set(late) - set(start.recent)
    unread = sorted(k for k in set(listed) | found if start.is_unread(k) or k in found)
    if not unread:
        return start
    taken = unread if max_files is None else unread[:max_files]
    hw = max(start.hw, taken[-1])
    lb = max(start.lb, window_start(hw, late_minutes))
    left = unread[len(taken) :]
    in_window = [k for k in left if k >= start.lb]
    if in_window:
        lb = min(lb, in_window[0])  # never move the window past a file known to be unread
    seen = frozenset(k for k in (*start.seen, *taken) if lb <= k <= hw)
    now = start.at if at is None else max(at, start.at or at)
    times = mtimes or {}
    recent: dict[str, float] = {}
    if now is not None:
        since = now - LANDING_SLACK_SECONDS
        candidates = {**start.recent, **(known or {}), **{k: times[k] for k in taken if k in times}}
        recent = {k: t for k, t in candidates.items() if t >= since}
    return BronzeOffset(
        hw=hw,
        lb=lb,
        seen=seen,
        batch=tuple(taken),
        seq=start.seq + 1,
        at=now,
        recent=recent,
        pending=tuple(k for k in left if k < start.lb),
    )


def days_to_list(start: BronzeOffset, days: Iterable[str]) -> list[str]:
    """The ``dt=`` days (``YYYY-MM-DD``) a trigger lists: ``start.lb``'s day and later, ascending."""
    first = split_key(start.lb)[0] if start.lb else ""
    return sorted(d for d in days if d >= first)


def seed_offset(
    processed: Iterable[str],
    listed: Iterable[str],
    *,
    late_minutes: float,
    start_key: str = "",
    at: float | None = None,
    mtimes: Mapping[str, float] | None = None,
) -> BronzeOffset:
    """The first offset of a checkpoint that takes over from one that read ``processed``.

    Every listed file not in ``processed`` is unread afterwards (none is skipped) and no processed
    file is read again: ``hw`` is the greatest processed key and the window reaches down to the
    smallest unprocessed key below it, so ``seen`` may start large and shrinks as those are read.

    Args:
        processed: keys of the files the old checkpoint committed.
        listed: keys of every bronze file now.
        late_minutes: the admission window.
        start_key: files below it were never meant to be read (a lookback); they stay unread.
        at: the file system time of the listing (files landing after it are found late).
        mtimes: landing times of (at least) the files that landed within
            :data:`LANDING_SLACK_SECONDS` of ``at``: those the seed does not read (processed, or
            below ``start_key``) go into ``recent``, so they are not taken for late ones.

    Returns:
        The offset; :meth:`BronzeOffset.starting_at` ``start_key`` when nothing was processed.
    """
    done = frozenset(processed)
    if not done:
        return BronzeOffset.starting_at(start_key)
    hw = max(done)
    lb = max(window_start(hw, late_minutes), min(start_key, hw))
    missing = sorted(k for k in listed if k not in done and start_key <= k <= hw)
    if missing:
        lb = min(lb, missing[0])
    seed = BronzeOffset(hw=hw, lb=lb, seen=frozenset(k for k in done if lb <= k), seq=0, at=at)
    if at is None or not mtimes:
        return seed
    # processed files, and older ones below a lookback, that landed within the slack: known, not late
    since = at - LANDING_SLACK_SECONDS
    recent = {k: t for k, t in mtimes.items() if t >= since and not seed.is_unread(k)}
    return replace(seed, recent=recent)
