from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from app.paths import Layout
from app.sources.landing import (
    bronze_envelope_text,
    bronze_file_name,
    bronze_partition,
    cleanup_stale_temps,
    format_fetched_at,
    temp_name,
    write_bronze_page,
)

FETCHED = datetime(2026, 11, 25, 19, 48, 6, 123456, tzinfo=UTC)
RUN_ID = "3f2c1a2b9d8e4f00aa"
BODY = '[{"id":"shiba-inu","current_price":8.36e-06,"market_cap":29309,"roi":null}]'


def test_bronze_file_name_follows_the_design():
    name = bronze_file_name(FETCHED, "usd", 3, RUN_ID)
    assert name == "coins_markets_20261125T194806123Z_usd_p0003_3f2c1a2b.json"
    assert temp_name(name) == ".coins_markets_20261125T194806123Z_usd_p0003_3f2c1a2b.json.tmp"


def test_bronze_partition_is_the_utc_date():
    local = datetime(2026, 11, 26, 0, 30, tzinfo=UTC).astimezone(
        __import__("datetime").timezone(timedelta(hours=5))
    )
    assert bronze_partition(local) == "2026-11-26"
    assert bronze_partition(datetime(2026, 11, 25, 23, 59, 59)) == "2026-11-25"  # naive means UTC
    assert format_fetched_at(FETCHED) == "2026-11-25T19:48:06.123Z"


def test_bronze_file_name_rejects_bad_parts():
    with pytest.raises(ValueError, match="alphanumeric"):
        bronze_file_name(FETCHED, "us/d", 1, RUN_ID)
    with pytest.raises(ValueError, match="page must be >= 1"):
        bronze_file_name(FETCHED, "usd", 0, RUN_ID)


def test_envelope_keeps_the_body_text_unchanged_on_one_line():
    text = bronze_envelope_text(
        records_body="[\n " + BODY[1:],
        vs_currency="usd",
        page=1,
        run_id=RUN_ID,
        fetched_at=FETCHED,
        request={"vs_currency": "usd", "order": "market_cap_desc", "per_page": 250, "page": 1},
    )
    assert text.endswith("}\n") and text.count("\n") == 1
    assert '"current_price":8.36e-06,"market_cap":29309' in text
    doc = json.loads(text)
    assert list(doc) == [
        "source",
        "endpoint",
        "request",
        "fetched_at",
        "http_status",
        "run_id",
        "page",
        "data",
    ]
    assert doc["source"] == "coingecko" and doc["endpoint"] == "/coins/markets"
    assert doc["fetched_at"] == "2026-11-25T19:48:06.123Z" and doc["http_status"] == 200
    assert doc["data"] == json.loads(BODY)


def test_envelope_refuses_truncated_bodies_and_secrets():
    with pytest.raises(ValueError):
        bronze_envelope_text(
            records_body='[{"id":', vs_currency="usd", page=1, run_id=RUN_ID, fetched_at=FETCHED, request={}
        )
    with pytest.raises(ValueError, match="secret"):
        bronze_envelope_text(
            records_body="[]",
            vs_currency="usd",
            page=1,
            run_id=RUN_ID,
            fetched_at=FETCHED,
            request={"x_cg_demo_api_key": "k"},
        )


def test_write_bronze_page_lands_one_parseable_file(tmp_path):
    layout = Layout.from_root(str(tmp_path))
    path = write_bronze_page(
        layout, records_body=BODY, vs_currency="usd", page=1, run_id=RUN_ID, fetched_at=FETCHED
    )
    assert (
        path == f"{layout.bronze_day('2026-11-25')}/coins_markets_20261125T194806123Z_usd_p0001_3f2c1a2b.json"
    )
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]
    doc = json.loads(open(path).read())
    assert doc["data"][0]["id"] == "shiba-inu" and doc["request"]["page"] == 1


def test_write_bronze_page_accepts_a_record_list(tmp_path):
    layout = Layout.from_root(str(tmp_path))
    path = write_bronze_page(
        layout, records_body=[{"id": "bitcoin"}], vs_currency="eur", page=2, run_id="r1", fetched_at=FETCHED
    )
    assert json.loads(open(path).read())["data"] == [{"id": "bitcoin"}]


def test_write_bronze_page_never_overwrites(tmp_path):
    layout = Layout.from_root(str(tmp_path))
    kwargs = dict(vs_currency="usd", page=1, run_id=RUN_ID, fetched_at=FETCHED)
    path = write_bronze_page(layout, records_body=BODY, **kwargs)
    assert write_bronze_page(layout, records_body=BODY, **kwargs) == path  # identical: idempotent
    with pytest.raises(FileExistsError, match="not overwritten"):
        write_bronze_page(layout, records_body="[]", **kwargs)
    assert json.loads(open(path).read())["data"] == json.loads(BODY)
    assert not [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".")]


def test_names_never_collide_for_two_cycles_in_the_same_second(tmp_path):
    layout = Layout.from_root(str(tmp_path))
    paths = {
        write_bronze_page(
            layout, records_body="[]", vs_currency="usd", page=1, run_id=run, fetched_at=FETCHED
        )
        for run in ("aaaa1111x", "bbbb2222y")
    }
    assert len(paths) == 2


def test_cleanup_stale_temps_removes_only_old_temps(tmp_path):
    layout = Layout.from_root(str(tmp_path))
    day = tmp_path / "bronze/crypto/coins_markets/dt=2026-11-25"
    day.mkdir(parents=True)
    old, fresh, real = day / ".a.json.tmp", day / ".b.json.tmp", day / "c.json"
    for f in (old, fresh, real):
        f.write_text("{}")
    os.utime(old, (1, 1))
    os.utime(real, (1, 1))
    assert cleanup_stale_temps(layout, older_than_seconds=60) == 1
    assert sorted(os.listdir(day)) == [".b.json.tmp", "c.json"]


def test_kill_during_write_leaves_only_a_dot_temp(tmp_path):
    script = (
        "from datetime import datetime, UTC\n"
        "from app.paths import Layout\n"
        "from app.sources.landing import write_bronze_page\n"
        f"write_bronze_page(Layout.from_root({str(tmp_path)!r}), records_body={BODY!r}, vs_currency='usd',"
        " page=1, run_id='deadbeef', fetched_at=datetime.now(UTC))\n"
        "print('not reached')\n"
    )
    env = {**os.environ, "COINLAKE_CRASH_AT": "ingest_before_rename"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 137 and "not reached" not in proc.stdout
    files = [f for _, _, names in os.walk(tmp_path) for f in names]
    assert len(files) == 1 and files[0].startswith(".") and files[0].endswith(".json.tmp")


def test_write_bronze_page_on_dbfs_without_hard_links(tmp_path, monkeypatch):
    import errno

    import app.sources.landing as landing

    monkeypatch.setattr(landing, "local_path", lambda p: p.replace("dbfs:/", str(tmp_path) + "/"))

    def no_link(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(landing.os, "link", no_link)
    layout = Layout.from_root("dbfs:/lake")
    path = write_bronze_page(
        layout, records_body=BODY, vs_currency="usd", page=1, run_id=RUN_ID, fetched_at=FETCHED
    )
    assert path.startswith("dbfs:/lake/bronze/crypto/coins_markets/dt=2026-11-25/coins_markets_")
    local = path.replace("dbfs:/", str(tmp_path) + "/")
    assert json.loads(open(local).read())["page"] == 1
    assert os.listdir(os.path.dirname(local)) == [os.path.basename(local)]
    with pytest.raises(FileExistsError):
        write_bronze_page(
            layout, records_body="[]", vs_currency="usd", page=1, run_id=RUN_ID, fetched_at=FETCHED
        )


def test_a_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    """Disk full in the middle of the write: the error goes up and the temp file is removed."""
    import errno

    import app.sources.landing as landing

    layout = Layout.from_root(str(tmp_path))
    real_write = os.write
    calls = []

    def write_then_fill(fd, data):
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, bytes(data[:10]))  # a short write, then the disk is full

    monkeypatch.setattr(landing.os, "write", write_then_fill)
    with pytest.raises(OSError, match="No space left"):
        write_bronze_page(
            layout, records_body=BODY, vs_currency="usd", page=1, run_id=RUN_ID, fetched_at=FETCHED
        )
    assert len(calls) == 2
    assert os.listdir(layout.bronze_day("2026-11-25")) == []
