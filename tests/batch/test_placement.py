"""Two placements, one implementation: the kernels on the driver and on the executors write the same rows."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pandas as pd
import pytest

from app.batch.anomalies import ANOMALIES_STAGE
from app.batch.frames import Rows, collect, struct_type, to_spark
from app.batch.gold import GOLD_STAGE
from app.batch.handler import BatchHandler
from app.config import load_settings
from app.paths import Layout
from app.sources.bronze import read_bronze_files
from app.tables import ANOMALIES, GOLD_METRICS, GOLD_OHLC, SILVER, SILVER_DDL
from tests.helpers import T0, coin_record, minutes, write_bronze_page

COINS = ("bitcoin", "ether", "tether")


def _price(coin: int, step: int) -> float:
    if coin == 2:
        return 1.0  # tether: collapsed observations
    jump = 8.0 if step == 17 else 1.0  # an anomaly
    return (100.0 * (coin + 1) + math.sin(step + coin) * 3) * jump


def _page(layout: Layout, step: int, *, day_offset: int = 0) -> str:
    at = T0 + timedelta(days=day_offset) + minutes(10 * step)
    records = [
        coin_record(c, _price(i, step), at, total_volume=1e6 + 1e4 * ((step * 7 + i) % 11))
        for i, c in enumerate(COINS)
    ]
    return write_bronze_page(layout.bronze_root, at + timedelta(seconds=5), records)


def _run(spark, root, batches: list[list[int]], **overrides: Any) -> tuple[Layout, set[str]]:
    layout = Layout.from_root(str(root))
    settings = load_settings(
        data_dir=str(root),
        zscore_window=6,
        zscore_min_periods=3,
        working_set_lookback_hours=0,
        warehouse="none",
        **overrides,
    )
    handler = BatchHandler(
        layout=layout, settings=settings, app_id="placement", stages=[ANOMALIES_STAGE, GOLD_STAGE]
    )
    placements = set()
    for batch_id, steps in enumerate(batches):
        files = [_page(layout, s - 100 if s >= 100 else s, day_offset=1 if s >= 100 else 0) for s in steps]
        meta = handler.process(read_bronze_files(spark, files), batch_id)
        assert meta.status == "ok"
        placements.add(meta.details["silver"]["placement"])
    return layout, placements


def _rows(spark, layout: Layout, name: str) -> list[tuple]:
    df = spark.read.format("delta").load(layout.table(name))
    # source_file names the data root, which differs; collapsed_observations hold it too.
    cols = sorted(c for c in df.columns if c not in ("collapsed_observations", "source_file"))
    pdf = df.select(*cols).toPandas()
    return sorted(tuple(None if pd.isna(v) else v for v in r) for r in pdf.itertuples(index=False))


@pytest.mark.slow
def test_driver_and_executor_placements_write_identical_tables(spark, tmp_path):
    # In order, then a late observation with a new one, then the next day (the first touched day
    # reaches back before the working set's bound, so the older day is read), then late data on the
    # first day again.
    batches = [list(range(0, 20)), [5, 20], [100, 101], [3, 102]]
    driver, on_driver = _run(spark, tmp_path / "driver", batches)
    executors, on_executors = _run(spark, tmp_path / "executors", batches, kernel_driver_max_rows=0)
    assert (on_driver, on_executors) == ({"driver"}, {"executors"})
    for name in (SILVER, ANOMALIES, GOLD_OHLC, GOLD_METRICS):
        assert _rows(spark, driver, name) == _rows(spark, executors, name), name
    assert len(_rows(spark, driver, ANOMALIES)) > 0


def test_rows_round_trip_through_arrow_keeps_types_and_nulls(spark):
    schema = struct_type(SILVER_DDL)
    source_df = spark.createDataFrame(
        [("bitcoin", "usd", None, [(T0.replace(tzinfo=None), T0.replace(tzinfo=None), "f.json")], 3)],
        "coin_id string, vs_currency string, valid_to timestamp, "
        "collapsed_observations array<struct<observed_at: timestamp, extracted_at: timestamp, source_file: string>>, "
        "batch_id bigint",
    )
    pdf = collect(source_df)
    assert pdf is not None
    assert pdf["collapsed_observations"][0][0]["source_file"] == "f.json"
    full = pdf.reindex(columns=[f.name for f in schema.fields])
    back_df = to_spark(spark, full, schema)
    assert back_df.schema.simpleString() == schema.simpleString().replace("not null", "")
    row = back_df.first()
    assert row["valid_to"] is None and row["batch_id"] == 3 and row["current_price"] is None
    assert row["collapsed_observations"][0]["source_file"] == "f.json"
    rows = Rows(schema, pdf=full)
    assert rows.count() == 1 and rows.spark(spark).count() == 1


def test_collect_gives_up_above_the_limit(spark):
    df = spark.range(5)
    assert collect(df, limit=4) is None
    got = collect(df, limit=5)
    assert got is not None and list(got["id"]) == [0, 1, 2, 3, 4]
