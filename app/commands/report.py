"""``coinlake report [--out FILE] [--coin ID]``: the self-contained HTML report."""

from __future__ import annotations

import argparse
from typing import Any

from app.commands.common import layout_of, settings_from_args, spark_from_settings


def register(sub: Any) -> None:
    parser = sub.add_parser("report", help="write the HTML report (charts inline, works offline)")
    parser.add_argument("--out", help="output file (default <data root>/reports/coinlake-report.html)")
    parser.add_argument("--coin", help="coin id for the candle chart (default: the largest by market cap)")
    parser.add_argument("--top", type=int, default=6, help="coins with a price chart (default 6)")
    parser.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    from app.report import build_report

    settings = settings_from_args(args)
    layout = layout_of(settings)
    spark = spark_from_settings(settings, app_name="coinlake-report")
    path = build_report(
        spark,
        layout,
        args.out,
        coin=args.coin,
        top_n=max(1, args.top),
        zscore_window=settings.zscore_window,
        zscore_min_periods=settings.zscore_min_periods,
        zscore_threshold=settings.zscore_threshold,
        dq_min_score=settings.dq_min_score,
    )
    print(f"report written: {path}")
    return 0
