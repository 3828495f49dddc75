"""Shared pieces of the reliability harness: a fixed bronze set, CLI subprocesses, table snapshots."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from app.paths import Layout
from app.tables import TABLE_NAMES
from tests.helpers import T0, coin_record, minutes, write_bronze_page

REPO_ROOT = Path(__file__).resolve().parents[2]
COINS = ("bitcoin", "ethereum", "solana")
SNAPSHOTS = 8
# Small batches and a short z-score window, so a run has several batches and flags anomalies.
STREAM_ENV = {
    "COINLAKE_MAX_FILES_PER_TRIGGER": "4",
    "COINLAKE_ZSCORE_WINDOW": "5",
    "COINLAKE_ZSCORE_MIN_PERIODS": "3",
    "COINLAKE_ZSCORE_THRESHOLD": "1.5",
    "COINLAKE_SPARK_MASTER": "local[2]",
    "COINLAKE_SHUFFLE_PARTITIONS": "2",
    "COINLAKE_LOG_FORMAT": "json",
}
# Columns that legitimately differ between two runs over the same bronze (ids, load times, paths).
RUN_COLUMNS = frozenset(
    {
        "batch_id",
        "updated_batch_id",
        "run_id",
        "app_id",
        "source_file",
        "ingested_at",
        "quarantined_at",
        "computed_at",
        "detected_at",
        "detected_batch_id",
        "loaded_at",
        "updated_at",
        "created_at",
        "inserted_at",
        "processed_at",
    }
)
SUBPROCESS_TIMEOUT_SECONDS = 1800
STREAM = ("stream", "--trigger", "available-now")
# 8 pages at 4 files per trigger.
EXPECTED_BATCHES = 2


def fixed_prices(coin_index: int, snapshot: int) -> float:
    """A deterministic, wiggly price path with two spikes so the z-score flags something."""
    base = (100.0, 20.0, 5.0)[coin_index]
    price = base * (1.0 + 0.01 * math.sin(snapshot + coin_index))
    if snapshot in (5, 7) and coin_index != 2:
        price *= 1.4
    return round(price, 6)


def write_fixed_bronze(layout: Layout, *, start: int = 0, snapshots: int = SNAPSHOTS) -> list[str]:
    """Write the fixed bronze set (snapshots ``start`` .. ``snapshots - 1``): one page per snapshot."""
    paths = []
    for s in range(start, snapshots):
        t = T0 + minutes(10 * s)
        records = [
            coin_record(
                coin,
                fixed_prices(i, s),
                t + timedelta(seconds=i),
                total_volume=5_000_000 + (3_000_000 if s == 6 and i == 1 else 0) + 1000 * s,
            )
            for i, coin in enumerate(COINS)
        ]
        paths.append(write_bronze_page(layout.bronze_root, t + timedelta(seconds=30), records))
    return paths


@dataclass
class CliRun:
    """A finished ``python -m app.cli`` subprocess."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def cli_env(data_dir: Path | str, **extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: no inherited COINLAKE_/SNOWFLAKE_ settings, the fixed stream settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COINLAKE_", "SNOWFLAKE_")) and k != "PYTEST_CURRENT_TEST"
    }
    env.update(STREAM_ENV)
    env["COINLAKE_DATA_DIR"] = str(data_dir)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run_cli(
    *args: str,
    data_dir: Path | str,
    cwd: Path | str | None = None,
    prefix: Sequence[str] = (),
    **extra_env: str,
) -> CliRun:
    """Run ``python -m app.cli <args>`` in a fresh process (cwd: the data dir's parent, so no .env is read).

    ``prefix`` is put in front of the command (e.g. :func:`unprivileged_prefix`).
    """
    start = time.monotonic()
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "app.cli", *args],
        cwd=str(cwd or Path(data_dir).parent),
        env=cli_env(data_dir, **extra_env),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_SECONDS,
        check=False,
    )
    return CliRun(tuple(args), proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)


def stream_in_process(spark: Any, data_dir: Path | str, **extra_env: str) -> Any:
    """``coinlake stream --trigger available-now`` with the harness settings, in this process.

    The same settings as :func:`run_cli` gives a subprocess (:data:`STREAM_ENV` plus ``extra_env``,
    by field name) and the same :func:`app.stream.run_stream`, on the test session's warm JVM. For
    runs that are not themselves under test (the uninterrupted references, the restart after a
    crash or a fault): a fresh JVM costs start-up and JIT warm-up on every run, and what these runs
    must show (the tables, the ledger) does not depend on the process they ran in.

    Returns:
        The :class:`app.stream.StreamResult`; every batch must have finished ``ok``.
    """
    from app.config import load_settings
    from app.stream import run_stream

    env = {**STREAM_ENV, **extra_env}
    overrides = {k[len("COINLAKE_") :].lower(): v for k, v in env.items() if k.startswith("COINLAKE_")}
    # Like cli_env for a subprocess: no COINLAKE_/SNOWFLAKE_ variable of this process and no .env
    # file may change these settings (the reference must be the run the subprocesses make).
    inherited = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith(("COINLAKE_", "SNOWFLAKE_"))}
    try:
        settings = load_settings(**overrides, data_dir=str(data_dir), _env_file=None)
    finally:
        os.environ.update(inherited)
    result = run_stream(spark, settings, Layout.from_root(str(data_dir)))
    assert result.batches and all(b.status == "ok" for b in result.batches), result.batches
    return result


def tail(run: CliRun, lines: int = 25) -> str:
    """The end of a run's output, for assertion messages."""
    text = (run.stdout + "\n" + run.stderr).strip().splitlines()
    return "\n".join(text[-lines:])


def _canonical(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 9) if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def delta_snapshot(
    spark: Any, layout: Layout, *, skip: tuple[str, ...] = ("pipeline_metadata",)
) -> dict[str, list]:
    """Every Delta table's rows (minus run/batch/timing columns) as sorted, canonical JSON strings."""
    from delta.tables import DeltaTable

    out: dict[str, list] = {}
    for name in TABLE_NAMES:
        if name in skip:
            continue
        path = layout.table(name)
        if not DeltaTable.isDeltaTable(spark, path):
            out[name] = []
            continue
        df = spark.read.format("delta").load(path)
        df = df.drop(*[c for c in df.columns if c in RUN_COLUMNS])
        rows = [
            json.dumps(_canonical(r.asDict(recursive=True)), default=str, sort_keys=True)
            for r in df.collect()
        ]
        out[name] = sorted(rows)
    return out


def warehouse_snapshot(layout: Layout) -> dict[str, list]:
    """Every emulator table's rows (minus run/batch/timing columns), sorted; the ledger separately."""
    from app.config import load_settings
    from app.sinks.warehouse.connector import connector_from_settings
    from app.sinks.warehouse.sql import TARGETS

    connector = connector_from_settings(load_settings(data_dir=layout.root, warehouse="emulator"), layout)
    assert connector is not None
    loader = connector.loader()
    out: dict[str, list] = {}
    for target in TARGETS:
        if target.name == "PIPELINE_METADATA":
            continue
        names, rows = loader.query(f'SELECT * FROM "{target.name}"')
        keep = [i for i, n in enumerate(names) if n.lower() not in RUN_COLUMNS]
        out[target.name] = sorted(json.dumps(_canonical([r[i] for i in keep]), default=str) for r in rows)
    return out


def ledger_rows(layout: Layout) -> list[tuple[str, int]]:
    """``(APP_ID, BATCH_ID)`` of every LOAD_LEDGER row; none while the ledger does not exist yet."""
    from app.config import load_settings
    from app.sinks.warehouse.connector import connector_from_settings
    from app.sinks.warehouse.sql import LEDGER_TABLE

    connector = connector_from_settings(load_settings(data_dir=layout.root, warehouse="emulator"), layout)
    assert connector is not None
    loader = connector.loader()
    if LEDGER_TABLE not in loader.check()["existing"]:
        return []  # a warehouse that was down from the start was never initialised
    _, rows = loader.query(f'SELECT "APP_ID", "BATCH_ID" FROM "{LEDGER_TABLE}" ORDER BY 2')
    return [(str(a), int(b)) for a, b in rows]


def _close(a: Any, b: Any) -> bool:
    """Equal, floats within what summation order can change (values are already rounded to 1e-9)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=2e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _without_floats(value: Any) -> Any:
    if isinstance(value, float):
        return None
    if isinstance(value, dict):
        return {k: _without_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_floats(v) for v in value]
    return value


def _equal_up_to_float_noise(exp: list[str], act: list[str]) -> bool:
    """Same rows, pairing them by everything but their floats (sums and averages of doubles depend
    on the order Spark adds them in, which differs between runs, masters and partitionings)."""
    if len(exp) != len(act):
        return False

    def by_non_floats(rows: list[str]) -> list[Any]:
        parsed = [json.loads(r) for r in rows]
        return sorted(parsed, key=lambda v: json.dumps(_without_floats(v), sort_keys=True, default=str))

    return all(_close(x, y) for x, y in zip(by_non_floats(exp), by_non_floats(act), strict=True))


def diff_snapshots(expected: dict[str, list], actual: dict[str, list]) -> list[str]:
    """Human-readable differences between two snapshots (empty when equal up to float noise)."""
    problems = []
    for name in sorted(set(expected) | set(actual)):
        exp, act = expected.get(name, []), actual.get(name, [])
        if exp != act and not _equal_up_to_float_noise(exp, act):
            missing = sorted(set(exp) - set(act))[:3]
            extra = sorted(set(act) - set(exp))[:3]
            problems.append(
                f"{name}: expected {len(exp)} rows, found {len(act)}; missing {missing}; unexpected {extra}"
            )
    return problems


# --- storage faults -------------------------------------------------------------------------

# Capabilities that let root ignore file permissions; without them chmod binds root too.
_DAC_CAPS = "-dac_override,-dac_read_search"


def unprivileged_prefix() -> list[str] | None:
    """A command prefix under which ``chmod`` denials bind this process's children.

    Not root: nothing to add. Root: ``setpriv`` dropping CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
    from the bounding set, so the child (and its JVM) get EACCES like anybody else while still
    reading root's own files. None when running as root without ``setpriv``.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, f"--bounding-set={_DAC_CAPS}"] if setpriv else None


@contextlib.contextmanager
def writes_denied(path: Path | str) -> Iterator[None]:
    """Make ``path`` and every folder below it read-only (0555) until the block ends."""
    folders = [Path(d) for d, _, _ in os.walk(path)]
    modes = {d: d.stat().st_mode & 0o7777 for d in folders}
    try:
        for d in folders:
            d.chmod(0o555)
        yield
    finally:
        for d, mode in modes.items():
            d.chmod(mode)


@contextlib.contextmanager
def small_tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``64m``) mounted at ``mount_point``; skips the test where mounting is not allowed."""
    import pytest

    mount_point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root / CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True, check=False)


def fill_filesystem(folder: Path, *, leave_bytes: int = 0) -> Path:
    """Fill the file system holding ``folder`` until about ``leave_bytes`` are free; returns the filler."""
    filler = folder / "filler.bin"
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb") as fh:
        remaining = max(0, free - leave_bytes)
        try:
            while remaining > 0:
                remaining -= fh.write(chunk[: min(len(chunk), remaining)])
                fh.flush()
        except OSError:
            pass  # full before the target: even better
    return filler


def traceback_lines(text: str) -> list[str]:
    """Lines of a raw Python traceback in ``text`` (a one-line JSON log record is not one)."""
    return [
        line
        for line in text.splitlines()
        if line.startswith("Traceback (most recent call last)")
        or (line.startswith('  File "') and '", line ' in line)
    ]
