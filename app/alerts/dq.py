"""Data-quality alerts: a batch whose score or one rule's failures cross a threshold raises one alert.

The channel is the anomaly alerts' (:mod:`app.batch.anomalies`): a structured log event
``dq.alert`` and, when ``COINLAKE_ALERT_WEBHOOK_URL`` is set, a JSON POST through the alert outbox
(:mod:`app.alerts.outbox`), at least once. The alert of a batch has the id ``dq|<app_id>|<batch_id>``:
it is stored as pending before it is logged and posted, and marked delivered after, so a crash in
between repeats it when the batch is re-run, and a re-run of a batch whose alert was delivered (or
logged, without a webhook) raises nothing. The score of a batch depends only on its bronze files,
so the alert need not wait for the batch's commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from app.alerts.outbox import AlertOutbox, alert_key
from app.alerts.webhook import deliver_each
from app.logs import log_event
from app.quality.expectations import CHECK_PREFIX
from app.quality.score import quality_breaches

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from app.config import Settings
    from app.quality.score import QualityScore

logger = logging.getLogger(__name__)

TOP_RULES = 3
EXAMPLES_PER_RULE = 3
Send = Callable[[Sequence[Mapping[str, Any]]], Sequence[bool]]


def dq_alert_id(app_id: str, batch_id: int) -> str:
    """The dedupe id of a batch's data-quality alert."""
    return f"dq|{app_id}|{batch_id}"


def dq_alert_payload(
    score: QualityScore,
    reasons: list[str],
    examples: Mapping[str, list[dict[str, Any]]],
    *,
    app_id: str,
    batch_id: int,
    run_id: str,
    min_score: float,
    max_rule_failures: int,
) -> dict[str, Any]:
    """The alert of one batch (JSON-able).

    Args:
        score: the batch's score.
        reasons: :func:`app.quality.score.quality_breaches` of it (non-empty).
        examples: per top rule, a few failing records (``source_file``, ``record_index``,
            ``coin_id``, ``vs_currency``).
        app_id: the stream's idempotence id.
        batch_id: the micro-batch id.
        run_id: id of this process run.
        min_score: the ``COINLAKE_DQ_MIN_SCORE`` in force.
        max_rule_failures: the ``COINLAKE_DQ_MAX_RULE_FAILURES`` in force.
    """
    return {
        "alert_id": dq_alert_id(app_id, batch_id),
        "event": "data_quality",
        "app_id": app_id,
        "batch_id": batch_id,
        "run_id": run_id,
        "score": score.score,
        "records": score.records,
        "passed": score.passed,
        "min_score": min_score,
        "max_rule_failures": max_rule_failures,
        "reasons": list(reasons),
        "top_rules": [
            {
                "rule": rule,
                "failures": n,
                "score": score.by_rule.get(rule),
                "examples": list(examples.get(rule, [])),
            }
            for rule, n in score.top_rules(TOP_RULES)
        ],
    }


def example_records(
    checked_df: DataFrame, rules: list[str], *, per_rule: int = EXAMPLES_PER_RULE
) -> dict[str, list[dict[str, Any]]]:
    """A few records failing each of ``rules``, in file and record order (one Spark job).

    Args:
        checked_df: the batch with its ``dq_<rule>`` check columns.
        rules: rule names.
        per_rule: examples per rule.

    Returns:
        ``{rule: [{"source_file", "record_index", "coin_id", "vs_currency"}, ...]}``.
    """
    if not rules:
        return {}
    fields = ("source_file", "record_index", "coin_id", "vs_currency")
    ids = F.struct(*[F.col(c) for c in fields])
    row = checked_df.agg(
        *[
            F.slice(
                F.sort_array(F.collect_list(F.when(F.col(CHECK_PREFIX + rule).isNotNull(), ids))),
                1,
                per_rule,
            ).alias(rule)
            for rule in rules
        ]
    ).first()
    if row is None:
        return {}
    return {rule: [r.asDict() for r in (row[rule] or [])] for rule in rules}


def raise_dq_alert(outbox: AlertOutbox, payload: Mapping[str, Any], *, send: Send | None) -> dict[str, int]:
    """Store, log and deliver a batch's alert, unless it was delivered before (a re-run batch).

    Args:
        outbox: the data root's alert outbox.
        payload: :func:`dq_alert_payload`.
        send: posts payloads to the webhook and says which were delivered; None without a
            webhook, where the log event is the whole channel and the alert is marked delivered.

    Returns:
        ``dq_alerts_raised`` (0 or 1), ``dq_alerts_sent`` and ``dq_alerts_pending`` (every pending
        alert of the outbox, as the anomaly stage counts them).
    """
    key = alert_key(payload)
    if key in outbox.delivered():
        log_event(logger, "dq.alert.already_raised", batch_id=payload.get("batch_id"), alert_id=key)
        return {"dq_alerts_raised": 0, "dq_alerts_sent": 0, "dq_alerts_pending": len(outbox.pending())}
    outbox.add([payload])
    log_event(
        logger,
        "dq.alert",
        level=logging.WARNING,
        **{k: v for k, v in payload.items() if k != "event"},
    )
    if send is None:
        outbox.mark_delivered([key])
        return {"dq_alerts_raised": 1, "dq_alerts_sent": 0, "dq_alerts_pending": len(outbox.pending())}
    sent, left = outbox.deliver(send)
    return {"dq_alerts_raised": 1, "dq_alerts_sent": sent, "dq_alerts_pending": left}


def alert_on_quality(
    checked_df: DataFrame,
    score: QualityScore,
    *,
    settings: Settings,
    alerts_folder: str,
    app_id: str,
    batch_id: int,
    run_id: str,
) -> dict[str, Any] | None:
    """Raise the batch's data-quality alert if its score or a rule crosses a threshold.

    Args:
        checked_df: the batch with its ``dq_<rule>`` check columns (for the example records).
        score: the batch's score.
        settings: ``dq_min_score``, ``dq_max_rule_failures`` and ``alert_webhook_url``.
        alerts_folder: the outbox folder (``<data root>/alerts``).
        app_id: the stream's idempotence id.
        batch_id: the micro-batch id.
        run_id: id of this process run.

    Returns:
        None when no threshold is crossed, else the reasons and the counts of
        :func:`raise_dq_alert` (for ``pipeline_metadata.details``).
    """
    min_score, max_failures = settings.dq_min_score, settings.dq_max_rule_failures
    reasons = quality_breaches(score, min_score=min_score, max_rule_failures=max_failures)
    if not reasons:
        return None
    examples = example_records(checked_df, [rule for rule, _ in score.top_rules(TOP_RULES)])
    payload = dq_alert_payload(
        score,
        reasons,
        examples,
        app_id=app_id,
        batch_id=batch_id,
        run_id=run_id,
        min_score=min_score,
        max_rule_failures=max_failures,
    )
    url = settings.alert_webhook_url
    send: Send | None = None
    if url is not None:
        send = lambda payloads: deliver_each(url.get_secret_value(), payloads)  # noqa: E731
    counts = raise_dq_alert(AlertOutbox(alerts_folder), payload, send=send)
    return {"reasons": reasons, **counts}
