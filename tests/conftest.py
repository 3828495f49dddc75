"""Shared fixtures: one SparkSession for the whole test session, built by the app's builder."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

# Tests never read a developer's .env or settings file, and never call the real CoinGecko.
os.environ.pop("COINLAKE_SETTINGS_FILE", None)

SEED_ENV = "COINLAKE_TEST_SEED"


def pytest_configure(config):
    """Draw the run's seed once, before xdist starts its workers (they inherit the environment)."""
    os.environ.setdefault(SEED_ENV, str(secrets.randbelow(2**31)))


def pytest_report_header(config):
    seed = os.environ[SEED_ENV]
    return f"coinlake: {SEED_ENV}={seed} (set it to replay this run's randomised tests)"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Repeat the seed at the end (the header is hidden under ``-q``), where a failure is read."""
    terminalreporter.write_line(f"coinlake: {SEED_ENV}={os.environ[SEED_ENV]}")


@pytest.fixture(scope="session")
def test_seed() -> int:
    """The run's seed for randomised tests (the random kill -9 schedule): new every run unless
    ``COINLAKE_TEST_SEED`` is set, printed in pytest's header; put it in assertion messages."""
    return int(os.environ[SEED_ENV])


@pytest.fixture(scope="session")
def spark():
    """local[2], 2 shuffle partitions, UI off, Delta configured (app/spark.py)."""
    from app.spark import build_spark

    session = build_spark(
        app_name="coinlake-tests",
        master="local[2]",
        shuffle_partitions=2,
        ui=False,
        extra_conf={"spark.driver.memory": "3g"},
    )
    yield session
    session.stop()


@pytest.fixture
def simulator():
    """A CoinGecko-compatible simulator on an ephemeral loopback port (50 coins, seed 42), stopped after.

    Tests change its faults with ``simulator.set_faults(Faults(...))`` or start their own with
    ``app.sources.simulator.start_simulator`` for a different universe or clock.
    """
    from app.sources.simulator import start_simulator

    handle = start_simulator(port=0, coins=50, seed=42)
    yield handle
    handle.stop()


# The longest files, longest first (docs/TESTING.md, "Durations"): xdist hands files out in this
# order, so the two workers start on the longest and the short files fill in at the end.
LONGEST_FILES = (
    "reliability/test_random_kills.py",
    "reliability/test_secrets.py",
    "reliability/test_storage_faults.py",
    "reliability/test_crash_points.py",
    "test_pipeline_e2e.py",
    "reliability/test_bad_input.py",
    "test_cluster.py",
    "reliability/test_faults.py",
    "sinks/delta/test_scd2.py",
    "test_cli_warehouse_reads.py",
    "test_bench_smoke.py",
    "reliability/test_hostile_pages.py",
)


def pytest_collection_modifyitems(items):
    """Run the longest files first, each file's tests still together and in order.

    First the files of :data:`LONGEST_FILES` in that order, then the other files that hold ``slow``
    or ``process`` tests, then the rest. With parallel workers (``./dev.sh test``) the long files
    then start early instead of leaving one worker busy alone at the end; module-scoped fixtures are
    still set up once per file.
    """
    tests_root = Path(__file__).parent
    rank = {tests_root / name: n for n, name in enumerate(LONGEST_FILES)}
    long_files = {
        item.path for item in items if item.get_closest_marker("slow") or item.get_closest_marker("process")
    }
    items.sort(key=lambda item: rank.get(item.path, len(rank) + (item.path not in long_files)))
