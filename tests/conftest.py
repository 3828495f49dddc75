"""Shared fixtures: one SparkSession for the whole test session, built by the app's builder."""

from __future__ import annotations

import os
import secrets

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


def pytest_collection_modifyitems(items):
    """Run the files that hold ``slow`` or ``process`` tests first, each file's tests still together and in order.

    With parallel workers (``./dev.sh test``) the long files then start early instead of leaving one
    worker busy alone at the end; module-scoped fixtures are still set up once per file.
    """
    long_files = {
        item.path for item in items if item.get_closest_marker("slow") or item.get_closest_marker("process")
    }
    items.sort(key=lambda item: item.path not in long_files)
