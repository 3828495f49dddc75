from __future__ import annotations

import json

import pytest
from pyspark.sql import functions as F

from app.errors import DataQualityError
from app.quality.expectations import (
    Rule,
    counts_by_action,
    default_rules,
    is_not_null,
    raise_on_fail,
    rule_count_exprs,
    split_valid_invalid,
)
from app.quality.parsing import parse_bronze
from tests.helpers import T0, coin_record, iso, minutes

FILES_DDL = "value string, source_file string"


def _parsed(spark, records):
    page = json.dumps({"request": {"vs_currency": "usd"}, "fetched_at": iso(T0), "data": records})
    return parse_bronze(spark.createDataFrame([(page, "p.json"), ("<html>", "bad.json")], FILES_DDL))


def test_split_valid_invalid_quarantines_each_bad_record_with_reasons(spark):
    records = [
        coin_record("good", 10.0, T0),
        coin_record("neg", -1.0, T0, market_cap=1, high_24h=1.0, low_24h=0.5),
        coin_record("nullid", 1.0, T0, id=None),
        coin_record("future", 1.0, T0 + minutes(60 * 25)),
        coin_record("nearfuture", 1.0, T0 + minutes(60 * 23)),
        coin_record("lowhigh", 1.0, T0, low_24h=2.0, high_24h=1.0),
        coin_record("negcap", 1.0, T0, market_cap=-5, total_volume=-1),
        coin_record("types", 1.0, T0, current_price="abc"),
        coin_record("noname", 1.0, T0, name=None),
    ]
    rules = default_rules()
    valid_df, quarantine_df = split_valid_invalid(_parsed(spark, records), rules)

    assert sorted(r["coin_id"] for r in valid_df.collect()) == ["good", "nearfuture", "noname"]
    bad = {(r["coin_id"] or r["source_file"]): r for r in quarantine_df.collect()}
    assert bad["neg"]["failed_rules"] == ["current_price_not_positive"]
    assert "found -1.0" in bad["neg"]["errors"][0]
    assert bad["p.json"]["failed_rules"] == ["coin_id_is_null"]
    assert bad["future"]["failed_rules"] == ["last_updated_in_future"]
    assert bad["lowhigh"]["failed_rules"] == ["low_24h_above_high_24h"]
    assert bad["negcap"]["failed_rules"] == ["market_cap_negative", "total_volume_negative"]
    assert bad["types"]["failed_rules"] == ["wrong_type", "current_price_not_positive"]
    assert bad["bad.json"]["failed_rules"] == ["unparseable"]
    assert bad["bad.json"]["raw_record"] == "<html>"


def test_rule_counts_split_by_action(spark):
    records = [
        coin_record("a", 1.0, T0, name=None),
        coin_record("b", -1.0, T0, market_cap=1, high_24h=1.0, low_24h=0.5),
    ]
    rules = default_rules()
    valid_df, _ = split_valid_invalid(_parsed(spark, records), rules)
    df = _parsed(spark, records).transform(
        lambda d: split_valid_invalid(d, rules)[0].unionByName(split_valid_invalid(d, rules)[1])
    )
    row = df.agg(*rule_count_exprs(rules)).first().asDict()

    by_action = counts_by_action(row, rules)

    assert by_action["quarantine"] == {"current_price_not_positive": 1, "unparseable": 1}
    assert by_action["warn"] == {"name_is_null": 1}
    assert [r["coin_id"] for r in valid_df.collect()] == ["a"]


def test_fail_rule_raises_data_quality_error(spark):
    rules = [Rule("coin_id_required", is_not_null("coin_id"), "fail")]
    df = _parsed(spark, [coin_record("a", 1.0, T0, id=None)])
    row = split_valid_invalid(df, rules)[1].agg(*rule_count_exprs(rules)).first().asDict()

    with pytest.raises(DataQualityError, match="coin_id_required=1"):
        raise_on_fail(counts_by_action(row, rules)["fail"])


def test_rule_rejects_unknown_action():
    with pytest.raises(ValueError, match="action must be one of"):
        Rule("x", F.lit(None), "drop")  # type: ignore[arg-type]
