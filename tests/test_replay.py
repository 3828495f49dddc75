"""``coinlake replay``: ``--from-scratch`` reads all of bronze, whatever COINLAKE_BRONZE_LOOKBACK_DAYS
says; ``--from DATE`` re-reads the folders from that day over the tables, with its own checkpoint,
and ends equal to a rebuild from scratch."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from datetime import UTC, date, datetime, timedelta

import pytest
from chispa import assert_df_equality

import app.commands.replay as replay_mod
import app.stream as stream_mod
from app.cli import main
from app.commands import stream as stream_cmd
from app.commands.replay import REPLAY_CHECKPOINT_PREFIX
from app.paths import Layout
from app.tables import ANOMALIES, DERIVED_TABLE_NAMES, GOLD_METRICS, GOLD_OHLC, SILVER
from tests.helpers import (
    assert_scd2_invariants,
    coin_record,
    silver_content,
    write_bronze_page,
    write_raw_bronze,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    import os

    for key in list(os.environ):
        if key.startswith(("COINLAKE_", "SNOWFLAKE_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_replay_lists_every_bronze_folder_despite_a_lookback(monkeypatch, capsys):
    monkeypatch.setenv("COINLAKE_BRONZE_LOOKBACK_DAYS", "2")
    seen = {}

    def fake_run_stream(spark, settings, layout, **kwargs):
        seen["lookback"] = settings.bronze_lookback_days
        return "result"

    monkeypatch.setattr(replay_mod, "spark_from_settings", lambda settings, app_name: object())
    monkeypatch.setattr(replay_mod, "drop_derived_state", lambda spark, layout: [])
    monkeypatch.setattr(stream_mod, "run_stream", fake_run_stream)
    monkeypatch.setattr(stream_cmd, "summary_line", lambda result: f"done {result}")

    args = argparse.Namespace(from_scratch=True)
    assert replay_mod._replay(args) == 0
    assert seen["lookback"] == 0
    assert "reading all of bronze" in capsys.readouterr().out


# --- replay --from DATE: over the existing tables, with a checkpoint of its own --------------------

DAYS = [date(2026, 1, 5), date(2026, 1, 6), date(2026, 1, 7)]
FETCH_HOURS = (0, 8, 16)
# Bookkeeping columns: which batch wrote a row, not what it holds (a replay writes other batches).
BOOKKEEPING = ("batch_id", "updated_batch_id", "detected_batch_id")


def _land_three_days(bronze_root: str) -> None:
    """Three fetches a day: bitcoin and ether move, stablecoin's values never change (it collapses),
    and one unreadable file on the middle day (quarantined)."""
    n = 0
    for day in DAYS:
        for hour in FETCH_HOURS:
            fetched = datetime(day.year, day.month, day.day, hour, 30, tzinfo=UTC)
            seen = fetched - timedelta(minutes=1)
            n += 1
            write_bronze_page(
                bronze_root,
                fetched,
                [
                    coin_record("bitcoin", 60000.0 + 700 * n + (9000 if n == 6 else 0), seen),
                    coin_record("ethereum", 3000.0 - 15 * n, seen),
                    coin_record("stablecoin", 1.0, seen),
                ],
                run_id=f"{n:016x}",
            )
    write_raw_bronze(
        bronze_root, datetime(2026, 1, 6, 9, tzinfo=UTC), "coins_markets_broken.json", '{"data": ['
    )


def _cli(root, *args: str) -> int:
    return main(["--data-dir", str(root), *args])


def _table_content(spark, layout: Layout, name: str):
    from pyspark.sql import functions as F

    df = spark.read.format("delta").load(layout.table(name))
    if name == SILVER:
        return silver_content(df)
    df = df.drop(*[c for c in BOOKKEEPING if c in df.columns])
    if "source_file" in df.columns:  # the two lakes have their own roots
        df = df.withColumn("source_file", F.regexp_extract("source_file", r"(dt=[^/]+/[^/]+)$", 1))
    return df


def _checkpoint_files(path: str) -> dict[str, int]:
    return {
        os.path.relpath(os.path.join(folder, name), path): os.path.getsize(os.path.join(folder, name))
        for folder, _dirs, names in os.walk(path)
        for name in names
    }


def _replayed_files(checkpoint: str) -> list[str]:
    """Every file the replay's bronze source read: the ``batch`` of each offset it logged."""
    log = os.path.join(checkpoint, "offsets")
    paths = set()
    for name in os.listdir(log):
        if name.startswith("."):
            continue
        with open(os.path.join(log, name), encoding="utf-8") as fh:
            offset = json.loads(fh.read().splitlines()[2])
        paths.update(f"file://{offset['root']}/dt={key}" for key in offset["batch"])
    return sorted(paths)


@pytest.fixture
def _pipeline_env(monkeypatch):
    for key, value in {
        "COINLAKE_WAREHOUSE": "none",
        "COINLAKE_MAX_FILES_PER_TRIGGER": "20",
        "COINLAKE_ZSCORE_WINDOW": "3",
        "COINLAKE_ZSCORE_MIN_PERIODS": "2",
        "COINLAKE_ZSCORE_THRESHOLD": "1.5",
        "COINLAKE_OPTIMIZE_EVERY_BATCHES": "0",
    }.items():
        monkeypatch.setenv(key, value)


def test_replay_from_a_day_equals_from_scratch_and_reads_only_that_day_on(
    spark, tmp_path, capsys, _pipeline_env
):
    lake, fresh = Layout.from_root(str(tmp_path / "lake")), Layout.from_root(str(tmp_path / "fresh"))
    _land_three_days(lake.bronze_root)
    shutil.copytree(lake.bronze_root, fresh.bronze_root)
    assert _cli(lake.root, "stream") == 0
    main_checkpoint = _checkpoint_files(lake.checkpoint())

    # A day's worth of damage from 2026-01-06 on: lost silver versions and derived rows that drifted.
    spark.sql(
        f"DELETE FROM delta.`{lake.table(SILVER)}` WHERE coin_id = 'bitcoin' AND valid_from >= '2026-01-06'"
    )
    spark.sql(f"DELETE FROM delta.`{lake.table(GOLD_OHLC)}` WHERE bucket_start >= '2026-01-06'")
    spark.sql(
        f"UPDATE delta.`{lake.table(GOLD_METRICS)}` SET num_coins = 99 WHERE metric_date >= '2026-01-06'"
    )
    spark.sql(f"DELETE FROM delta.`{lake.table(ANOMALIES)}` WHERE observed_at >= '2026-01-06'")
    capsys.readouterr()

    assert _cli(lake.root, "replay", "--from", "2026-01-06") == 0
    out = capsys.readouterr().out
    assert "replay: reading 2 bronze folder(s) dt=2026-01-06 .. dt=2026-01-07" in out
    assert _cli(fresh.root, "replay", "--from-scratch") == 0

    # Read: exactly the files of dt=2026-01-06 and later, through a new checkpoint.
    replay_checkpoints = [
        name
        for name in os.listdir(os.path.dirname(lake.checkpoint()))
        if name.startswith(REPLAY_CHECKPOINT_PREFIX)
    ]
    assert len(replay_checkpoints) == 1 and replay_checkpoints[0].startswith("replay_from_2026-01-06_")
    read = _replayed_files(os.path.join(os.path.dirname(lake.checkpoint()), replay_checkpoints[0]))
    expected = sorted(
        os.path.join(lake.bronze_root, f"dt={day}", name)
        for day in ("2026-01-06", "2026-01-07")
        for name in os.listdir(os.path.join(lake.bronze_root, f"dt={day}"))
    )
    assert [p.removeprefix("file:").replace("///", "/") for p in read] == expected
    assert _checkpoint_files(lake.checkpoint()) == main_checkpoint  # the stream's own is untouched

    # Every table equals the from-scratch rebuild (bookkeeping columns aside).
    for name in DERIVED_TABLE_NAMES:
        replayed, rebuilt = _table_content(spark, lake, name), _table_content(spark, fresh, name)
        assert rebuilt.count() > 0, name
        assert_df_equality(replayed, rebuilt, ignore_row_order=True, ignore_nullable=True)
    assert_scd2_invariants(spark.read.format("delta").load(lake.table(SILVER)))


def test_replay_from_twice_is_idempotent_and_the_stream_then_reprocesses_nothing(
    spark, tmp_path, capsys, _pipeline_env
):
    lake = Layout.from_root(str(tmp_path / "lake"))
    _land_three_days(lake.bronze_root)
    assert _cli(lake.root, "stream") == 0
    before = {name: _table_content(spark, lake, name).collect() for name in DERIVED_TABLE_NAMES}
    for _ in range(2):
        assert _cli(lake.root, "replay", "--from", "2026-01-07") == 0
    capsys.readouterr()
    for name in DERIVED_TABLE_NAMES:
        assert sorted(map(str, _table_content(spark, lake, name).collect())) == sorted(
            map(str, before[name])
        ), name
    assert _cli(lake.root, "stream") == 0
    assert capsys.readouterr().out.startswith("stream: 0 batches, 0 files")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["replay", "--from", "2026-02-30"], "replay: --from expects a UTC day YYYY-MM-DD, got '2026-02-30'"),
        (["replay", "--from", "06/01/2026"], "replay: --from expects a UTC day YYYY-MM-DD, got '06/01/2026'"),
        (["replay", "--from", "2999-01-01"], "replay: --from 2999-01-01 is in the future"),
    ],
)
def test_replay_from_a_bad_date_fails_before_spark(monkeypatch, capsys, tmp_path, argv, message):
    monkeypatch.setattr(replay_mod, "spark_from_settings", _no_spark)
    assert main(["--data-dir", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_replay_from_and_from_scratch_are_mutually_exclusive(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["--data-dir", str(tmp_path), "replay", "--from-scratch", "--from", "2026-01-06"])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_replay_from_a_day_without_bronze_folders_says_so(spark, tmp_path, capsys, _pipeline_env):
    _land_three_days(Layout.from_root(str(tmp_path)).bronze_root)
    assert main(["--data-dir", str(tmp_path), "replay", "--from", "2026-01-08"]) == 2
    assert "replay: no bronze folder dt=YYYY-MM-DD on or after 2026-01-08" in capsys.readouterr().err


def _no_spark(settings, app_name):
    raise AssertionError("Spark started before the arguments were checked")
