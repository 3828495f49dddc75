"""The gold stage: incremental batches (with late data) equal a from-scratch aggregation; replay is a no-op."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pytest

from app.batch.anomalies import anomalies_stage
from app.batch.gold import gold_stage
from tests.reference.gold_spark import aggregate_coin_ohlc, aggregate_market_metrics
from tests.sinks.silver_builders import Obs, make_ctx, silver_df, table_version, touched_rows, write_silver

T0 = datetime(2024, 3, 1)
DETECTOR = {"zscore_window": 10, "zscore_min_periods": 5, "zscore_threshold": 3.0}


def _series(coin: str, currency: str, n: int, seed: int) -> list[Obs]:
    rng = np.random.default_rng(seed)
    prices = 40.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, n)))
    prices[rng.choice(n, 5, replace=False)] *= 1.3  # some flagged returns
    out = []
    for i in range(n):
        price = None if i % 17 == 3 else float(prices[i])  # some NULL prices
        market_cap = None if price is None else price * 2.6e8
        category = None if market_cap is None else ("LARGE_CAP" if market_cap >= 1e10 else "MID_CAP")
        out.append(
            Obs(
                coin,
                T0 + timedelta(minutes=20 * i),
                price,
                float(rng.lognormal(18, 0.1)),
                market_cap,
                float(rng.normal(0, 3)),
                float(rng.uniform(1, 5)),
                category,
                float(rng.uniform(0.01, 0.2)),
                vs_currency=currency,
            )
        )
    return out


def _rows(df, drop):
    return sorted((tuple(r) for r in df.drop(*drop).collect()), key=lambda t: tuple(str(x) for x in t))


def _assert_close(actual, expected):
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        for g, w in zip(got, want, strict=True):
            if isinstance(w, float) and g is not None:
                assert math.isclose(g, w, rel_tol=1e-12, abs_tol=1e-12), (got, want)
            else:
                assert g == w, (got, want)


@pytest.mark.slow
def test_gold_stage_incremental_with_late_data_equals_from_scratch(spark, tmp_path):
    a_usd, b_usd, a_eur = (
        _series("alpha", "usd", 120, 1),
        _series("beta", "usd", 120, 2),
        _series("alpha", "eur", 120, 3),
    )
    silver_path = str(tmp_path / "tables" / "silver_crypto_clean")

    def step(batch_id, existing, new, removed=()):
        silver = [o for o in existing if o not in removed] + new
        write_silver(spark, silver_path, silver)
        ctx = make_ctx(
            spark, tmp_path, batch_id, touched_rows(existing, new), before=existing, after=silver, **DETECTOR
        )
        anomalies_stage(ctx)
        return ctx, gold_stage(ctx), silver

    _, c0, silver = step(0, [], a_usd[:50] + b_usd[:50] + a_eur[:50])
    assert c0["gold_ohlc_rows"] > 0 and c0["gold_metrics_rows"] > 0
    _, _, silver = step(1, silver, a_usd[50:90] + a_eur[50:120])
    # Late beta versions on day 1: one with the values of the next version, which silver collapses
    # into it (the later version leaves silver), and one with a price far from its neighbours.
    late_collapse = b_usd[20].moved(b_usd[19].valid_from + timedelta(minutes=1))
    late_extra = Obs(
        "beta", b_usd[30].valid_from + timedelta(minutes=7), 55.0, 1e8, 1.4e10, 0.0, 2.0, "LARGE_CAP", 0.1
    )
    _, _, silver = step(2, silver, [late_collapse, late_extra] + b_usd[50:90], removed=[b_usd[20]])
    ctx3, _, silver = step(3, silver, a_usd[90:] + b_usd[90:])

    full_silver_df = silver_df(spark, silver)
    anomalies_df = spark.read.format("delta").load(ctx3.layout.table("crypto_anomalies"))
    ohlc_path, metrics_path = ctx3.layout.table("gold_coin_ohlc"), ctx3.layout.table("gold_crypto_metrics")
    drop = ["updated_batch_id"]
    _assert_close(
        _rows(spark.read.format("delta").load(ohlc_path), drop),
        _rows(aggregate_coin_ohlc(full_silver_df, anomalies_df), drop),
    )
    _assert_close(
        _rows(spark.read.format("delta").load(metrics_path), drop),
        _rows(aggregate_market_metrics(full_silver_df), drop),
    )

    versions = (table_version(spark, ohlc_path), table_version(spark, metrics_path))
    gold_stage(ctx3)  # replay of the committed batch
    assert (table_version(spark, ohlc_path), table_version(spark, metrics_path)) == versions
