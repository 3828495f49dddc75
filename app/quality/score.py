"""The data-quality score of a batch and the thresholds that raise a data-quality alert.

The score is the share of a batch's records that pass every expectation, whatever the rule's
action: a ``warn`` rule lets the record through but still counts against the score. Each rule has
its own score, ``1 - failures / records``. A batch with no records has no score (``None``, NULL in
``pipeline_metadata``): there is nothing to judge, and it never raises an alert.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from app.quality.expectations import check_col

if TYPE_CHECKING:
    from pyspark.sql import Column

    from app.quality.expectations import Rule


@dataclass(frozen=True)
class QualityScore:
    """The data-quality outcome of one batch.

    Attributes:
        records: records judged (file-level rows of unreadable files count as one record each).
        passed: records that pass every expectation.
        failures: failed records per rule (rules without failures are left out).
        score: ``passed / records`` in [0, 1]; None when the batch has no records.
        by_rule: ``1 - failures / records`` per failed rule (a rule not listed scored 1.0).
    """

    records: int
    passed: int
    failures: dict[str, int] = field(default_factory=dict)
    score: float | None = None
    by_rule: dict[str, float] = field(default_factory=dict)

    def top_rules(self, n: int = 3) -> list[tuple[str, int]]:
        """The ``n`` rules with the most failures, most first (ties by name)."""
        return sorted(self.failures.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def passes_every_rule(rules: list[Rule]) -> Column:
    """True when no rule's ``dq_<rule>`` check column holds a message (the record passes them all)."""
    if not rules:
        return F.lit(True)
    return F.coalesce(*[F.col(check_col(r)) for r in rules]).isNull()


def quality_score(records: int, passed: int, failures: Mapping[str, int]) -> QualityScore:
    """Score a batch from its counts.

    Args:
        records: records in the batch (>= 0).
        passed: records that passed every expectation (0 <= passed <= records).
        failures: failed records per rule; zero counts are dropped.

    Returns:
        The score; ``score`` None and ``by_rule`` empty when ``records`` is 0.

    Raises:
        ValueError: the counts are inconsistent (negative, ``passed > records``, or a rule with more
            failures than records).
    """
    failures = {rule: int(n) for rule, n in failures.items() if n}
    if records < 0 or passed < 0 or passed > records:
        raise ValueError(f"expected 0 <= passed <= records, found passed={passed}, records={records}")
    bad = {rule: n for rule, n in failures.items() if n < 0 or n > records}
    if bad:
        raise ValueError(f"expected 0 <= failures <= records={records} per rule, found {bad}")
    if records == 0:
        return QualityScore(records=0, passed=0, failures=failures)
    return QualityScore(
        records=records,
        passed=passed,
        failures=failures,
        score=passed / records,
        by_rule={rule: 1.0 - n / records for rule, n in sorted(failures.items())},
    )


def quality_breaches(score: QualityScore, *, min_score: float, max_rule_failures: int) -> list[str]:
    """Why a batch's quality calls for an alert (empty: it does not).

    Args:
        score: the batch's score.
        min_score: alert when the score is below this share.
        max_rule_failures: alert when one rule fails more records than this.

    Returns:
        One sentence per breach, saying what was expected and what was found.
    """
    reasons = []
    if score.score is not None and score.score < min_score:
        reasons.append(
            f"score {score.score:.4f} is below the minimum {min_score:g}"
            f" ({score.passed} of {score.records} records passed every expectation)"
        )
    for rule, n in score.top_rules(len(score.failures)):
        if n > max_rule_failures:
            reasons.append(f"rule {rule} failed {n} records, more than the maximum {max_rule_failures}")
    return reasons
