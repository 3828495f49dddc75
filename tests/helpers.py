"""Test helpers: bronze fixtures in the DESIGN.md format and the SCD2 invariants check."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

SCD2_BOOKKEEPING = ("batch_id", "updated_batch_id", "source_file", "extracted_at")


def iso(ts: datetime) -> str:
    """``2026-11-25T19:48:06.123Z``."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def coin_record(coin_id: str, price: float, last_updated: datetime, **overrides: Any) -> dict[str, Any]:
    """A /coins/markets record as CoinGecko sends it (ints and floats mixed, extra fields)."""
    rec: dict[str, Any] = {
        "id": coin_id,
        "symbol": coin_id[:3],
        "name": coin_id.title(),
        "image": "https://example.invalid/x.png",
        "current_price": price,
        "market_cap": int(price * 1_000_000),
        "market_cap_rank": 1,
        "fully_diluted_valuation": None,
        "total_volume": 5_000_000,
        "high_24h": price * 1.05,
        "low_24h": price * 0.95,
        "price_change_24h": 1.5,
        "price_change_percentage_24h": 0.7,
        "circulating_supply": 19_000_000.0,
        "total_supply": 21_000_000,
        "max_supply": 21_000_000,
        "ath": 70000,
        "ath_date": "2021-11-10T14:24:11.849Z",
        "atl": 67.81,
        "atl_date": "2013-07-06T00:00:00.000Z",
        "roi": None,
        "last_updated": iso(last_updated),
    }
    rec.update(overrides)
    return rec


def bronze_file_name(fetched_at: datetime, vs_currency: str, page: int, run_id: str) -> str:
    stamp = fetched_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S") + f"{fetched_at.microsecond // 1000:03d}Z"
    return f"coins_markets_{stamp}_{vs_currency}_p{page:04d}_{run_id[:8]}.json"


def write_bronze_page(
    bronze_root: str,
    fetched_at: datetime,
    records: list[dict[str, Any]],
    *,
    vs_currency: str = "usd",
    page: int = 1,
    run_id: str = "0123456789abcdef",
) -> str:
    """Write one bronze page exactly as docs/DESIGN.md section 1 describes; returns its path."""
    envelope = {
        "source": "coingecko",
        "endpoint": "/coins/markets",
        "request": {"vs_currency": vs_currency, "order": "market_cap_desc", "per_page": 250, "page": page},
        "fetched_at": iso(fetched_at),
        "http_status": 200,
        "run_id": run_id,
        "page": page,
        "data": records,
    }
    return write_raw_bronze(
        bronze_root, fetched_at, bronze_file_name(fetched_at, vs_currency, page, run_id), json.dumps(envelope)
    )


def write_raw_bronze(bronze_root: str, fetched_at: datetime, name: str, text: str) -> str:
    """Write any text as a bronze file (for the bad-file corpus), atomically like the ingester."""
    folder = os.path.join(bronze_root, f"dt={fetched_at.astimezone(UTC).date().isoformat()}")
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text + "\n")
    final = os.path.join(folder, name)
    os.rename(tmp, final)
    return final


T0 = datetime(2026, 1, 5, 12, 0, 0, 123000, tzinfo=UTC)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def assert_scd2_invariants(df: Any, keys: tuple[str, ...] = ("coin_id", "vs_currency")) -> None:
    """Assert the silver invariants on a (small) SCD2 DataFrame.

    Per key: exactly one current row; intervals ordered, contiguous and non-overlapping
    (``valid_to`` = next ``valid_from``); NULL ``valid_to`` only on the current row; no two
    consecutive versions with the same ``row_hash``; no duplicate ``valid_from``.
    """
    rows = df.select(*keys, "valid_from", "valid_to", "is_current", "row_hash").collect()
    by_key: dict[tuple, list] = defaultdict(list)
    for r in rows:
        by_key[tuple(r[k] for k in keys)].append(r)
    for key, versions in by_key.items():
        versions.sort(key=lambda r: r["valid_from"])
        current = [v for v in versions if v["is_current"]]
        assert len(current) == 1, f"{key}: expected exactly one current row, found {len(current)}"
        assert versions[-1]["is_current"], f"{key}: the current row is not the latest version"
        starts = [v["valid_from"] for v in versions]
        assert len(set(starts)) == len(starts), f"{key}: duplicate valid_from {starts}"
        for prev, nxt in zip(versions, versions[1:], strict=False):
            assert prev["valid_to"] == nxt["valid_from"], (
                f"{key}: interval of {prev['valid_from']} ends at {prev['valid_to']}, next starts {nxt['valid_from']}"
            )
            assert not prev["is_current"] and prev["valid_to"] is not None, (
                f"{key}: closed row marked current"
            )
            assert prev["row_hash"] != nxt["row_hash"], (
                f"{key}: consecutive equal versions at {nxt['valid_from']}"
            )
        assert versions[-1]["valid_to"] is None, f"{key}: current row has valid_to {versions[-1]['valid_to']}"


def silver_content(df: Any) -> Any:
    """Silver without the columns that depend on batching or on where the bronze root is.

    The collapsed observations keep their times and fetch times, without their files.
    """
    from pyspark.sql import functions as F

    out = df.drop("batch_id", "updated_batch_id", "source_file")
    if "collapsed_observations" in out.columns:
        out = out.withColumn(
            "collapsed_observations",
            F.transform(
                "collapsed_observations",
                lambda o: F.struct(
                    o["observed_at"].alias("observed_at"), o["extracted_at"].alias("extracted_at")
                ),
            ),
        )
    return out
