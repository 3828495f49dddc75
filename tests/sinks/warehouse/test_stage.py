"""The warehouse stage: Delta tables in tmp_path -> stage -> emulator tables equal the Delta tables."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
import pytest

from app.batch.context import BatchContext
from app.config import load_settings
from app.errors import LoadTransientError
from app.paths import Layout
from app.sinks.warehouse.connector import WarehouseConnector, emulator_connector
from app.sinks.warehouse.sql import TARGETS, prepare_frame
from app.sinks.warehouse.stage import WarehouseStage, pending_path, to_pandas
from app.tables import TABLES, ensure_table

pytestmark = pytest.mark.filterwarnings("ignore:Arrow output")
APP = "coinlake-stage-test"
MIRRORED = ("silver_crypto_clean", "crypto_anomalies", "gold_crypto_metrics", "gold_coin_ohlc")


def _write(spark, layout: Layout, name: str, rows: list[dict[str, Any]]) -> None:
    """Replace a Delta table's content (the state a batch leaves behind); strings cast to the schema."""
    from pyspark.sql import functions as F

    path = layout.table(name)
    ensure_table(spark, name, path)
    schema = spark.createDataFrame([], TABLES[name].ddl).schema
    cols = sorted({k for r in rows for k in r})
    raw_df = (
        spark.createDataFrame(
            [[str(r.get(c)) if r.get(c) is not None else None for c in cols] for r in rows],
            ", ".join(f"`{c}` string" for c in cols),
        )
        if rows
        else None
    )
    select = [
        (F.col(f"`{f.name}`") if raw_df is not None and f.name in cols else F.lit(None))
        .cast(f.dataType)
        .alias(f.name)
        for f in schema.fields
    ]
    df = raw_df.select(*select) if raw_df is not None else spark.createDataFrame([], schema)
    df.write.format("delta").mode("overwrite").save(path)


def _touched(spark, keys: dict[str, str]):
    rows = [(coin, "usd", ts, ts) for coin, ts in keys.items()]
    return spark.createDataFrame(rows, "coin_id string, vs_currency string, f string, t string").selectExpr(
        "coin_id", "vs_currency", "cast(f as timestamp) as from_ts", "cast(t as timestamp) as to_ts"
    )


def _ctx(spark, tmp_path, batch_id: int, touched: dict[str, str], **settings: Any) -> BatchContext:
    layout = Layout.from_root(str(tmp_path))
    s = load_settings(data_dir=str(tmp_path), warehouse="emulator", **settings)
    return BatchContext(spark, batch_id, APP, "run-1", layout, s, _touched(spark, touched))


def _normalized(df: pd.DataFrame, target) -> list[tuple[Any, ...]]:
    out, _ = prepare_frame(df, target.columns, target.key, nullable_key=target.nullable_key)
    out = out.astype(object).where(out.notna(), None)
    return sorted((tuple(r) for r in out.itertuples(index=False)), key=repr)


def assert_warehouse_equals_delta(spark, tmp_path) -> None:
    layout = Layout.from_root(str(tmp_path))
    loader = emulator_connector(layout.warehouse_dir).loader()
    for target in TARGETS:
        if target.delta_name not in MIRRORED:
            continue
        delta = to_pandas(spark.read.format("delta").load(layout.table(target.delta_name)))
        cols, rows = loader.query(f'SELECT * FROM "{target.name}"')
        warehouse = pd.DataFrame(rows, columns=cols)
        assert _normalized(warehouse, target) == _normalized(delta, target), target.name


def _silver(coin: str, valid_from: str, price: float, valid_to: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "coin_id": coin,
        "vs_currency": "usd",
        "symbol": coin[:3],
        "name": coin.title(),
        "current_price": price,
        "market_cap": price * 1e9,
        "market_cap_rank": 1,
        "valid_from": valid_from,
        "valid_to": valid_to,
        "is_current": valid_to is None,
        "batch_id": 0,
        "ath_date": "2021-11-10 14:24:11.849",
        **extra,
    }


def _state_batch0(spark, layout):
    _write(
        spark,
        layout,
        "silver_crypto_clean",
        [
            _silver("bitcoin", "2024-01-01 00:00:00", 100.0, "2024-01-01 01:00:00"),
            _silver("bitcoin", "2024-01-01 01:00:00", 110.0, "2024-01-01 02:00:00"),
            _silver("bitcoin", "2024-01-01 02:00:00", 120.0, None, max_supply=None),
            _silver("ethereum", "2024-01-01 00:00:00", 10.0, None),
        ],
    )
    _write(
        spark,
        layout,
        "crypto_anomalies",
        [
            {
                "coin_id": "bitcoin",
                "vs_currency": "usd",
                "observed_at": "2024-01-01 02:00:00",
                "metric": "price",
                "z_score": 3.5,
            }
        ],
    )
    _write(
        spark,
        layout,
        "gold_crypto_metrics",
        [
            {
                "metric_date": "2024-01-01",
                "vs_currency": "usd",
                "market_cap_category": "LARGE_CAP",
                "num_coins": 2,
                "avg_price": 65.0,
            }
        ],
    )
    _write(
        spark,
        layout,
        "gold_coin_ohlc",
        [
            {
                "coin_id": "bitcoin",
                "vs_currency": "usd",
                "interval": "1d",
                "bucket_start": "2024-01-01 00:00:00",
                "open": 100.0,
                "close": 120.0,
            },
            {
                "coin_id": "bitcoin",
                "vs_currency": "usd",
                "interval": "1h",
                "bucket_start": "2024-01-01 02:00:00",
                "return": 0.1,
            },
        ],
    )


def _state_batch1(spark, layout):
    """Late data for bitcoin at 01:30 changed 01:00's valid_to, 02:00 collapsed away, anomaly gone."""
    _write(
        spark,
        layout,
        "silver_crypto_clean",
        [
            _silver("bitcoin", "2024-01-01 00:00:00", 100.0, "2024-01-01 01:00:00"),
            _silver("bitcoin", "2024-01-01 01:00:00", 110.0, "2024-01-01 01:30:00"),
            _silver("bitcoin", "2024-01-01 01:30:00", 130.0, None, batch_id=1),
            _silver("ethereum", "2024-01-01 00:00:00", 10.0, None),
        ],
    )
    _write(spark, layout, "crypto_anomalies", [])
    _write(
        spark,
        layout,
        "gold_crypto_metrics",
        [
            {
                "metric_date": "2024-01-01",
                "vs_currency": "usd",
                "market_cap_category": "LARGE_CAP",
                "num_coins": 2,
                "avg_price": 70.0,
            }
        ],
    )
    _write(
        spark,
        layout,
        "gold_coin_ohlc",
        [
            {
                "coin_id": "bitcoin",
                "vs_currency": "usd",
                "interval": "1d",
                "bucket_start": "2024-01-01 00:00:00",
                "open": 100.0,
                "close": 130.0,
            }
        ],
    )


def test_stage_mirrors_delta_including_late_changes(spark, tmp_path):
    layout = Layout.from_root(str(tmp_path))
    stage = WarehouseStage()
    _state_batch0(spark, layout)
    counts = stage(
        _ctx(spark, tmp_path, 0, {"bitcoin": "2024-01-01 00:00:00", "ethereum": "2024-01-01 00:00:00"})
    )
    assert counts["warehouse_rows"] == 8 and counts["warehouse_skipped"] == 0
    assert_warehouse_equals_delta(spark, tmp_path)

    _state_batch1(spark, layout)
    counts = stage(_ctx(spark, tmp_path, 1, {"bitcoin": "2024-01-01 01:00:00"}))
    assert counts["warehouse_deleted"] == 3  # silver 02:00, the anomaly, the 1h candle
    assert_warehouse_equals_delta(spark, tmp_path)

    again = stage(_ctx(spark, tmp_path, 1, {"bitcoin": "2024-01-01 01:00:00"}))
    assert again["warehouse_skipped"] == 1
    assert_warehouse_equals_delta(spark, tmp_path)


def _broken(settings, layout) -> WarehouseConnector:
    from snowflake.connector.errors import OperationalError

    def connect():
        raise OperationalError("warehouse unreachable")

    return WarehouseConnector("emulator", connect, lambda *a, **k: None, "emulator")


def test_continue_records_pending_and_next_batch_catches_up(spark, tmp_path):
    layout = Layout.from_root(str(tmp_path))
    _state_batch0(spark, layout)
    WarehouseStage()(
        _ctx(spark, tmp_path, 0, {"bitcoin": "2024-01-01 00:00:00", "ethereum": "2024-01-01 00:00:00"})
    )

    _state_batch1(spark, layout)
    failed = WarehouseStage(_broken, attempts=2, wait_seconds=0)(
        _ctx(spark, tmp_path, 1, {"bitcoin": "2024-01-01 01:00:00"}, warehouse_on_error="continue")
    )
    assert failed == {"warehouse_failed": 1, "warehouse_pending_batches": 1}
    assert os.path.exists(pending_path(layout, APP))

    # batch 2 touches only ethereum; bitcoin's changes of batch 1 are caught up
    counts = WarehouseStage()(
        _ctx(spark, tmp_path, 2, {"ethereum": "2024-01-01 00:00:00"}, warehouse_on_error="continue")
    )
    assert counts["warehouse_caught_up_batches"] == 1
    assert not os.path.exists(pending_path(layout, APP))
    assert_warehouse_equals_delta(spark, tmp_path)
    loader = emulator_connector(layout.warehouse_dir).loader()
    _, ledger = loader.query('SELECT "BATCH_ID", "CATCHES_UP" FROM "LOAD_LEDGER" ORDER BY 1')
    assert ledger == [(0, None), (2, "1")]


def test_fail_mode_raises(spark, tmp_path):
    _state_batch0(spark, Layout.from_root(str(tmp_path)))
    with pytest.raises(LoadTransientError, match="unreachable"):
        WarehouseStage(_broken, attempts=1)(_ctx(spark, tmp_path, 0, {"bitcoin": "2024-01-01 00:00:00"}))


def test_warehouse_none_is_a_no_op(spark, tmp_path):
    ctx = _ctx(spark, tmp_path, 0, {"bitcoin": "2024-01-01 00:00:00"})
    ctx = BatchContext(
        ctx.spark,
        0,
        APP,
        "r",
        ctx.layout,
        load_settings(data_dir=str(tmp_path), warehouse="none"),
        ctx.touched_df,
    )
    assert WarehouseStage()(ctx) == {}
    assert not os.path.exists(os.path.join(str(tmp_path), "warehouse"))
