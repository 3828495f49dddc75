"""SCD2 change detection: the row hash of equal values is equal (−0.0 == 0.0)."""

from __future__ import annotations

import json

from pyspark.sql import functions as F

from app.quality.derived import with_derived_columns, with_row_hash
from app.quality.parsing import parse_bronze
from tests.helpers import T0, coin_record, iso

FILES_DDL = "value string, source_file string"


def _hashes(spark, records):
    page = json.dumps({"request": {"vs_currency": "usd"}, "fetched_at": iso(T0), "data": records})
    df = parse_bronze(spark.createDataFrame([(page, "p.json")], FILES_DDL))
    rows = df.transform(with_derived_columns).transform(with_row_hash).collect()
    return [r["row_hash"] for r in sorted(rows, key=lambda r: r["record_index"])]


def test_with_row_hash_negative_zero_equals_zero(spark):
    records = [
        coin_record("a", 1.0, T0, price_change_24h=0.0, price_change_percentage_24h=0.0),
        coin_record("a", 1.0, T0, price_change_24h=-0.0, price_change_percentage_24h=-0.0),
    ]
    hashes = _hashes(spark, records)
    assert hashes[0] == hashes[1]


def test_with_row_hash_negative_zero_in_a_computed_column(spark):
    df = spark.createDataFrame([(0.0,), (-0.0,)], "x double").withColumn("y", F.col("x") * -1.0)
    hashes = {r["row_hash"] for r in df.transform(with_row_hash, tracked_cols=("x", "y")).collect()}
    assert len(hashes) == 1
