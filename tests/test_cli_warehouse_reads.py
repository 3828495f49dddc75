"""Reads of the warehouse emulator while another process writes to it.

DuckDB locks the emulator's file for the whole time a process has it open for writing, and a
read-only open is refused then too, so ``sql --warehouse`` and ``status`` read a copy taken under a
shared lock. These tests hold the write lock in another process (a loader connection, then a real
``coinlake stream --trigger interval``) and run the reads through the CLI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from app.cli import main
from app.errors import LoadTransientError
from app.paths import Layout
from app.sinks.warehouse.connector import emulator_connector, emulator_file, snapshot_emulator_file
from app.sinks.warehouse.sql import LEDGER_TABLE
from tests.helpers import T0, coin_record, minutes, write_bronze_page

pytestmark = pytest.mark.filterwarnings("ignore:Arrow output")

REPO = Path(__file__).resolve().parents[1]
COUNT_LEDGER = f'SELECT COUNT(*) AS n FROM "{LEDGER_TABLE}"'
POLL_SECONDS = 0.5  # between two looks at the warehouse while waiting for the stream

# Opens the emulator for writing (as a loader does for each batch), says so, and keeps the
# connection (and DuckDB's exclusive file lock) until its stdin closes.
_HOLD_WRITER = textwrap.dedent(
    """
    import sys
    from app.sinks.warehouse.connector import emulator_connector
    conn = emulator_connector(sys.argv[1]).connect()
    conn.cursor().execute(f'INSERT INTO "{sys.argv[2]}" (app_id, batch_id) VALUES (%s, %s)', ("writer", 99))
    print("held", flush=True)
    sys.stdin.read()
    conn.close()
    """
)


@pytest.fixture(autouse=True)
def _emulator_env(monkeypatch):
    monkeypatch.setenv("COINLAKE_WAREHOUSE", "emulator")
    monkeypatch.delenv("SNOWFLAKE_ACCOUNT", raising=False)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "COINLAKE_LOG_FORMAT": "json"}


def _sql_count(capsys, root: str, query: str) -> tuple[int, str, str]:
    code = main(["--data-dir", root, "sql", "--warehouse", "--format", "csv", query])
    captured = capsys.readouterr()
    return code, captured.out.strip(), captured.err


def test_sql_warehouse_waits_for_a_writer_then_says_the_emulator_is_busy(tmp_path, capsys, monkeypatch):
    root = str(tmp_path)
    warehouse = Layout.from_root(root).warehouse_dir
    assert main(["--data-dir", root, "snowflake", "init"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("COINLAKE_WAREHOUSE_READ_WAIT_SECONDS", "0.5")
    writer = subprocess.Popen(
        [sys.executable, "-c", _HOLD_WRITER, warehouse, LEDGER_TABLE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=REPO,
    )
    try:
        assert writer.stdout.readline().strip() == "held"
        # A plain read-only open is refused while the writer holds the file: why reads copy it.
        import duckdb

        with pytest.raises(duckdb.IOException, match="lock"):
            duckdb.connect(emulator_file(warehouse), read_only=True)

        code, out, err = _sql_count(capsys, root, COUNT_LEDGER)

        assert code == 2
        assert err.startswith("coinlake: error: the warehouse emulator is busy: another process")
        assert "COINLAKE_WAREHOUSE_READ_WAIT_SECONDS" in err and len(err.strip().splitlines()) == 1

        writer.stdin.close()
        assert writer.wait(timeout=60) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()

    code, out, err = _sql_count(capsys, root, COUNT_LEDGER)
    assert (code, out) == (0, "N\n1"), err
    # The read left no trace: the emulator's folder holds the database file only.
    assert sorted(os.listdir(warehouse)) == ["COINLAKE.db"]


def test_sql_warehouse_reads_a_copy_so_its_writes_never_reach_the_emulator(tmp_path, capsys):
    root = str(tmp_path)
    assert main(["--data-dir", root, "snowflake", "init"]) == 0
    capsys.readouterr()

    code, _, _ = _sql_count(
        capsys, root, f"""INSERT INTO "{LEDGER_TABLE}" (app_id, batch_id) VALUES ('x', 1)"""
    )
    assert code == 0

    assert emulator_connector(Layout.from_root(root).warehouse_dir).loader().query(COUNT_LEDGER)[1] == [(0,)]


def test_sql_warehouse_on_an_emulator_never_loaded_says_so(tmp_path, capsys):
    code, _, err = _sql_count(capsys, str(tmp_path), COUNT_LEDGER)

    assert code == 2
    assert "the warehouse emulator has no database yet" in err
    assert not os.path.exists(Layout.from_root(str(tmp_path)).warehouse_dir)


def test_snapshot_emulator_file_gives_up_at_its_deadline(tmp_path):
    warehouse = str(tmp_path / "warehouse")
    emulator_connector(warehouse).loader().init_schema()
    writer = subprocess.Popen(
        [sys.executable, "-c", _HOLD_WRITER, warehouse, LEDGER_TABLE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=REPO,
    )
    now = [0.0]
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        now[0] += seconds

    try:
        assert writer.stdout.readline().strip() == "held"
        with pytest.raises(LoadTransientError, match="kept .* open for writing for 1 s"):
            snapshot_emulator_file(
                emulator_file(warehouse),
                str(tmp_path),
                wait_seconds=1.0,
                poll_seconds=0.25,
                clock=lambda: now[0],
                sleep=sleep,
            )
    finally:
        writer.stdin.close()
        writer.wait(timeout=60)
    assert pauses == [0.25] * 4
    assert not (tmp_path / "COINLAKE.db").exists()


def _land(layout: Layout, i: int) -> None:
    t = T0 + minutes(i)
    write_bronze_page(
        layout.bronze_root, t, [coin_record("bitcoin", 100.0 + i, t), coin_record("ethereum", 10.0 + i, t)]
    )


def _wait_for(condition, deadline_seconds: float, what: str, proc: subprocess.Popen):
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        assert proc.poll() is None, f"the stream exited with {proc.returncode} while waiting for {what}"
        time.sleep(POLL_SECONDS)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.process
def test_sql_and_status_work_while_a_stream_writes_to_the_emulator(spark, tmp_path, capsys, monkeypatch):
    root = str(tmp_path)
    layout = Layout.from_root(root)
    monkeypatch.setenv("COINLAKE_WAREHOUSE_READ_WAIT_SECONDS", "60")
    _land(layout, 0)
    stream = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.cli",
            "--data-dir",
            root,
            "stream",
            "--trigger",
            "interval",
            "--every",
            "1s",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**_env(), "COINLAKE_SPARK_MASTER": "local[1]", "COINLAKE_SHUFFLE_PARTITIONS": "1"},
        cwd=REPO,
    )
    try:
        db_file = emulator_file(layout.warehouse_dir)

        def ledger_rows() -> int:
            if not os.path.exists(db_file):
                return 0
            code, out, err = _sql_count(capsys, root, COUNT_LEDGER)
            if code != 0 and "no such table" not in err.lower() and "does not exist" not in err.lower():
                raise AssertionError(f"sql --warehouse failed during the stream: {err}")
            return int(out.splitlines()[1]) if code == 0 else 0

        _wait_for(lambda: ledger_rows() >= 1, 600, "the first warehouse load", stream)
        # Keep bronze coming so the stream keeps loading while the reads run; every read must
        # succeed, and the stream must keep committing around them.
        seen = ledger_rows()
        for i in range(1, 4):
            _land(layout, i)
            seen = _wait_for(lambda s=seen: (n := ledger_rows()) > s and n, 300, f"load {i}", stream)
            code = main(["--data-dir", root, "status", "--json"])
            status = json.loads(capsys.readouterr().out)
            assert code in (0, 1), code  # 1 only when the lag exceeds a limit, never an error
            assert status["warehouse"]["available"] is True, status["warehouse"]
            assert status["warehouse"]["ledger_last_batch"] is not None
        assert seen >= 4
    finally:
        stream.send_signal(signal.SIGTERM)
        try:
            stream.wait(timeout=120)
        except subprocess.TimeoutExpired:
            stream.kill()
            stream.wait()
    assert stream.returncode == 0, stream.stderr.read()[-3000:]
