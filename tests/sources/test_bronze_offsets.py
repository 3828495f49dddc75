"""The listing source's offsets and file choice: pure functions, plus the folder listing on tmp_path."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.sources.bronze_offsets import (
    LANDING_SLACK_SECONDS,
    BronzeOffset,
    day_key,
    key_time,
    plan_next,
    seed_offset,
    window_start,
)
from app.sources.bronze_source import file_times, file_uri, list_bronze, list_unread
from app.sources.landing import bronze_file_name

T0 = datetime(2026, 3, 1, 23, 0, tzinfo=UTC)


def key(minute: float, currency: str = "usd", run: str = "run1") -> str:
    """The key of a landing file fetched ``minute`` minutes after T0."""
    at = T0 + timedelta(minutes=minute)
    return f"{at.date().isoformat()}/{bronze_file_name(at, currency, 1, run)}"


def run_triggers(listings, *, max_files=2, late_minutes=30.0, start=None):
    """Plan one trigger per listing; returns the offsets and every batch."""
    offset = start or BronzeOffset()
    batches = []
    for listed in listings:
        end = plan_next(offset, listed, max_files=max_files, late_minutes=late_minutes)
        if end is not offset:
            batches.append(list(end.batch))
            offset = BronzeOffset.from_json(
                json.loads(json.dumps(end.to_json()))
            )  # as the checkpoint keeps it
    return offset, batches


def test_plan_next_reads_the_smallest_unread_keys_first_and_nothing_when_idle():
    files = [key(m) for m in (3, 0, 2, 1, 4)]
    offset, batches = run_triggers([files, files, files, files])
    assert batches == [[key(0), key(1)], [key(2), key(3)], [key(4)]]
    assert offset.hw == key(4) and offset.seq == 3
    assert plan_next(offset, files, max_files=2, late_minutes=30) is offset  # idle: the same offset
    everything = plan_next(BronzeOffset(), files, max_files=None, late_minutes=30)
    assert everything.batch == tuple(sorted(files))  # ReadAllAvailable: no limit


def test_by_name_a_late_file_inside_the_window_is_read_once_and_one_below_it_is_not():
    files = [key(m) for m in range(0, 60, 10)]  # 0 .. 50 minutes
    offset, _ = run_triggers([files], max_files=None)
    assert offset.lb == window_start(key(50), 30) and key(19.9) < offset.lb <= key(20)  # 30 min before
    late = key(35, run="slowclk")  # a second ingester whose clock is 15 minutes behind
    too_late = key(15, run="restored")  # 35 minutes older than the newest file read
    offset, batches = run_triggers([[*files, late, too_late]] * 3, start=offset, max_files=None)
    assert batches == [[late]]  # once; the one below the window is found by its time (below)
    assert late in offset.seen and too_late not in offset.seen


def test_a_file_below_the_window_that_landed_since_the_last_listing_is_read_once():
    files = [key(m) for m in range(0, 60, 10)]
    at = 1_000_000.0  # the file system's time of the first listing
    offset = plan_next(
        BronzeOffset(), files, max_files=None, late_minutes=30, mtimes=dict.fromkeys(files, at), at=at
    )
    restored = key(5, run="restored")  # an hour-old page copied back by hand, below the window
    assert restored < offset.lb
    assert not offset.landed_late(restored, at - LANDING_SLACK_SECONDS - 1)  # it was there before
    assert offset.landed_late(restored, at + 1)
    assert not offset.landed_late(files[-1], at + 1)  # in the window: found by name, not by time
    end = plan_next(
        offset, files, max_files=2, late_minutes=30, late=[restored], mtimes={restored: at + 1}, at=at + 2
    )
    assert end.batch == (restored,) and (end.hw, end.lb) == (offset.hw, offset.lb)
    assert end.recent[restored] == at + 1  # read: never found late again
    assert not end.landed_late(restored, at + 1)
    # once its time is older than the slack it leaves ``recent``, and cannot count as landed since
    later = plan_next(
        end, [*files, key(70)], max_files=None, late_minutes=30, mtimes={key(70): at + 900}, at=at + 900
    )
    assert restored not in later.recent and not later.landed_late(restored, at + 1)


def test_late_files_below_the_window_beyond_the_batch_limit_wait_in_the_offset():
    files = [key(m) for m in range(0, 60, 10)]
    at = 1_000_000.0
    offset = plan_next(BronzeOffset(), files, max_files=None, late_minutes=30, at=at)
    restored = [key(m, run="restored") for m in (1, 2, 3)]
    first = plan_next(
        offset,
        files,
        max_files=2,
        late_minutes=30,
        late=restored,
        mtimes=dict.fromkeys(restored, at + 5),
        at=at + 10,
    )
    assert first.batch == tuple(restored[:2]) and first.pending == (restored[2],)
    assert first.lb == offset.lb  # the window does not reach back to it (files below were read long ago)
    assert first.is_unread(restored[2]) and not first.landed_late(restored[2], at + 5)
    second = BronzeOffset.from_json(json.loads(json.dumps(first.to_json())))
    assert second == first
    third = plan_next(second, [*files, *restored], max_files=2, late_minutes=30, at=at + 20)
    assert third.batch == (restored[2],) and third.pending == ()
    assert plan_next(third, [*files, *restored], max_files=2, late_minutes=30, at=at + 30) is third


def test_a_new_checkpoint_finds_nothing_late_before_its_first_listing():
    assert BronzeOffset.starting_at("2026-03-02/").since() is None
    assert not BronzeOffset.starting_at("2026-03-02/").landed_late(key(0), 2e9)


def test_the_window_never_moves_past_a_file_known_to_be_unread():
    # 1 file per trigger; a late file appears below hw while newer files wait behind it
    first, _ = run_triggers([[key(0), key(100)]], max_files=1)
    assert first.hw == key(0)
    late = key(1)
    offset, batches = run_triggers([[key(0), key(100), late, key(200)]] * 4, start=first, max_files=1)
    assert batches == [[late], [key(100)], [key(200)]]


def test_the_window_bound_never_moves_back_when_a_hand_placed_name_is_read():
    day = T0.date().isoformat()
    offset, _ = run_triggers([[key(30)]], max_files=None)
    lb = offset.lb
    hand = f"{day}/zz_restored.json"  # no stamp: it stands for its day's midnight
    assert key_time(hand) < key_time(key(30))
    offset, _ = run_triggers([[key(30), hand]], start=offset, max_files=None)
    assert offset.hw == hand and offset.lb == lb


def test_the_offset_stays_bounded_over_many_batches():
    files = [key(m) for m in range(0, 3000)]  # one file a minute for two days
    offset = BronzeOffset()
    sizes = []
    for i in range(0, len(files), 10):
        offset = plan_next(offset, files[: i + 10], max_files=10, late_minutes=30)
        sizes.append(len(json.dumps(offset.to_json())))
    assert len(offset.seen) <= 31  # the files of the last 30 minutes (and the newest)
    assert max(sizes[50:]) < 1.1 * min(sizes[50:])  # flat, not growing with the batches


def test_offset_json_round_trips_and_another_sources_offset_is_refused():
    offset = plan_next(BronzeOffset(), [key(0), key(1)], max_files=None, late_minutes=30)
    assert BronzeOffset.from_json(json.loads(json.dumps(offset.to_json()))) == offset
    with pytest.raises(ValueError, match="not a bronze source offset"):
        BronzeOffset.from_json({"logOffset": 12})


def test_starting_at_a_day_reads_that_day_and_later_only():
    offset = BronzeOffset.starting_at(day_key(T0.date() + timedelta(days=1)))
    end = plan_next(offset, [key(0), key(59), key(61)], max_files=None, late_minutes=30)
    assert end.batch == (key(61),)  # key(59) is 23:59 on T0's day, key(61) the next day


def test_seed_offset_continues_after_the_committed_files_without_skipping_any():
    committed = [key(m) for m in (0, 1, 3, 4)]
    uncommitted = key(2)  # planned by the old checkpoint's last batch, never committed
    waiting = key(5)
    seed = seed_offset(committed, [*committed, uncommitted, waiting], late_minutes=1)
    assert seed.hw == key(4) and seed.lb == uncommitted
    _, batches = run_triggers([[*committed, uncommitted, waiting]] * 2, start=seed, max_files=None)
    assert batches == [[uncommitted, waiting]]
    assert seed_offset([], [key(0)], late_minutes=1, start_key="x") == BronzeOffset.starting_at("x")
    lookback = day_key(T0.date() + timedelta(days=1))
    seed = seed_offset([key(70)], [key(0), key(70)], late_minutes=1, start_key=lookback)
    assert seed.lb > key(0)  # a file before the lookback stays unread, as the old glob left it


def test_list_unread_lists_from_the_windows_day_and_stops_once_it_has_enough(tmp_path: Path):
    root = tmp_path / "bronze"
    for day in ("2026-03-01", "2026-03-02", "2026-03-03"):
        folder = root / f"dt={day}"
        folder.mkdir(parents=True)
        for name in ("a.json", "b.json", ".c.json.tmp", "notes.txt"):
            (folder / name).write_text("{}")
    (root / "dt=2026-03-02" / "_hidden.json").write_text("{}")
    start = BronzeOffset(
        hw="2026-03-02/a.json", lb="2026-03-02/a.json", seen=frozenset({"2026-03-02/a.json"})
    )
    assert list_unread(str(root), start, enough=None) == [
        "2026-03-02/b.json",
        "2026-03-03/a.json",
        "2026-03-03/b.json",
    ]
    assert list_unread(str(root), start, enough=0) == ["2026-03-02/b.json"]  # one folder was enough
    only = frozenset({"2026-03-03/b.json"})
    assert list_unread(str(root), start, enough=None, only=only) == ["2026-03-03/b.json"]
    assert list_unread(str(tmp_path / "missing"), start, enough=None) == []
    assert file_uri(str(tmp_path / "a b"), "2026-03-02/x.json") == (
        "file:" + str(tmp_path).replace(" ", "%20") + "/a%20b/dt=2026-03-02/x.json"
    )
    assert file_uri("dbfs:/lake/bronze", "2026-03-02/x.json") == "dbfs:/lake/bronze/dt=2026-03-02/x.json"


def test_list_bronze_finds_a_restored_old_page_by_its_time_in_any_folder(tmp_path: Path):
    root = tmp_path / "bronze"
    old_day, today = "2026-03-01", "2026-03-02"
    for day, name in ((old_day, "a.json"), (today, "b.json"), (today, "c.json")):
        (root / f"dt={day}").mkdir(parents=True, exist_ok=True)
        (root / f"dt={day}" / name).write_text("{}")

    def read_all(start: BronzeOffset) -> BronzeOffset:
        listing = list_bronze(str(root), start, enough=None)
        times = {**file_times(str(root), listing.keys), **listing.mtimes}
        return plan_next(
            start,
            listing.unread,
            max_files=None,
            late_minutes=30,
            late=listing.late,
            mtimes=times,
            at=listing.at,
        )

    # a new checkpoint reads all three; the window then starts at the newest (no stamp: its day)
    first = read_all(BronzeOffset())
    assert first.batch == (f"{old_day}/a.json", f"{today}/b.json", f"{today}/c.json")
    assert f"{old_day}/a.json" < first.lb and first.at is not None
    assert set(first.recent) == set(first.batch)  # they landed within the slack of the listing
    assert list_bronze(str(root), first, enough=None).keys == []  # nothing new: those were read
    later = BronzeOffset(hw=first.hw, lb=first.lb, seen=first.seen, at=first.at + 100)
    assert list_bronze(str(root), later, enough=None).keys == []  # folders unchanged since: not looked into

    restored = root / f"dt={old_day}" / "a_restored.json"  # a page of an old day copied back by hand
    restored.write_text("{}")
    os.utime(restored, (1_000_000.0, 1_000_000.0))  # cp -p: an old modification time
    listing = list_bronze(str(root), first, enough=None)
    assert listing.late == [f"{old_day}/a_restored.json"] and listing.unread == []
    assert listing.mtimes[f"{old_day}/a_restored.json"] == restored.stat().st_ctime  # its landing time
    second = read_all(first)
    assert second.batch == (f"{old_day}/a_restored.json",)
    assert list_bronze(str(root), second, enough=None).keys == []  # read once


def test_a_seed_keeps_the_processed_files_landed_just_before_it_as_read():
    at = 1_000_000.0
    committed = [key(m) for m in range(0, 120, 10)]  # two hours of files; the window is 30 minutes
    times = {k: at - 1 for k in committed}  # all copied in just before the listing (a restored lake)
    seed = seed_offset(committed, committed, late_minutes=30, at=at, mtimes=times)
    assert committed[0] < seed.lb and set(seed.recent) == set(committed)
    assert not any(seed.landed_late(k, times[k]) for k in committed)  # none is read again
    assert seed_offset(committed, committed, late_minutes=30).since() is None


def test_a_file_before_a_new_checkpoints_start_is_not_taken_for_a_late_one(tmp_path: Path):
    root = tmp_path / "bronze"
    for day, name in (("2026-03-01", "old.json"), ("2026-03-02", "new.json")):
        (root / f"dt={day}").mkdir(parents=True)
        (root / f"dt={day}" / name).write_text("{}")
    start = BronzeOffset.starting_at("2026-03-02/")  # a lookback: the older day is not to be read
    listing = list_bronze(str(root), start, enough=None)
    assert listing.unread == ["2026-03-02/new.json"] and listing.late == []
    assert set(listing.known) == {"2026-03-01/old.json"}  # it landed just before: remembered
    first = plan_next(
        start,
        listing.unread,
        max_files=None,
        late_minutes=30,
        mtimes=file_times(str(root), listing.keys),
        at=listing.at,
        known=listing.known,
    )
    assert first.batch == ("2026-03-02/new.json",) and "2026-03-01/old.json" in first.recent
    assert list_bronze(str(root), first, enough=None).keys == []  # never read, never late
