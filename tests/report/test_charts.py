"""The report's chart figures: few days, the volume axis' labels, the data-quality score."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from app.report.charts import (
    SCORE_COLOR,
    batch_scores,
    candle_figure,
    compact_number,
    gold_figure,
    quality_chart,
    quality_figure,
)


def _gold(days: int) -> pd.DataFrame:
    rows = [
        {
            "metric_date": date(2026, 1, 1) + timedelta(days=d),
            "market_cap_category": cat,
            "total_market_cap": 1e12 / (k + 1),
            "num_coins": 10 + k,
            "avg_price_change_24h": 0.5 - k,
        }
        for d in range(days)
        for k, cat in enumerate(("LARGE_CAP", "MID_CAP", "SMALL_CAP"))
    ]
    return pd.DataFrame(rows)


def test_gold_figure_with_one_day_draws_one_labelled_bar_slot_not_years():
    fig = gold_figure(_gold(1))
    FigureCanvasAgg(fig).draw()

    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["2026-01-01"]
        low, high = ax.get_xlim()
        assert high - low < 2  # one slot, not a date axis spanning 2025 to 2029
        assert len(ax.patches) == 3  # one bar per category
        assert not ax.lines


def test_gold_figure_with_many_days_keeps_a_date_axis_over_those_days():
    fig = gold_figure(_gold(10))
    FigureCanvasAgg(fig).draw()

    ax = fig.axes[0]
    assert len(ax.lines) == 3 and not ax.patches
    low, high = (pd.Timestamp(x, unit="D") for x in ax.get_xlim())
    assert pd.Timestamp("2025-12-31") <= low and high <= pd.Timestamp("2026-01-12")


def test_gold_figure_of_nothing_is_none():
    assert gold_figure(pd.DataFrame()) is None


def _ohlc(n: int) -> pd.DataFrame:
    start = datetime(2026, 1, 1)
    return pd.DataFrame(
        {
            "bucket_start": [start + timedelta(hours=h) for h in range(n)],
            "open": [100.0 + h for h in range(n)],
            "close": [101.0 + h for h in range(n)],
            "high": [102.0 + h for h in range(n)],
            "low": [99.0 + h for h in range(n)],
            "volume": [1.2e11 + 1e9 * h for h in range(n)],
            "n_anomalies": [0] * (n - 1) + [1],
        }
    )


def test_candle_figure_volume_axis_has_no_offset_label_over_the_price_panel():
    fig = candle_figure(_ohlc(12), "bitcoin", "1h")
    FigureCanvasAgg(fig).draw()

    price_ax, vol_ax = fig.axes
    assert vol_ax.yaxis.get_offset_text().get_text() == ""
    labels = [t.get_text() for t in vol_ax.get_yticklabels() if t.get_text()]
    assert labels and all(label.endswith("B") or label == "0" for label in labels)


@pytest.mark.parametrize(
    ("value", "label"),
    [
        (1.2e11, "120B"),
        (5e6, "5M"),
        (2.5e12, "2.5T"),
        (1500, "1.5K"),
        (0, "0"),
        (-3e9, "-3B"),
        (0.25, "0.25"),
    ],
)
def test_compact_number_labels_without_exponent(value, label):
    assert compact_number(value) == label


def _batches() -> pd.DataFrame:
    t0 = datetime(2026, 1, 1)
    return pd.DataFrame(
        {
            "batch_id": [2, 0, 1, 1, 3],
            "started_at": [t0 + timedelta(minutes=m) for m in (30, 0, 5, 10, 40)],
            "status": ["ok", "ok", "failed", "ok", "ok"],
            "dq_score": [0.5, 1.0, None, 0.9, None],  # batch 3: an older release, no score
        }
    )


def test_batch_scores_are_in_time_order_and_skip_failed_and_unscored_rows():
    assert batch_scores(_batches()).to_dict() == {0: 1.0, 1: 0.9, 2: 0.5}
    assert batch_scores(pd.DataFrame()).empty


def test_quality_figure_draws_score_line_min_line_and_quarantine_bars():
    by_rule = pd.DataFrame({"batch_id": [2, 2, 5], "rule": ["a", "b", "a"], "count": [3, 1, 2]})

    fig = quality_figure(by_rule, _batches(), min_score=0.8)

    ax, twin = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "5"]
    score_line, min_line = twin.lines
    assert score_line.get_color() == SCORE_COLOR
    assert list(score_line.get_ydata()[:3]) == [100.0, 90.0, 50.0]
    assert list(min_line.get_ydata()) == [80.0, 80.0]
    heights = sorted(p.get_height() for p in ax.patches if p.get_height())
    assert heights == [1, 2, 3]


def test_quality_chart_without_scores_or_quarantine_is_none_and_with_scores_only_is_drawn():
    none = pd.DataFrame(columns=["batch_id", "rule", "count"])
    assert quality_chart(none, pd.DataFrame(), min_score=0.9) is None
    assert quality_chart(none, _batches(), min_score=0.9)
