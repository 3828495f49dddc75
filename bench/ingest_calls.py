"""Ingest cost per cycle: API calls for a large universe, and 429s caused by our own client.

Runs one real ingest cycle (:func:`app.sources.ingester.run_cycle`) against the simulator on
loopback. The simulator enforces the same per-minute limit the client is configured with, so any
429 it answers is one our rate limiter let through.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from app.config import load_settings
from app.paths import Layout
from app.sources.ingester import run_cycle
from app.sources.simulator import Faults, start_simulator


@dataclass(frozen=True)
class IngestResult:
    coins: int
    vs_currencies: int
    calls: int
    calls_per_vs_currency: float
    records: int
    self_caused_429: int
    rate_limit_per_minute: int
    seconds: float


def measure_ingest(
    root: str, *, coins: int = 10_000, rate_limit_per_minute: int = 500, seed: int = 3
) -> IngestResult:
    faults = Faults(rate_limit_per_minute=rate_limit_per_minute, seed=seed)
    with start_simulator(coins=coins, seed=seed, faults=faults) as sim:
        settings = load_settings(
            api_base_url=sim.base_url,
            top_n=coins,
            per_page=250,
            vs_currencies="usd",
            rate_limit_per_minute=rate_limit_per_minute,
        )
        start = time.monotonic()
        result = run_cycle(settings, Layout.from_root(root))
        seconds = time.monotonic() - start
        stats = sim.stats
    if result.status != "ok":
        raise RuntimeError(f"ingest bench: cycle ended {result.status}")
    return IngestResult(
        coins=coins,
        vs_currencies=1,
        calls=stats.calls,
        calls_per_vs_currency=stats.by_path.get("/api/v3/coins/markets", 0) / 1,
        records=result.records,
        self_caused_429=stats.rate_limited,
        rate_limit_per_minute=rate_limit_per_minute,
        seconds=seconds,
    )
