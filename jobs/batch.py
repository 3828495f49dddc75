"""Databricks / spark-submit entry point: a scheduled available-now run, then the report.

    python jobs/batch.py [--data-dir ROOT] [--ingest-first] [--report | --no-report]

Processes every bronze file not yet processed (same checkpoint as the continuous stream, so run
one or the other), records progress into ``pipeline_metadata`` and rewrites the HTML report.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the batch job."""
    parser = argparse.ArgumentParser(
        prog="jobs/batch.py",
        description="Run the streaming query once with trigger available-now, then write the report.",
    )
    parser.add_argument("--data-dir", help="data root (overrides COINLAKE_DATA_DIR)")
    parser.add_argument("--ingest-first", action="store_true", help="run one ingest cycle before the batch")
    parser.add_argument(
        "--report",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write the HTML report afterwards",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, load settings, run available-now (and optionally ingest before, report after)."""
    args = build_parser().parse_args(argv)
    from app.config import load_settings
    from app.logs import configure_logging
    from app.paths import Layout
    from app.report import build_report
    from app.spark import build_spark
    from app.stream import run_stream

    settings = load_settings(**({"data_dir": args.data_dir} if args.data_dir else {}))
    configure_logging(settings.log_format, settings.log_level)
    layout = Layout.from_root(settings.data_dir)
    if args.ingest_first:
        from app.sources.ingester import run_cycle

        run_cycle(settings, layout)
    spark = build_spark(
        app_name="coinlake-batch",
        master=settings.spark_master,
        shuffle_partitions=settings.shuffle_partitions,
        ui=settings.spark_ui,
        driver_memory=settings.driver_memory,
        ivy_dir=settings.ivy_dir,
    )
    run_id = uuid.uuid4().hex
    run_stream(spark, settings, layout, trigger="available-now", run_id=run_id)
    if args.report:
        build_report(
            spark,
            layout,
            zscore_window=settings.zscore_window,
            zscore_min_periods=settings.zscore_min_periods,
            zscore_threshold=settings.zscore_threshold,
            dq_min_score=settings.dq_min_score,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
