"""The batch's working set: the after-image, the literal bound, and reading short histories further back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chispa import assert_df_equality

from app.batch.anomalies import ANOMALIES_STAGE
from app.batch.gold import GOLD_STAGE
from app.batch.handler import BatchHandler
from app.config import load_settings
from app.paths import Layout
from app.sinks.delta.working_set import working_set_bound, working_set_filter
from app.sources.bronze import read_bronze_files
from tests.helpers import coin_record, write_bronze_page
from tests.reference.working_set_spark import with_after_image

PLAN_DDL = "coin_id string, vs_currency string, valid_from timestamp, current_price double, _action string"
DAY1 = datetime(2024, 3, 1, tzinfo=UTC)


def test_with_after_image_applies_inserts_updates_and_deletes_and_keeps_the_rest(spark):
    t = [datetime(2024, 3, 1, h) for h in range(4)]
    before_df = spark.createDataFrame(
        [("a", "usd", t[0], 1.0), ("a", "usd", t[1], 2.0), ("a", "usd", t[2], 3.0), ("b", "usd", t[0], None)],
        "coin_id string, vs_currency string, valid_from timestamp, current_price double",
    )
    plan_df = spark.createDataFrame(
        [
            ("a", "usd", t[1], 2.0, "none"),  # unchanged: stays as it was
            ("a", "usd", t[2], 30.0, "update"),  # replaced
            ("a", "usd", t[0], 1.0, "delete"),  # removed
            ("a", "usd", t[3], 4.0, "insert"),  # new
        ],
        PLAN_DDL,
    )
    expected_df = spark.createDataFrame(
        [
            ("a", "usd", t[1], 2.0),
            ("a", "usd", t[2], 30.0),
            ("a", "usd", t[3], 4.0),
            ("b", "usd", t[0], None),
        ],
        before_df.schema,
    )
    assert_df_equality(with_after_image(before_df, plan_df), expected_df, ignore_row_order=True)


def test_working_set_bound_is_the_earliest_day_minus_the_lookback():
    assert working_set_bound("2024-03-02 17:45:00.123456", 6) == "2024-03-01 18:00:00.000000"
    assert working_set_bound("2024-03-02 00:00:00.000000", 0) == "2024-03-02 00:00:00.000000"
    assert working_set_filter(["usd", "eur"], "2024-03-01 18:00:00.000000") == (
        "vs_currency IN ('eur', 'usd') AND (valid_to IS NULL OR valid_to >= TIMESTAMP '2024-03-01 18:00:00.000000')"
    )


def _pages(bronze_root: str) -> list[list[str]]:
    """Batch 0: one coin every 30 min from noon on day 0 to noon on day 1; batch 1: four versions on day 2."""
    first, second = [], []
    start = DAY1 - timedelta(hours=12)
    for i in range(48):
        ts = start + timedelta(minutes=30 * i)
        price = 100.0 * (1.002**i) * (1.08 if i % 17 == 5 else 1.0)
        first.append(write_bronze_page(bronze_root, ts, [coin_record("alpha", price, ts)]))
    for i in range(4):
        ts = DAY1 + timedelta(hours=25, minutes=20 * i)
        price = 110.0 * (1.3 if i == 2 else 1.0) + i
        second.append(write_bronze_page(bronze_root, ts, [coin_record("alpha", price, ts)]))
    return [first, second]


def _tables(spark, layout: Layout) -> dict[str, list]:
    out = {}
    for name, drop in (
        ("silver_crypto_clean", ["source_file"]),
        ("crypto_anomalies", []),
        ("gold_coin_ohlc", []),
        ("gold_crypto_metrics", []),
    ):
        df = spark.read.format("delta").load(layout.table(name)).drop(*drop)
        out[name] = sorted(tuple(str(v) for v in r) for r in df.collect())
    return out


def test_a_short_working_set_is_read_further_back_and_gives_the_same_tables(spark, tmp_path):
    detector = {"zscore_window": 4, "zscore_min_periods": 3, "zscore_threshold": 1.5, "warehouse": "none"}
    results = {}
    for lookback in (0, 72):
        root = tmp_path / f"lookback{lookback}"
        layout = Layout.from_root(str(root))
        batches = _pages(layout.bronze_root)
        settings = load_settings(data_dir=str(root), working_set_lookback_hours=lookback, **detector)
        handler = BatchHandler(
            layout=layout, settings=settings, app_id="ws-test", stages=[ANOMALIES_STAGE, GOLD_STAGE]
        )
        metas = [handler.process(read_bronze_files(spark, files), b) for b, files in enumerate(batches)]
        results[lookback] = (metas, _tables(spark, layout))
    short, wide = results[0], results[72]
    # Batch 1 (day 2) with no lookback: the coin's version before the batch began on day 1, so
    # day 1 is touched and read too, and the W+1 versions before day 1 further back; with 72 h
    # all of them are in the first read.
    short_silver, wide_silver = short[0][1].details["silver"], wide[0][1].details["silver"]
    assert (short_silver["working_set_from"], short_silver["short_history_keys"]) == (
        "2024-03-01 00:00:00.000000",
        1,
    )
    assert wide_silver["short_history_keys"] == 0
    assert short[1] == wide[1]
    assert short[1]["crypto_anomalies"], "the data should flag at least one anomaly"
