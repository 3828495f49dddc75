from __future__ import annotations

import pytest

from app.quality.expectations import Rule, with_rule_checks
from app.quality.score import passes_every_rule, quality_breaches, quality_score


def test_quality_score_is_the_share_passing_every_rule_overall_and_per_rule():
    score = quality_score(200, 150, {"current_price_not_positive": 30, "name_is_null": 40, "ok_rule": 0})

    assert score.score == pytest.approx(0.75)
    assert score.by_rule == pytest.approx({"current_price_not_positive": 0.85, "name_is_null": 0.8})
    assert score.failures == {"current_price_not_positive": 30, "name_is_null": 40}  # zero dropped
    assert score.top_rules(1) == [("name_is_null", 40)]


def test_quality_score_of_a_batch_without_records_is_none():
    score = quality_score(0, 0, {})

    assert (score.score, score.by_rule, score.records, score.passed) == (None, {}, 0, 0)
    assert quality_breaches(score, min_score=1.0, max_rule_failures=0) == []


@pytest.mark.parametrize(
    ("records", "passed", "failures", "message"),
    [
        (10, 11, {}, "passed=11, records=10"),
        (-1, 0, {}, "records=-1"),
        (10, 5, {"a": 11}, "'a': 11"),
        (10, 5, {"a": -2}, "'a': -2"),
    ],
)
def test_quality_score_rejects_inconsistent_counts(records, passed, failures, message):
    with pytest.raises(ValueError, match=message):
        quality_score(records, passed, failures)


def test_quality_breaches_names_the_low_score_and_each_rule_over_the_maximum():
    score = quality_score(100, 90, {"a": 6, "b": 5, "c": 4})

    reasons = quality_breaches(score, min_score=0.95, max_rule_failures=4)

    assert reasons == [
        "score 0.9000 is below the minimum 0.95 (90 of 100 records passed every expectation)",
        "rule a failed 6 records, more than the maximum 4",
        "rule b failed 5 records, more than the maximum 4",
    ]
    # at the thresholds exactly: no alert
    assert quality_breaches(score, min_score=0.9, max_rule_failures=6) == []


def test_passes_every_rule_is_true_only_when_no_check_fails(spark):
    from pyspark.sql import functions as F

    rules = [
        Rule("price_missing", F.when(F.col("price").isNull(), F.lit("price is required")), "quarantine"),
        Rule("name_missing", F.when(F.col("name").isNull(), F.lit("name is required")), "warn"),
    ]
    source_df = spark.createDataFrame(
        [(1.0, "a"), (None, "b"), (2.0, None), (None, None)],
        "price double, name string",
    ).withColumn("parse_error", F.lit(None).cast("string"))

    actual = with_rule_checks(source_df, rules).withColumn("actual", passes_every_rule(rules))

    assert [r["actual"] for r in actual.collect()] == [True, False, False, False]
    assert spark.range(1).select(passes_every_rule([]).alias("x")).first()["x"] is True
