"""A small synthetic lakehouse in the shapes of app/tables.py, for the status and report tests."""

from __future__ import annotations

import json
import math
import random
from datetime import datetime, timedelta

from app.paths import Layout
from app.tables import TABLES

START = datetime(2026, 1, 1, 10, 0)
STEP = timedelta(minutes=15)
N_OBS = 80
COINS = {  # coin_id: (symbol, start price, supply)
    "bitcoin": ("btc", 60000.0, 19.5e6),
    "ethereum": ("eth", 3000.0, 120e6),
    "solana": ("sol", 150.0, 4.4e8),
    "tinycoin": ("tiny", 0.5, 8e8),
}
PRICE_SPIKE_AT = 50
VOLUME_SPIKE_AT = 60


def _category(market_cap: float) -> str:
    return "LARGE_CAP" if market_cap >= 1e10 else ("MID_CAP" if market_cap >= 1e9 else "SMALL_CAP")


def _silver_rows() -> list[dict]:
    rng = random.Random(7)
    rows = []
    for coin_id, (symbol, price, supply) in COINS.items():
        versions = []
        for i in range(N_OBS):
            price *= math.exp(rng.gauss(0, 0.004))
            shown = price * (1.12 if (coin_id == "bitcoin" and i == PRICE_SPIKE_AT) else 1.0)
            volume = price * supply * 0.03 * (1 + rng.gauss(0, 0.05))
            if coin_id == "bitcoin" and i == VOLUME_SPIKE_AT:
                volume *= 4
            ts = START + i * STEP
            versions.append(
                {
                    "coin_id": coin_id,
                    "vs_currency": "usd",
                    "symbol": symbol,
                    "name": coin_id.title(),
                    "current_price": shown,
                    "market_cap": shown * supply,
                    "total_volume": volume,
                    "last_updated": ts,
                    "extracted_at": ts,
                    "market_cap_category": _category(shown * supply),
                    "row_hash": f"{coin_id}-{i}",
                    "valid_from": ts,
                    "batch_id": i // 10,
                }
            )
        for cur, nxt in zip(versions, versions[1:] + [None], strict=True):
            cur["valid_to"] = nxt["valid_from"] if nxt else None
            cur["is_current"] = nxt is None
        rows += versions
    return rows


def _ohlc_rows(silver: list[dict]) -> list[dict]:
    rows = []
    btc = [r for r in silver if r["coin_id"] == "bitcoin"]
    buckets: dict[datetime, list[dict]] = {}
    for r in btc:
        buckets.setdefault(r["valid_from"].replace(minute=0), []).append(r)
    for start, obs in sorted(buckets.items()):
        prices = [o["current_price"] for o in obs]
        rows.append(
            {
                "coin_id": "bitcoin",
                "vs_currency": "usd",
                "interval": "1h",
                "bucket_start": start,
                "open": prices[0],
                "high": max(prices),
                "low": min(prices),
                "close": prices[-1],
                "volume": obs[-1]["total_volume"],
                "n_obs": len(obs),
                "n_anomalies": sum(1 for o in obs if o["valid_from"] == START + PRICE_SPIKE_AT * STEP),
            }
        )
    return rows


def _gold_rows() -> list[dict]:
    rows = []
    for day in range(7):
        for k, cat in enumerate(("LARGE_CAP", "MID_CAP", "SMALL_CAP")):
            rows.append(
                {
                    "metric_date": (START + timedelta(days=day)).date(),
                    "vs_currency": "usd",
                    "market_cap_category": cat,
                    "num_coins": 10 * (k + 1) + day,
                    "total_market_cap": 1e12 / (20**k) * (1 + 0.02 * day),
                    "total_volume_24h": 5e10 / (20**k),
                    "avg_price": 100.0 / (k + 1),
                    "avg_price_change_24h": (-1) ** day * (k + 1) * 0.8,
                    "metric_timestamp": START + timedelta(days=day, hours=23),
                }
            )
    return rows


def _metadata_rows() -> list[dict]:
    rows = []
    for b in range(8):
        at = START + timedelta(minutes=5 * b)
        rows.append(
            {
                "run_id": "run-1",
                "kind": "batch",
                "batch_id": b,
                "started_at": at,
                "finished_at": at + timedelta(seconds=4 + b),
                "status": "ok",
                "files": 10,
                "records_read": 400 + 10 * b,
                "quarantined": b % 3,
                # every 4th batch is poor (a warn rule fails 60 records): the score chart dips
                "dq_passed": 400 + 10 * b - b % 3 - (60 if b % 4 == 3 else 0),
                "dq_score": (400 + 10 * b - b % 3 - (60 if b % 4 == 3 else 0)) / (400 + 10 * b),
                "quarantined_by_rule": {"price_not_negative": b % 3, "coin_id_present": 1} if b % 2 else {},
                "durations_ms": {"parse": 500 + 10 * b, "silver": 2000, "gold": 900, "warehouse": 700},
            }
        )
        rows.append(
            {
                "run_id": "run-1",
                "kind": "progress",
                "batch_id": b,
                "started_at": at,
                "finished_at": at + timedelta(seconds=5),
                "status": "ok",
                "records_read": 10,
                "durations_ms": {"triggerExecution": 5000 + 100 * b},
                "details": json.dumps({"processed_rows_per_second": 2 + b}),
            }
        )
    rows.append(
        {
            "run_id": "run-0",
            "kind": "batch",
            "batch_id": 3,
            "started_at": START - timedelta(hours=1),
            "status": "failed",
            "error_message": "warehouse unreachable",
        }
    )
    return rows


def build_sample_lake(spark, layout: Layout) -> None:
    """Write every table of ``layout`` with a few hundred rows of synthetic, consistent data."""
    silver = _silver_rows()
    t_spike = START + PRICE_SPIKE_AT * STEP
    v_spike = START + VOLUME_SPIKE_AT * STEP
    anomalies = [
        {
            "coin_id": "bitcoin",
            "vs_currency": "usd",
            "observed_at": t_spike,
            "metric": "price_return",
            "z_score": 9.1,
        },
        {
            "coin_id": "bitcoin",
            "vs_currency": "usd",
            "observed_at": v_spike,
            "metric": "volume",
            "z_score": 6.2,
        },
    ]
    quarantine = [
        {
            "batch_id": b,
            "source_file": f"bronze/f{b}.json",
            "record_index": b,
            "coin_id": f"bad{b}",
            "vs_currency": "usd",
            "raw_record": json.dumps({"id": f"bad{b}", "current_price": -1}),
            "failed_rules": ["price_not_negative"],
            "errors": ["current_price is negative"],
            "extracted_at": START + timedelta(minutes=5 * b),
        }
        for b in range(1, 8, 2)
    ]
    data = {
        "silver_crypto_clean": silver,
        "crypto_anomalies": anomalies,
        "gold_crypto_metrics": _gold_rows(),
        "gold_coin_ohlc": _ohlc_rows(silver),
        "bronze_quarantine": quarantine,
        "pipeline_metadata": _metadata_rows(),
    }
    for name, rows in data.items():
        (
            spark.createDataFrame(rows, TABLES[name].ddl)
            .coalesce(1)
            .write.format("delta")
            .mode("overwrite")
            .save(layout.table(name))
        )
