"""Workload generator: N coins x M snapshots of bronze pages, exactly as the ingester lands them.

The records come from the simulator's seeded :class:`~app.sources.market_model.MarketModel` and are
written with :func:`~app.sources.landing.write_bronze_page` (same envelope, name and partitioning as
``coinlake ingest``), so the benchmark reads what production reads.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from app.paths import Layout
from app.sources.landing import write_bronze_page
from app.sources.market_model import MarketModel

PER_PAGE = 250
START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Workload:
    """What :func:`generate` wrote."""

    coins: int
    snapshots: int
    files: int
    records: int
    pages_per_snapshot: int


def generate(
    layout: Layout,
    *,
    coins: int,
    snapshots: int,
    seed: int = 7,
    step_seconds: int = 300,
    vs_currency: str = "usd",
    start: datetime = START,
    first_cycle: int = 0,
) -> Workload:
    """Write ``snapshots`` polling cycles of ``coins`` coins into ``layout``'s bronze folder.

    Each cycle advances the model by ``step_seconds`` and lands ``ceil(coins / 250)`` pages.
    Deterministic for a given seed (file names use a run id derived from the seed and cycle).
    ``first_cycle`` continues an earlier call with the same seed: cycles ``first_cycle ..
    first_cycle + snapshots - 1`` of the same market, in time order.
    """
    model = MarketModel(n_coins=coins, seed=seed, start=start)
    for _ in range(first_cycle):
        model.advance(step_seconds)
    pages = -(-coins // PER_PAGE)
    files = records = 0
    for cycle in range(first_cycle, first_cycle + snapshots):
        model.advance(step_seconds)
        run_id = uuid.UUID(int=random.Random(seed * 1_000_003 + cycle).getrandbits(128)).hex
        fetched_at = model.now + timedelta(seconds=1)
        for page in range(1, pages + 1):
            data = model.markets_page(vs_currency, page=page, per_page=PER_PAGE)
            write_bronze_page(
                layout,
                records_body=json.dumps(data, separators=(",", ":")),
                vs_currency=vs_currency,
                page=page,
                run_id=run_id,
                fetched_at=fetched_at,
            )
            files += 1
            records += len(data)
    return Workload(coins=coins, snapshots=snapshots, files=files, records=records, pages_per_snapshot=pages)
